"""Nordland: the synthetic season folders read back with PIL, and the loader's table, skips and errors."""
import csv
import math
import shutil

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.io
from PIL import Image

from conftest import REFERENCE_DIR
from schemas.frame_table import FRAME_TABLE_SCHEMA
from seqvpr.datasets.frames import write_table
from seqvpr.datasets.nordland import discover_partitions, normalise_partition, track_headings
from seqvpr.errors import DataError
from seqvpr.synthetic import generate
from seqvpr.synthetic.nordland import real_track

FRAMES = 7  # the real test track repeats a GPS fix at its 5th/6th frames (19163, 19164)
TRAIN_FRAMES = 4 * FRAMES  # the training stretch is rendered TRAIN_STRETCH_RATIO times longer
PER_SEASON = TRAIN_FRAMES + 2 * FRAMES  # training, then the test and val stretches (frame-number order)
SEASONS = ("spring", "summer", "fall", "winter")
CLEAN_NAMES = (REFERENCE_DIR / "imageNamesFiles" / "nordland_clean_imageNames.txt").read_text().split()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("nordland")
    raw = base / "data" / "raw" / "nordland"
    summary = generate("nordland", raw, seed=1, truth_root=base / "truth", frames=FRAMES, width=64, height=48)
    return base, raw, summary


@pytest.fixture(scope="module")
def fall(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("fall")
    rows = normalise_partition(world[1], "fall", out / "frames" / "nordland" / "fall", out, size=32).table.to_pylist()
    return out, [r for r in rows if 19159 <= r["frame_index"] < 20000]  # the test stretch


def _copy_world(raw, tmp_path):
    copy = tmp_path / "raw"
    shutil.copytree(raw, copy)
    return copy


def _haversine_m(lat1, lon1, lat2, lon2):
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371008.8 * math.asin(math.sqrt(a))


@pytest.mark.parametrize("stretch, reference", [("seqnet_train", "nordland_train_d-40_d2-10.db"),
                                                ("seqnet_val", "nordland_val_d-1_d2-1.db"),
                                                ("seqnet_test", "nordland_test_d-1_d2-1.db")])
def test_shipped_track_is_the_reference_struct_files_track(stretch, reference):
    db = scipy.io.loadmat(REFERENCE_DIR / reference)["dbStruct"][0, 0]
    names = [str(n[0]) for n in db["dbImageFns"][:, 0]]
    frames, latlon = real_track()[stretch]
    assert [f"images-{f:05d}.png" for f in frames] == names[: len(frames)]
    np.testing.assert_array_equal(latlon.T, db["gpsDb"][:, : len(frames)])


def test_seasons_have_identical_frame_numbers_and_no_gps_file(world):
    _, raw, summary = world
    assert sorted(p.name for p in raw.iterdir()) == sorted(SEASONS)
    names = {season: sorted(p.name for p in (raw / season).iterdir()) for season in SEASONS}
    assert len({tuple(v) for v in names.values()}) == 1
    assert names["summer"][:TRAIN_FRAMES] == [f"images-{f:05d}.png" for f in range(202, 202 + TRAIN_FRAMES)]
    assert names["summer"][TRAIN_FRAMES:TRAIN_FRAMES + FRAMES] == [f"images-{f}.png" for f in range(19159, 19166)]
    assert summary["stretches"]["seqnet_train"] == [202, 201 + TRAIN_FRAMES] and summary["frames_per_season"] == PER_SEASON
    assert summary["stretches"]["seqnet_test"] == [19159, 19165]
    assert discover_partitions(raw) == list(SEASONS)
    pixels = []
    for season in SEASONS:
        with Image.open(raw / season / "images-19161.png") as img:
            assert img.size == (64, 48) and img.mode == "RGB"
            pixels.append(np.asarray(img, dtype=np.float32))
    assert all(np.abs(a - b).mean() > 5 for a, b in zip(pixels, pixels[1:]))  # seasons look different


def test_truth_follows_the_track_through_the_gps_dropout(world):
    base, _, _ = world
    with open(base / "truth" / "camera_poses.csv", newline="") as fh:
        truth = [r for r in csv.DictReader(fh) if r["season"] == "winter" and 19159 <= int(r["frame"]) < 20000]
    xy = np.array([[float(r["easting"]), float(r["northing"])] for r in truth])
    steps = np.hypot(*np.diff(xy, axis=0).T)
    assert steps.min() > 15  # the camera keeps moving through the dropout (about 25 m per frame)
    heading = np.array([float(r["heading_deg"]) for r in truth])
    assert np.all((heading > 330) & (heading < 360))  # north-north-west at the start of the test track


def test_place_index_is_the_clean_list_index_and_positions_are_seqnets(fall):
    out, rows = fall
    assert [r["frame_index"] for r in rows] == list(range(19159, 19166))
    assert [r["place_index"] for r in rows] == [CLEAN_NAMES.index(f"images-{n}.png") for n in range(19159, 19166)]
    assert rows[0]["place_index"] == 15100  # seqNet's test split starts here
    first = rows[0]
    assert (first["lat"], first["lon"]) == (65.71706, 13.21312)  # gpsDb[:, 0] of nordland_test_d-1_d2-1.db
    # UTM 33W of (65.71706 N, 13.21312 E), worked out by hand with the Krueger series (WGS84, 3 terms)
    assert first["easting"] == pytest.approx(418010.934, abs=0.01)
    assert first["northing"] == pytest.approx(7289538.842, abs=0.01)
    assert (first["utm_zone"], first["utm_band"]) == (33, "W")
    last = rows[-1]
    grid = math.hypot(last["easting"] - first["easting"], last["northing"] - first["northing"])
    # a sphere's meridian is 0.3 % short at 65.7 N (the track runs north); UTM's scale here is 0.99968
    assert grid == pytest.approx(_haversine_m(first["lat"], first["lon"], last["lat"], last["lon"]), rel=4e-3)
    assert first["timestamp_us"] == 19159 * 1_000_000
    assert first["condition"] == first["traversal"] == "fall" and first["location"] == "nordland"
    assert first["frame_id"] == "fall_images-19159" and first["source_file"] == "fall/images-19159.png"
    assert first["image_path"] == "frames/nordland/fall/fall_images-19159.tif"
    with Image.open(out / first["image_path"]) as img:
        assert img.size == (32, 32)


def test_heading_skips_repeated_gps_fixes(fall):
    _, rows = fall

    def bearing(a, b):
        return math.degrees(math.atan2(b["easting"] - a["easting"], b["northing"] - a["northing"])) % 360

    headings = [r["heading_deg"] for r in rows]
    assert headings[0] == pytest.approx(bearing(rows[0], rows[1]))  # first located frame of its stretch
    assert headings[2] == pytest.approx(bearing(rows[1], rows[3]))
    # rows 4 and 5 share a fix: both look from row 3 to row 6
    assert headings[4] == headings[5] == pytest.approx(bearing(rows[3], rows[6]))
    assert track_headings(np.array([[5.0, 5.0], [5.0, 5.0]])).tolist() == [0.0, 0.0]


def test_table_round_trips_through_parquet_and_reruns_identically(world, fall, tmp_path):
    _, rows = fall
    again = normalise_partition(world[1], "fall", tmp_path / "frames", tmp_path, size=32).table
    assert again.schema == FRAME_TABLE_SCHEMA
    write_table(again, tmp_path / "fall.parquet")
    assert pq.read_table(tmp_path / "fall.parquet").to_pylist() == again.to_pylist()
    assert [r["easting"] for r in again.to_pylist()][TRAIN_FRAMES:TRAIN_FRAMES + FRAMES] == [r["easting"] for r in rows]


def test_unlisted_frames_are_counted_and_unlocated_ones_get_nan(world, tmp_path):
    raw = _copy_world(world[1], tmp_path)
    image = raw / "spring" / "images-19161.png"
    shutil.copy(image, raw / "spring" / "images-01260.png")  # in the clean list's first gap (01259 -> 01810)
    shutil.copy(image, raw / "spring" / "images-19051.png")  # clean index 15000: seqNet gives no position
    result = normalise_partition(raw, "spring", tmp_path / "out", tmp_path, size=16)
    assert result.dropped == {"not_in_clean_list": 1}
    rows = {r["frame_index"]: r for r in result.table.to_pylist()}
    assert len(rows) == PER_SEASON + 1
    assert rows[19161]["place_index"] == 15102
    unlocated = rows[19051]
    assert unlocated["place_index"] == 15000 and unlocated["utm_band"] == ""
    assert all(math.isnan(unlocated[k]) for k in ("lat", "lon", "easting", "northing", "heading_deg"))


def test_generator_is_deterministic(world, tmp_path):
    base, raw, _ = world
    generate("nordland", tmp_path / "raw", seed=1, truth_root=tmp_path / "truth", frames=FRAMES, width=64, height=48)
    files = sorted(p.relative_to(raw) for p in raw.rglob("*") if p.is_file())
    assert len(files) == 4 * PER_SEASON
    assert sorted(p.relative_to(tmp_path / "raw") for p in (tmp_path / "raw").rglob("*") if p.is_file()) == files
    assert all((tmp_path / "raw" / f).read_bytes() == (raw / f).read_bytes() for f in files)
    assert (tmp_path / "truth" / "camera_poses.csv").read_bytes() == (base / "truth" / "camera_poses.csv").read_bytes()


def test_summer_and_winter_only_gives_empty_seasons_that_say_where_to_get_them(tmp_path):
    raw = tmp_path / "raw"
    generate("nordland", raw, seed=2, truth_root=tmp_path / "truth", frames=2, width=32, height=24,
             seasons="summer,winter")
    assert discover_partitions(raw) == ["summer", "winter"]
    result = normalise_partition(raw, "spring", tmp_path / "out", tmp_path, size=16)
    assert result.table.num_rows == 0 and result.table.schema == FRAME_TABLE_SCHEMA
    assert result.notes == ["Nordland season 'spring' is not in the raw data; get it from not on the Adelaide "
                            "share: extract it from NRK's spring video or another four-season release, as "
                            "<root>/spring/images-NNNNN.png"]
    assert normalise_partition(raw, "winter", tmp_path / "out", tmp_path, size=16).table.num_rows == 4 * 2 + 2 * 2  # training stretch 4 x 2 frames, val and test 2 each


def test_corrupt_image_is_named(world, tmp_path):
    raw = _copy_world(world[1], tmp_path)
    bad = raw / "spring" / "images-19161.png"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(DataError, match=rf"{bad}: cannot decode image"):
        normalise_partition(raw, "spring", tmp_path / "out", tmp_path)


def test_zero_byte_image_is_named(world, tmp_path):
    raw = _copy_world(world[1], tmp_path)
    empty = raw / "summer" / "images-19162.png"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=rf"{empty}: empty image file"):
        normalise_partition(raw, "summer", tmp_path / "out", tmp_path)


def test_duplicate_frame_numbers_are_named(world, tmp_path):
    raw = _copy_world(world[1], tmp_path)
    shutil.copy(raw / "fall" / "images-19160.png", raw / "fall" / "images-019160.png")
    with pytest.raises(DataError, match=r"images-19160.png: duplicate frame number 19160 \(also images-019160.png\)"):
        normalise_partition(raw, "fall", tmp_path / "out", tmp_path)


def test_empty_season_folder_is_an_error(world, tmp_path):
    raw = _copy_world(world[1], tmp_path)
    for p in (raw / "winter").iterdir():
        p.unlink()
    cv2.imwrite(str(raw / "winter" / "notes.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match=r"winter: season folder has no images-<frame>.png frames"):
        normalise_partition(raw, "winter", tmp_path / "out", tmp_path)
    assert discover_partitions(raw) == ["spring", "summer", "fall"]
    with pytest.raises(ValueError, match="unknown Nordland season 'autumn'"):
        normalise_partition(raw, "autumn", tmp_path / "out", tmp_path)


def test_generator_rejects_impossible_world(tmp_path):
    with pytest.raises(ValueError, match=r"frames must be in 1\.\.200"):
        generate("nordland", tmp_path / "raw", frames=0)
    with pytest.raises(ValueError, match=r"seasons must name some of spring, summer, fall, winter, got 'autumn'"):
        generate("nordland", tmp_path / "raw", frames=1, seasons="autumn")
    with pytest.raises(ValueError, match="unknown dataset 'kitti'"):
        generate("kitti", tmp_path / "raw")


def test_partitioned_release_of_olid_et_al_is_refused_with_a_reason(tmp_path):
    raw = tmp_path / "raw"
    section = raw / "test" / "spring_images_test" / "section1"
    section.mkdir(parents=True)
    cv2.imwrite(str(section / "0.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match=r"spring_images_test: the partitioned Nordland of Olid et al\. numbers frames"):
        normalise_partition(raw, "spring", tmp_path / "out", tmp_path)


def test_adelaide_share_archives_extract_to_season_folders_that_load(world, tmp_path):
    """summer.tar.gz holds summer/images-*.png, winter.tar.gz bare images-*.png (gmberton's
    download_nordland.py unpacks it into winter/); acquire puts both into season folders."""
    import tarfile

    from seqvpr.acquire import extract_archives

    raw = world[1]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with tarfile.open(downloads / "summer.tar.gz", "w:gz") as tar:
        tar.add(raw / "summer", "summer")
    with tarfile.open(downloads / "winter.tar.gz", "w:gz") as tar:
        for image in sorted((raw / "winter").iterdir()):
            tar.add(image, image.name)
    dataset = tmp_path / "nordland"
    extract_archives(sorted(downloads.iterdir()), dataset, "nordland")
    assert discover_partitions(dataset) == ["summer", "winter"]
    winter = normalise_partition(dataset, "winter", tmp_path / "out", tmp_path, size=16)
    assert winter.table.num_rows == PER_SEASON and winter.table.column("source_file")[0].as_py() == "winter/images-00202.png"
    assert normalise_partition(dataset, "fall", tmp_path / "out", tmp_path, size=16).notes[0].startswith(
        "Nordland season 'fall' is not in the raw data")

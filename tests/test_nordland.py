"""Nordland: the synthetic season folders read back with PIL, and the loader's table and errors."""
import numpy as np
import pytest
import utm
from PIL import Image

from seqvpr.datasets.catalog import NORDLAND_SEASONS
from seqvpr.datasets.nordland import normalise_partition
from seqvpr.errors import DataError
from seqvpr.synthetic import generate


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("nordland")
    raw = base / "data" / "raw" / "nordland"
    summary = generate("nordland", raw, seed=1, truth_root=base / "truth", frames=6, width=64, height=48)
    return base, raw, summary


def test_seasons_have_identical_frame_numbers(world):
    _, raw, summary = world
    names = {season: sorted(p.name for p in (raw / season).iterdir()) for season in NORDLAND_SEASONS}
    assert len({tuple(v) for v in names.values()}) == 1
    assert names["summer"][0] == f"images-{summary['first_frame']:05d}.png" == "images-19159.png"
    with Image.open(raw / "winter" / names["winter"][0]) as img:
        assert img.size == (64, 48) and img.mode == "RGB"


def test_normalised_table_matches_hand_computed_utm(world, tmp_path):
    base, raw, _ = world
    result = normalise_partition(raw, "fall", tmp_path / "frames", tmp_path, size=32)
    rows = result.table.to_pylist()
    assert [r["place_index"] for r in rows] == [r["frame_index"] for r in rows]
    first = rows[0]
    easting, northing, zone, band = utm.from_latlon(65.71706, 13.21312)  # first row of the real track
    assert (first["lat"], first["lon"]) == (65.71706, 13.21312)
    assert first["easting"] == pytest.approx(easting, abs=1e-6) and first["northing"] == pytest.approx(northing, abs=1e-6)
    assert (first["utm_zone"], first["utm_band"]) == (zone, band) == (33, "W")
    # the track runs roughly north-north-west at the start: bearing from frame 0 to frame 1
    second = rows[1]
    expected = np.degrees(np.arctan2(second["easting"] - easting, second["northing"] - northing)) % 360
    assert first["heading_deg"] == pytest.approx(expected)
    assert first["timestamp_us"] == 19159 * 40_000
    assert first["condition"] == "fall" and first["frame_id"] == "fall_19159"
    with Image.open(tmp_path / first["image_path"]) as img:
        assert img.size == (32, 32)


def _copy_world(raw, tmp_path):
    import shutil

    copy = tmp_path / "raw"
    shutil.copytree(raw, copy)
    return copy


def test_corrupt_image_is_named(world, tmp_path):
    raw = _copy_world(world[1], tmp_path)
    bad = sorted((raw / "spring").iterdir())[2]
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(DataError, match=rf"{bad.name}: cannot decode image"):
        normalise_partition(raw, "spring", tmp_path / "out", tmp_path)


def test_frames_without_gps_are_an_error(world, tmp_path):
    raw = _copy_world(world[1], tmp_path)
    gps = raw / "gps" / "summer.csv"
    gps.write_text("".join(gps.read_text().splitlines(keepends=True)[:-2]))
    with pytest.raises(DataError, match=r"summer.csv: no position for 2 frame\(s\)"):
        normalise_partition(raw, "summer", tmp_path / "out", tmp_path)


def test_empty_season_is_an_error(world, tmp_path):
    raw = _copy_world(world[1], tmp_path)
    for p in (raw / "winter").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=r"winter: season folder has no images"):
        normalise_partition(raw, "winter", tmp_path / "out", tmp_path)


def test_generator_rejects_impossible_world(tmp_path):
    with pytest.raises(ValueError, match="frames must be at least 2"):
        generate("nordland", tmp_path / "raw", frames=0)
    with pytest.raises(ValueError, match="unknown dataset 'kitti'"):
        generate("kitti", tmp_path / "raw")

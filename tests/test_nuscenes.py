"""Synthetic nuScenes in the real format (checked with nuscenes-devkit) and the devkit-based loader."""
import csv
import hashlib
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import utm
from nuscenes.nuscenes import NuScenes

from seqvpr.datasets import nuscenes as loader
from seqvpr.errors import DataError
from seqvpr.synthetic import nuscenes as synthetic

MAPS = ("singapore-onenorth", "singapore-queenstown", "singapore-hollandvillage")
# Map origins (south-western corners) as listed in the NuScenesMap docstring of the map expansion.
ORIGINS = {
    "singapore-onenorth": (1.2882100868743724, 103.78475189208984),
    "singapore-hollandvillage": (1.2993652317780957, 103.78217697143555),
    "singapore-queenstown": (1.2782562240223188, 103.76741409301758),
}
SAMPLES = 8
TABLES = {"attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
          "sample_annotation", "sample_data", "scene", "sensor", "visibility"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("nuscenes")
    summary = synthetic.generate(base / "raw", seed=3, truth_root=base / "truth", scenes_per_location=3,
                                 samples_per_scene=SAMPLES, sweeps_per_sample=1, width=320, height=180)
    return base, summary


@pytest.fixture(scope="module")
def normalised(world):
    base, _ = world
    tables = {m: loader.normalise_partition(base / "raw", m, base / "data" / "frames" / "nuscenes" / m, base / "data", size=64)
              for m in loader.discover_partitions(base / "raw")}
    with open(base / "truth" / "camera_poses.csv") as fh:
        truth = list(csv.DictReader(fh))
    return base, tables, truth


def small_world(tmp_path: Path) -> Path:
    synthetic.generate(tmp_path / "raw", seed=1, truth_root=tmp_path / "truth", scenes_per_location=1,
                       samples_per_scene=3, sweeps_per_sample=1, width=96, height=64)
    return tmp_path / "raw"


def test_devkit_loads_generated_world(world):
    base, summary = world
    root = base / "raw"
    assert {p.stem for p in (root / "v1.0-mini").glob("*.json")} == TABLES
    nusc = NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False)
    assert len(nusc.scene) == 9 and len(nusc.sample) == 9 * SAMPLES
    assert summary["frames_per_traversal"] == {s["name"]: SAMPLES for s in nusc.scene}
    assert {log["location"] for log in nusc.log} == set(MAPS)
    assert sorted(t for m in nusc.map for t in m["log_tokens"]) == sorted(log["token"] for log in nusc.log)
    for scene in nusc.scene:
        chain, token, prev = [], scene["first_sample_token"], ""
        while token:
            sample = nusc.get("sample", token)
            assert sample["prev"] == prev and sample["scene_token"] == scene["token"]
            chain.append(sample)
            prev, token = token, sample["next"]
        assert len(chain) == scene["nbr_samples"] == SAMPLES
        assert chain[-1]["token"] == scene["last_sample_token"]
        steps = np.diff([s["timestamp"] for s in chain])
        assert np.all(np.abs(steps - 500_000) < 10_000)  # 2 Hz in microseconds
        # CAM_FRONT sample_data chain: key frame, sweep, key frame, ... each sweep before its sample.
        frames, token = [], nusc.get("sample_data", chain[0]["data"]["CAM_FRONT"])["token"]
        while token:
            frames.append(nusc.get("sample_data", token))
            token = frames[-1]["next"]
        assert [f["is_key_frame"] for f in frames] == [True] + [False, True] * (SAMPLES - 1)
        for f in frames:
            assert f["filename"].startswith("samples/CAM_FRONT/" if f["is_key_frame"] else "sweeps/CAM_FRONT/")
            owner = nusc.get("sample", f["sample_token"])
            assert f["timestamp"] >= owner["timestamp"] if f["is_key_frame"] else f["timestamp"] < owner["timestamp"]
        image = cv2.imread(nusc.get_sample_data_path(frames[-1]["token"]))
        assert image.shape == (180, 320, 3) and image.std() > 5
    for record in nusc.map:  # every ego pose lies on the drivable surface of its map's mask
        logs = set(record["log_tokens"])
        xy = np.array([nusc.get("ego_pose", sd["ego_pose_token"])["translation"][:2] for sd in nusc.sample_data
                       if nusc.get("scene", nusc.get("sample", sd["sample_token"])["scene_token"])["log_token"] in logs])
        assert len(xy) == 3 * (2 * SAMPLES - 1) and record["mask"].is_on_mask(xy[:, 0], xy[:, 1]).all()


def test_night_scenes_say_night(world):
    base, summary = world
    scenes = {s["name"]: s for s in json.loads((base / "raw" / "v1.0-mini" / "scene.json").read_text())}
    with open(base / "truth" / "camera_poses.csv") as fh:
        conditions = {row["scene"]: row["condition"] for row in csv.DictReader(fh)}
    assert set(conditions) == set(scenes)
    for name, condition in conditions.items():
        assert scenes[name]["description"].startswith("Night, ") == (condition == "night")
    # Per map: day and night along the same stretch, then a day scene the other way or across.
    assert summary["frames_per_condition"] == {"day": 6 * SAMPLES, "night": 3 * SAMPLES}


def test_frames_match_truth(normalised):
    base, tables, truth = normalised
    assert list(tables) == list(MAPS)
    rows = [r for m in MAPS for r in tables[m].table.to_pylist()]
    assert len(rows) == len(truth) == 9 * SAMPLES
    assert all(not tables[m].dropped for m in MAPS)
    assert sum(r["condition"] == "night" for r in rows) == 3 * SAMPLES
    by_key = {(t["scene"], int(t["timestamp_us"])): t for t in truth}
    for row in rows:
        t = by_key[(row["traversal"], row["timestamp_us"])]
        assert row["location"] == t["location"] and row["condition"] == t["condition"]
        assert row["frame_id"] == f"{t['scene']}_{t['sample_token'][:12]}" and re.fullmatch(r"[A-Za-z0-9_-]+", row["frame_id"])
        east0, north0, zone, band = utm.from_latlon(*ORIGINS[row["location"]])
        assert (row["utm_zone"], row["utm_band"]) == (zone, band) == (48, "N")
        assert abs(row["easting"] - (east0 + float(t["camera_x"]))) < 0.1
        assert abs(row["northing"] - (north0 + float(t["camera_y"]))) < 0.1
        assert abs((row["heading_deg"] - float(t["heading_deg"]) + 180) % 360 - 180) < 1.0
        east, north, _, _ = utm.from_latlon(row["lat"], row["lon"], force_zone_number=48)
        assert abs(east - row["easting"]) < 0.01 and abs(north - row["northing"]) < 0.01
        assert row["source_file"].startswith("samples/CAM_FRONT/") and row["place_index"] == -1
        image = cv2.imread(str(base / "data" / row["image_path"]))
        assert image.shape == (64, 64, 3)
    assert len({r["frame_id"] for r in rows}) == len(rows)
    for scene in {r["traversal"] for r in rows}:
        assert sorted(r["frame_index"] for r in rows if r["traversal"] == scene) == list(range(SAMPLES))


def test_hand_computed_poses(normalised):
    """scene-0001 drives east on the left (north) lane of onenorth's loop, whose south edge is at
    y = 160 m: camera y = 160 + 1.8 lane + 0.0159 mounting offset, heading 90 - 0.55 camera yaw.
    scene-0003 drives the same stretch westwards: heading 270 - 0.55, lane 1.8 m south."""
    _, tables, _ = normalised
    rows = tables["singapore-onenorth"].table.to_pylist()
    _, north0, _, _ = utm.from_latlon(*ORIGINS["singapore-onenorth"])
    east = [r for r in rows if r["traversal"] == "scene-0001"]
    west = [r for r in rows if r["traversal"] == "scene-0003"]
    assert all(abs(r["heading_deg"] - 89.45) < 0.01 for r in east)
    assert all(abs(r["northing"] - north0 - 161.8159456) < 0.01 for r in east)
    assert all(abs(r["heading_deg"] - 269.45) < 0.01 for r in west)
    assert all(abs(r["northing"] - north0 - (160 - 1.8 - 0.0159456)) < 0.01 for r in west)
    assert np.all(np.diff([r["easting"] for r in east]) > 0) and np.all(np.diff([r["easting"] for r in west]) < 0)


def test_revisits_with_same_and_other_headings(normalised):
    """Every night frame has a day frame within 10 m and 30 degrees; places are also revisited in
    the opposite direction (within 10 m, headings 180 degrees apart), so the heading rule matters."""
    _, tables, _ = normalised
    rows = [r for m in MAPS for r in tables[m].table.to_pylist()]
    xy = np.array([[r["easting"], r["northing"]] for r in rows])
    heading = np.array([r["heading_deg"] for r in rows])
    night = np.array([r["condition"] == "night" for r in rows])
    dist = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    turn = np.abs((heading[:, None] - heading[None] + 180) % 360 - 180)
    same_place = dist < 10
    day = ~night
    assert (same_place & (turn < 30) & day[None])[night].any(axis=1).all()
    assert (same_place & (turn > 150) & day[None])[night].any(axis=1).sum() >= 2 * SAMPLES  # two maps
    assert (same_place & (turn > 60) & (turn < 120) & day[None])[night].any()  # the cross street meets the loop


def test_discover_and_version_detection(tmp_path):
    raw = small_world(tmp_path)
    (raw / "v1.0-mini").rename(raw / "v1.0-trainval")
    assert loader.find_version(raw) == "v1.0-trainval"
    assert loader.discover_partitions(raw) == list(MAPS)
    result = loader.normalise_partition(raw, MAPS[0], tmp_path / "frames", tmp_path, size=32)
    assert result.table.num_rows == 3
    with pytest.raises(DataError, match="no nuScenes metadata"):
        loader.find_version(tmp_path / "frames")
    with pytest.raises(ValueError, match="unknown nuScenes map"):
        loader.normalise_partition(raw, "boston-seaport", tmp_path / "frames", tmp_path)


@pytest.mark.parametrize("field", ["ego_pose_token", "calibrated_sensor_token"])
def test_dangling_token_names_the_table(tmp_path, field):
    raw = small_world(tmp_path)
    path = raw / "v1.0-mini" / "sample_data.json"
    records = json.loads(path.read_text())
    broken = next(r for r in records if r["is_key_frame"])
    broken[field] = "f" * 32
    path.write_text(json.dumps(records))
    with pytest.raises(DataError) as err:
        loader.normalise_partition(raw, MAPS[0], tmp_path / "frames", tmp_path)
    assert err.value.path == str(path.resolve())
    assert broken["token"] in err.value.problem and "f" * 32 in err.value.problem and field in err.value.problem


def test_corrupt_table_names_the_file(tmp_path):
    raw = small_world(tmp_path)
    path = raw / "v1.0-mini" / "ego_pose.json"
    path.write_text(path.read_text()[:-40])
    with pytest.raises(DataError) as err:
        loader.normalise_partition(raw, MAPS[0], tmp_path / "frames", tmp_path)
    assert err.value.path == str(path.resolve()) and "not valid JSON" in err.value.problem


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_bad_jpeg_names_the_file(tmp_path, damage):
    raw = small_world(tmp_path)
    records = json.loads((raw / "v1.0-mini" / "sample_data.json").read_text())
    image = raw / next(r for r in records if r["is_key_frame"])["filename"]
    if damage == "truncate":
        image.write_bytes(image.read_bytes()[:300])
    else:
        image.unlink()
    with pytest.raises(DataError) as err:
        for location in MAPS:
            loader.normalise_partition(raw, location, tmp_path / "frames", tmp_path)
    assert Path(err.value.path).resolve() == image.resolve()
    assert ("corrupt" if damage == "truncate" else "missing") in err.value.problem


def test_generate_validates_and_is_deterministic(tmp_path):
    for bad in ({"scenes_per_location": 0}, {"samples_per_scene": 0}, {"width": 0}):
        with pytest.raises(ValueError):
            synthetic.generate(tmp_path / "bad", truth_root=tmp_path / "bad_truth", **bad)
    digests = []
    for run in ("a", "b"):
        small_world(tmp_path / run)
        files = sorted(p for p in (tmp_path / run).rglob("*") if p.is_file())
        digests.append({p.relative_to(tmp_path / run).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files})
    assert digests[0] == digests[1] and len(digests[0]) == 13 + 3 + 3 * 5 + 1


def test_trainval_meta_with_one_blob_archive_loads_the_scenes_it_has(tmp_path):
    """The trainval distribution: v1.0-trainval_meta.tgz (maps/, v1.0-trainval/) and blob archives of
    whole scenes (samples/, sweeps/); here the world's scenes split over two blobs, only one downloaded."""
    import tarfile

    from seqvpr.acquire import extract_archives

    raw = small_world(tmp_path)
    (raw / "v1.0-mini").rename(raw / "v1.0-trainval")
    scenes = sorted(json.loads((raw / "v1.0-trainval" / "scene.json").read_text()), key=lambda s: s["name"])
    samples = {s["token"]: s["scene_token"] for s in json.loads((raw / "v1.0-trainval" / "sample.json").read_text())}
    in_blob_one = {s["token"] for s in scenes[:2]}
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with tarfile.open(downloads / "v1.0-trainval_meta.tgz", "w:gz") as tar:
        tar.add(raw / "maps", "maps")
        tar.add(raw / "v1.0-trainval", "v1.0-trainval")
    with tarfile.open(downloads / "v1.0-trainval01_blobs.tgz", "w:gz") as tar:
        for record in json.loads((raw / "v1.0-trainval" / "sample_data.json").read_text()):
            if samples[record["sample_token"]] in in_blob_one:
                tar.add(raw / record["filename"], record["filename"])
    dataroot = tmp_path / "dataroot"
    extract_archives(sorted(downloads.iterdir()), dataroot, "nuscenes")
    assert loader.find_version(dataroot) == "v1.0-trainval"
    locations = {m: loader.normalise_partition(dataroot, m, tmp_path / "out" / m, tmp_path, size=16)
                 for m in loader.discover_partitions(dataroot)}
    loaded = {t for r in locations.values() for t in r.table.column("traversal").to_pylist()}
    assert loaded == {s["name"] for s in scenes[:2]}
    skipped = sum(r.dropped.get("scenes_not_downloaded", 0) for r in locations.values())
    assert skipped == len(scenes) - 2
    assert sum(r.dropped.get("key_frames_not_downloaded", 0) for r in locations.values()) == 3 * (len(scenes) - 2)

"""nuScenes frames: CAM_FRONT key frames of the scenes recorded in one Singapore map, read with nuscenes-devkit.

Poses. The camera pose is the key frame's ego pose composed with CAM_FRONT's calibrated_sensor
(both rotations are w, x, y, z quaternions; the camera looks along its +z axis). Map frames are
metric, x = east, y = north, so the heading is the compass bearing of the optical axis projected
on the ground plane.

Geo-referencing. Each map frame's origin is the map's south-western corner. Its latitude and
longitude are the values the devkit publishes in ``nuscenes/scripts/export_poses.py``
(``REFERENCE_COORDINATES``; the same numbers are listed in the ``NuScenesMap`` docstring of the map
expansion, ``nuscenes/map_expansion/map_api.py``), and they are used from there. The origin goes to
UTM zone 48N and map-frame metres are added as grid metres; lat/lon then come from ``utm``. Over a
map of about 3 km this ignores grid convergence (about 0.03 degrees at 103.8 E, 1.3 N) and the UTM
scale factor (under 0.04 %), i.e. errors around a metre at the far side of the map, well below the
10 m positive radius and equal for every traversal of the same place.

Rows. One per CAM_FRONT key frame (sweeps are not used): traversal = scene name, frame_index =
order among the scene's key frames, frame_id = ``<scene name>_<first 12 hex of the sample token>``,
timestamp_us = the sample's timestamp, condition "night" when the scene description mentions
night (the real night scenes start with "Night, "), else "day"; place_index is -1.

Partial downloads. ``v1.0-trainval`` ships its images in ten ``v1.0-trainvalNN_blobs.tgz`` (or
``_keyframes.tgz``) archives of whole scenes (about 85 each). A scene none of whose CAM_FRONT key
frames is on disk was not downloaded: it is skipped and counted (``scenes_not_downloaded``,
``key_frames_not_downloaded``); a scene with some of them missing is an error naming the first.
A scene without key frames is counted (``scenes_without_key_frames``).

Version. The metadata folder is found in the dataset root: ``v1.0-trainval`` if present (it
contains the mini scenes), else ``v1.0-mini``, else ``v1.0-test``. The loaded ``NuScenes`` object is
cached per process (loading trainval takes tens of seconds) and reloaded when a table changes.
"""
from __future__ import annotations

import functools
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import utm
from PIL import Image

from seqvpr.datasets.catalog import NUSCENES_LOCATIONS
from seqvpr.datasets.frames import NormaliseResult, frame_path, frame_table, resize_for_model, save_frame
from seqvpr.errors import DataError

DATASET = "nuscenes"
CHANNEL = "CAM_FRONT"
VERSIONS = ("v1.0-trainval", "v1.0-mini", "v1.0-test")
UTM_ZONE, UTM_BAND = 48, "N"
TABLES = ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
          "sample_annotation", "sample_data", "scene", "sensor", "visibility")


def find_version(raw_root: str | Path) -> str:
    """The metadata version folder in ``raw_root`` (see module docstring for the preference)."""
    raw_root = Path(raw_root)
    for version in VERSIONS:
        if (raw_root / version / "scene.json").is_file():
            return version
    raise DataError(raw_root, f"no nuScenes metadata folder ({', '.join(VERSIONS)}) with scene.json")


def _read_table(table_root: Path, name: str) -> list[dict]:
    path = table_root / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataError(path, "table missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(path, f"not valid JSON: {exc}") from exc


def discover_partitions(raw_root: str | Path) -> list[str]:
    """The Singapore maps that have at least one scene, in catalog order."""
    table_root = Path(raw_root) / find_version(raw_root)
    locations = {log["token"]: log.get("location") for log in _read_table(table_root, "log")}
    used = {locations.get(scene["log_token"]) for scene in _read_table(table_root, "scene")}
    return [location for location in NUSCENES_LOCATIONS if location in used]


def _find_dangling(table_root: Path, token: str) -> DataError:
    """Name the table and record that refer to ``token`` (which is in no table it should be in)."""
    for name in TABLES:
        for record in _read_table(table_root, name):
            for field, value in record.items():
                if field != "token" and (value == token or (isinstance(value, list) and token in value)):
                    return DataError(table_root / f"{name}.json",
                                     f"record {record.get('token')} field {field!r} points to missing token {token}")
    return DataError(table_root, f"dangling token {token}")


def _tables_stamp(table_root: Path) -> tuple:
    return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(table_root.glob("*.json")))


@functools.lru_cache(maxsize=1)
def _cached_nuscenes(dataroot: str, version: str, stamp: tuple):
    from nuscenes.nuscenes import NuScenes

    return NuScenes(version=version, dataroot=dataroot, verbose=False)


def load_nuscenes(raw_root: str | Path):
    """The devkit's ``NuScenes`` for ``raw_root`` (cached per process), devkit failures as DataError."""
    raw_root = Path(raw_root).resolve()
    version = find_version(raw_root)
    table_root = raw_root / version
    for record in _read_table(table_root, "map"):
        if not (raw_root / record.get("filename", "")).is_file():
            raise DataError(raw_root / record.get("filename", ""), f"map mask of map {record.get('token')} in map.json is missing")
    try:
        return _cached_nuscenes(str(raw_root), version, _tables_stamp(table_root))
    except FileNotFoundError as exc:
        raise DataError(exc.filename or table_root, "table missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        for name in TABLES:
            _read_table(table_root, name)  # raises naming the broken table
        raise DataError(table_root, f"not valid JSON: {exc}") from exc
    except KeyError as exc:
        raise _find_dangling(table_root, exc.args[0]) from exc
    except (AssertionError, IndexError, TypeError) as exc:
        raise DataError(table_root, f"nuscenes-devkit cannot load the tables: {exc!r}") from exc


def _get(nusc, table: str, token: str, referrer: str, record_token: str, field: str) -> dict:
    """``nusc.get`` with a dangling reference reported against the referring table."""
    try:
        return nusc.get(table, token)
    except KeyError:
        raise DataError(Path(nusc.table_root) / f"{referrer}.json",
                        f"record {record_token} field {field!r} points to {token!r}, which is not in {table}.json") from None


def camera_pose(nusc, sample_data: dict) -> tuple[float, float, float]:
    """Map-frame x, y (metres) and compass heading (degrees) of the camera of one sample_data."""
    from pyquaternion import Quaternion

    token = sample_data["token"]
    ego = _get(nusc, "ego_pose", sample_data["ego_pose_token"], "sample_data", token, "ego_pose_token")
    sensor = _get(nusc, "calibrated_sensor", sample_data["calibrated_sensor_token"], "sample_data", token,
                  "calibrated_sensor_token")
    for record, table in ((ego, "ego_pose"), (sensor, "calibrated_sensor")):
        values = np.asarray([*record.get("translation", []), *record.get("rotation", [])], dtype=np.float64)
        if values.shape != (7,) or not np.isfinite(values).all():
            raise DataError(Path(nusc.table_root) / f"{table}.json",
                            f"record {record['token']}: translation/rotation missing or not finite")
        if np.linalg.norm(record["rotation"]) < 1e-9:
            raise DataError(Path(nusc.table_root) / f"{table}.json", f"record {record['token']}: zero rotation quaternion")
    ego_rotation = Quaternion(ego["rotation"])
    position = np.asarray(ego["translation"], dtype=np.float64) + ego_rotation.rotate(sensor["translation"])
    forward = (ego_rotation * Quaternion(sensor["rotation"])).rotate([0.0, 0.0, 1.0])
    heading = math.degrees(math.atan2(forward[0], forward[1])) % 360.0
    return float(position[0]), float(position[1]), heading


def map_to_utm(location: str, x, y) -> tuple[np.ndarray, np.ndarray]:
    """UTM 48N easting/northing of map-frame metres (see module docstring)."""
    from nuscenes.scripts.export_poses import REFERENCE_COORDINATES

    lat0, lon0 = REFERENCE_COORDINATES[location]
    east0, north0, _, _ = utm.from_latlon(lat0, lon0, force_zone_number=UTM_ZONE, force_zone_letter=UTM_BAND)
    return east0 + np.asarray(x, dtype=np.float64), north0 + np.asarray(y, dtype=np.float64)


def _read_image(path: Path, sample_data: dict, size: int) -> np.ndarray:
    """Decode a camera JPEG (at a reduced JPEG scale when that still covers ``size``) as RGB. Its
    stored pixels, EXIF orientation ignored as the devkit's ``Image.open`` reads them (and
    seqvpr.datasets.frames.read_image for the other datasets): sample_data's width and height and
    the calibrated intrinsics describe those."""
    if not path.is_file():
        raise DataError(path, f"image of sample_data {sample_data['token']} is missing")
    try:
        with Image.open(path) as image:
            width, height = image.size
            image.draft("RGB", (size, size))
            rgb = np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(path, f"corrupt or unreadable JPEG: {exc}") from exc
    expected = (sample_data.get("width"), sample_data.get("height"))
    if all(expected) and (width, height) != expected:
        raise DataError(path, f"image is {width}x{height}, sample_data.json says {expected[0]}x{expected[1]}")
    return rgb


def _key_frames(nusc, scene: dict) -> list[dict]:
    """The scene's samples in order, checked against the scene's first/last tokens and count (a
    scene may have none)."""
    samples, token = [], scene["first_sample_token"]
    referrer, record, field = "scene", scene["token"], "first_sample_token"
    while token:
        sample = _get(nusc, "sample", token, referrer, record, field)
        if sample["scene_token"] != scene["token"] or len(samples) > scene["nbr_samples"]:
            raise DataError(Path(nusc.table_root) / "sample.json",
                            f"sample chain of scene {scene['name']} leaves the scene at sample {token}")
        samples.append(sample)
        referrer, record, field, token = "sample", token, "next", sample["next"]
    last = samples[-1]["token"] if samples else ""
    if last != (scene["last_sample_token"] or "") or len(samples) != scene["nbr_samples"]:
        raise DataError(Path(nusc.table_root) / "scene.json",
                        f"scene {scene['name']}: sample chain has {len(samples)} samples ending at {last or 'nothing'}, "
                        f"the scene says {scene['nbr_samples']} ending at {scene['last_sample_token'] or 'nothing'}")
    return samples


def _camera_key_frames(nusc, scene: dict) -> list[tuple[dict, dict | None]]:
    """(sample, its CAM_FRONT sample_data or None) of every key frame of the scene."""
    frames = []
    for sample in _key_frames(nusc, scene):
        data_token = sample["data"].get(CHANNEL)
        if data_token is None:
            frames.append((sample, None))
            continue
        sample_data = _get(nusc, "sample_data", data_token, "sample", sample["token"], f"data.{CHANNEL}")
        if not isinstance(sample_data.get("filename"), str):
            raise DataError(Path(nusc.table_root) / "sample_data.json", f"record {data_token} has no 'filename'")
        frames.append((sample, sample_data))
    return frames


def _no_scenes_note(nusc, location: str) -> str:
    """The note of a map without scenes: where the dataset's scenes are instead."""
    where = Counter(log.get("location") for log in nusc.log for scene in nusc.scene if scene["log_token"] == log["token"])
    found = ", ".join(f"{count} in {name}" for name, count in sorted(where.items())) or "none"
    return (f"no scene of {Path(nusc.table_root).name} was recorded in {location} (log.json locations of its "
            f"scenes: {found}); the nuScenes benchmark uses the Singapore maps {', '.join(NUSCENES_LOCATIONS)}: "
            "v1.0-trainval has scenes in all three")


def normalise_partition(raw_root: str | Path, partition: str, out_dir: str | Path, data_root: str | Path,
                        size: int = 384) -> NormaliseResult:
    """Normalise the CAM_FRONT key frames of every scene recorded in map ``partition``."""
    if partition not in NUSCENES_LOCATIONS:
        raise ValueError(f"unknown nuScenes map {partition!r}; expected one of {', '.join(NUSCENES_LOCATIONS)}")
    raw_root, out_dir, data_root = Path(raw_root), Path(out_dir), Path(data_root)
    nusc = load_nuscenes(raw_root)
    scenes = []
    for scene in nusc.scene:
        log = _get(nusc, "log", scene["log_token"], "scene", scene["token"], "log_token")
        if log["location"] == partition:
            scenes.append(scene)
    rows, dropped, notes = [], Counter(), []
    if not scenes:
        notes.append(_no_scenes_note(nusc, partition))
    for scene in sorted(scenes, key=lambda s: s["name"]):
        condition = "night" if "night" in scene["description"].lower() else "day"
        key_frames = _camera_key_frames(nusc, scene)
        if not key_frames:
            dropped["scenes_without_key_frames"] += 1
            continue
        on_disk = [sd is not None and (raw_root / sd["filename"]).is_file() for _, sd in key_frames]
        if not any(on_disk):
            # Blob archives hold whole scenes: this scene's archive was not downloaded.
            dropped["scenes_not_downloaded"] += 1
            dropped["key_frames_not_downloaded"] += len(key_frames)
            continue
        frame_index = 0
        for sample, sample_data in key_frames:
            if sample_data is None:
                dropped[f"no_{CHANNEL}"] += 1
                continue
            if not isinstance(sample.get("timestamp"), int):
                raise DataError(Path(nusc.table_root) / "sample.json",
                                f"record {sample['token']}: timestamp {sample.get('timestamp')!r} is not an integer (microseconds)")
            x, y, heading = camera_pose(nusc, sample_data)
            source = raw_root / sample_data["filename"]
            frame_id = f"{scene['name']}_{sample['token'][:12]}"
            image_path = frame_path(out_dir, frame_id)
            save_frame(resize_for_model(_read_image(source, sample_data, size), size), image_path)
            rows.append({
                "frame_id": frame_id, "dataset": DATASET, "location": partition, "traversal": scene["name"],
                "condition": condition, "frame_index": frame_index, "timestamp_us": int(sample["timestamp"]),
                "image_path": image_path.relative_to(data_root).as_posix(),
                "source_file": sample_data["filename"], "x": x, "y": y, "heading_deg": heading,
                "place_index": -1,
            })
            frame_index += 1
    easting, northing = map_to_utm(partition, [r.pop("x") for r in rows], [r.pop("y") for r in rows])
    lat, lon = utm.to_latlon(easting, northing, UTM_ZONE, UTM_BAND) if rows else ([], [])
    for i, row in enumerate(rows):
        row.update(easting=float(easting[i]), northing=float(northing[i]), lat=float(lat[i]), lon=float(lon[i]),
                   utm_zone=UTM_ZONE, utm_band=UTM_BAND)
    return NormaliseResult(table=frame_table(rows), dropped=dict(sorted(dropped.items())), notes=notes)

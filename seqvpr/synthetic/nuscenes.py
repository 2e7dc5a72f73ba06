"""Synthetic nuScenes: a v1.0-mini-style folder the nuscenes-devkit loads like the real one.

Layout written under ``root`` (as in ``v1.0-mini.tgz``; folder and file names as nuscenes-devkit's
``nuscenes/nuscenes.py`` reads them: ``<dataroot>/<version>/<table>.json``, ``sample_data.filename``
relative to the dataroot, ``map.filename`` ``maps/<token>.png``)::

    v1.0-mini/{attribute,calibrated_sensor,category,ego_pose,instance,log,map,sample,
               sample_annotation,sample_data,scene,sensor,visibility}.json
    maps/<map token>.png                       semantic prior masks, 10 px/m, origin bottom-left
    samples/CAM_FRONT/<logfile>__CAM_FRONT__<timestamp_us>.jpg   key frames, 2 Hz
    sweeps/CAM_FRONT/<logfile>__CAM_FRONT__<timestamp_us>.jpg    non-key frames between them

Each Singapore map holds a small road network (a rounded loop and a street across it). Scenes
drive stretches of it on the left lane, as in Singapore: a day and a night scene along the same
stretch, then scenes in the opposite direction or along the cross street, so the same places are
seen with other headings and the 30 degree rule of the nuScenes benchmark matters. Only CAM_FRONT
is recorded; its calibration is the real rig's (1.70 m ahead of the rear axle, 1.51 m up, optical
axis along the ego x axis with a small yaw and pitch), its intrinsics scaled to the image width.
The camera's true map-frame position and compass heading per key frame go to
``truth_root/camera_poses.csv``.

Real size. ``v1.0-trainval`` has 850 scenes of about 20 s (40 key frames at 2 Hz, about 34,000
CAM_FRONT key frames), about half of them in Singapore. ``version="v1.0-trainval"`` names the
metadata folder as that release does, and ``scenes_per_location=284, samples_per_scene=40`` gives
852 scenes and 34,080 key frames, all in the three Singapore maps (the Boston half is never read
by the benchmark, so this world holds about twice the real Singapore frames).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pyquaternion import Quaternion

from seqvpr.atomic import atomic_dir
from seqvpr.synthetic.parallel import map_frames
from seqvpr.synthetic.render import World, render_view

VERSION = "v1.0-mini"
VERSIONS = ("v1.0-mini", "v1.0-trainval")  # metadata folder names of the releases written here
CHANNEL = "CAM_FRONT"
KEY_FRAME_PERIOD_US = 500_000  # samples at 2 Hz
MAP_RESOLUTION_M = 0.1  # the devkit's MapMask default, as in the real semantic prior PNGs
LANE_OFFSET_M = 1.8  # vehicles keep left in Singapore
# Real CAM_FRONT rig: 1600 px wide with fx = 1266.4 px (about 64.5 degrees horizontal field of view).
REAL_WIDTH_PX, REAL_FOCAL_PX = 1600, 1266.417203046554
CAMERA_TRANSLATION = (1.70079118954, 0.0159456324149, 1.51095763913)  # ego frame: x fwd, y left, z up
CAMERA_YAW_DEG = 0.55  # optical axis turned slightly left of the ego x axis
CAMERA_PITCH_DEG = 0.3
# The real semantic-prior map tokens (they are also the PNG names, see map_expansion/bitmap.py).
MAP_TOKENS = {
    "singapore-onenorth": "53992ee3023e5494b90c316c183be829",
    "singapore-hollandvillage": "37819e65e09e5547b8a3ceaefba56bb2",
    "singapore-queenstown": "93406b464a165eaba6d9de76ca09f5da",
}
# Road network per map in map-frame metres: south-west corner of the loop, loop size.
NETWORKS = {
    "singapore-onenorth": ((140.0, 160.0), (240.0, 160.0)),
    "singapore-queenstown": ((170.0, 130.0), (200.0, 180.0)),
    "singapore-hollandvillage": ((120.0, 190.0), (260.0, 140.0)),
}
# The Singapore maps, as the ``location`` of the real log.json records (the Boston map has no night).
LOCATIONS = tuple(NETWORKS)
CORNER_RADIUS_M = 14.0
ROAD_WIDTH_M = 10.0
# Day dates / night dates per map: logs are named n015-<date>-<time>+0800 as the Singapore car's.
LOG_DATES = {
    "singapore-onenorth": "2018-07-24",
    "singapore-queenstown": "2018-08-01",
    "singapore-hollandvillage": "2018-08-30",
}
LOG_START = {"day": (11, 22, 45), "night": (20, 5, 12)}
SINGAPORE_UTC_OFFSET_S = 8 * 3600
# The first two scenes of a map drive the same stretch by day and by night; further scenes take
# the opposite direction or the cross street. The first extra scene is a day one (the opposite
# direction on even maps, the cross street on odd ones), so the day database holds places seen with
# other headings near every night query, which only the 30 degree rule tells apart.
REFERENCE_SCENES = (("loop", 1, "day"), ("loop", 1, "night"))
EXTRA_SCENES = (("loop", -1, "day"), ("cross", 1, "day"), ("loop", -1, "night"), ("cross", -1, "night"))
DESCRIPTION_PARTS = (
    "big street", "bus stop", "peds crossing", "parked cars", "wait at intersection", "turn left",
    "following a truck", "construction", "narrow road", "overtaking bicycle", "high speed", "rain",
)
SENSOR_CHANNELS = (
    ("CAM_FRONT", "camera"), ("CAM_FRONT_RIGHT", "camera"), ("CAM_BACK_RIGHT", "camera"),
    ("CAM_BACK", "camera"), ("CAM_BACK_LEFT", "camera"), ("CAM_FRONT_LEFT", "camera"),
    ("LIDAR_TOP", "lidar"), ("RADAR_FRONT", "radar"), ("RADAR_FRONT_LEFT", "radar"),
    ("RADAR_FRONT_RIGHT", "radar"), ("RADAR_BACK_LEFT", "radar"), ("RADAR_BACK_RIGHT", "radar"),
)
CATEGORIES = (
    ("human.pedestrian.adult", "Adult subcategory."),
    ("vehicle.car", "Vehicle designed primarily for personal use."),
    ("vehicle.bus.rigid", "Rigid bus subcategory."),
    ("vehicle.truck", "Vehicles primarily designed to haul cargo."),
    ("vehicle.bicycle", "Human or electric powered 2-wheeled vehicle."),
    ("movable_object.barrier", "Temporary road barrier placed in the scene."),
    ("static_object.bicycle_rack", "Area or device intended to park or secure the bicycles."),
)
ATTRIBUTES = (
    ("vehicle.moving", "Vehicle is moving."),
    ("vehicle.stopped", "Vehicle, with a driver/rider in/on it, is currently stationary but has an intent to move."),
    ("vehicle.parked", "Vehicle is stationary (usually for longer duration) with no immediate intent to move."),
    ("pedestrian.moving", "The human is moving."),
    ("pedestrian.standing", "The human is standing."),
    ("cycle.with_rider", "There is a rider on the bicycle or motorcycle."),
)
VISIBILITIES = (
    ("1", "v0-40", "visibility of whole object is between 0 and 40%"),
    ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
    ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
    ("4", "v80-100", "visibility of whole object is between 80 and 100%"),
)


def camera_intrinsic(width: int, height: int) -> list[list[float]]:
    """The real CAM_FRONT intrinsics scaled to ``width`` (principal point at the image centre)."""
    focal = REAL_FOCAL_PX * width / REAL_WIDTH_PX
    return [[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]]


def camera_rotation() -> Quaternion:
    """CAM_FRONT to ego rotation: camera axes (x right, y down, z forward) in the ego frame."""
    base = Quaternion(matrix=np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]))
    yaw = Quaternion(axis=[0.0, 0.0, 1.0], degrees=CAMERA_YAW_DEG)
    pitch = Quaternion(axis=[0.0, 1.0, 0.0], degrees=CAMERA_PITCH_DEG)
    return yaw * pitch * base


class Path2D:
    """A polyline with arc-length lookup of position and unit tangent."""

    def __init__(self, points: np.ndarray, closed: bool):
        self.points = np.asarray(points, dtype=np.float64)
        self.closed = closed
        seg = np.diff(self.points, axis=0)
        self.seg_len = np.linalg.norm(seg, axis=1)
        self.tangents = seg / self.seg_len[:, None]
        self.cum = np.concatenate([[0.0], np.cumsum(self.seg_len)])
        self.length = float(self.cum[-1])

    def at(self, s: float) -> tuple[np.ndarray, np.ndarray]:
        s = s % self.length if self.closed else min(max(s, 0.0), self.length)
        i = min(int(np.searchsorted(self.cum, s, side="right")) - 1, len(self.seg_len) - 1)
        return self.points[i] + (s - self.cum[i]) * self.tangents[i], self.tangents[i]


def road_network(location: str) -> dict[str, Path2D]:
    """The loop (counter-clockwise, starting at the west end of its south edge) and the street
    crossing it south to north through the middle."""
    (x0, y0), (w, h) = NETWORKS[location]
    r = CORNER_RADIUS_M
    corners = [((x0 + w - r, y0 + r), -90.0), ((x0 + w - r, y0 + h - r), 0.0),
               ((x0 + r, y0 + h - r), 90.0), ((x0 + r, y0 + r), 180.0)]
    points = []
    for (cx, cy), start in corners:
        for a in np.deg2rad(np.linspace(start, start + 90.0, 10)):
            points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    cross = np.array([[x0 + w / 2, y0], [x0 + w / 2, y0 + h]])
    # The last arc ends at the south edge's west end: start (and close) the loop there.
    loop = np.array([points[-1]] + points)
    return {"loop": Path2D(loop, closed=True), "cross": Path2D(cross, closed=False)}


@dataclass(frozen=True)
class ScenePlan:
    name: str
    location: str
    condition: str
    route: str
    direction: int
    description: str


def _token(seed: int, *parts) -> str:
    """Deterministic 32-hex token, like the real ones."""
    return hashlib.md5(":".join(map(str, (seed,) + parts)).encode()).hexdigest()


def _plan_scenes(seed: int, scenes_per_location: int) -> list[ScenePlan]:
    rng = np.random.default_rng([seed, 1])
    plans, number = [], 0
    for i, location in enumerate(LOCATIONS):
        for k in range(scenes_per_location):
            route, direction, condition = (
                REFERENCE_SCENES[k] if k < len(REFERENCE_SCENES)
                else EXTRA_SCENES[(k - len(REFERENCE_SCENES) + i % 2) % len(EXTRA_SCENES)]
            )
            number += 1
            parts = ", ".join(rng.choice(DESCRIPTION_PARTS, size=3, replace=False))
            description = f"Night, {parts}" if condition == "night" else parts[0].upper() + parts[1:]
            plans.append(ScenePlan(f"scene-{number:04d}", location, condition, route, direction, description))
    return plans


def _log_start_us(location: str, condition: str, scene_in_log: int) -> int:
    """Unix time (microseconds) of a scene's first sample: logs start at local times on their date."""
    y, m, d = map(int, LOG_DATES[location].split("-"))
    hh, mm, ss = LOG_START[condition]
    days = (np.datetime64(f"{y:04d}-{m:02d}-{d:02d}") - np.datetime64("1970-01-01")).astype(int)
    seconds = int(days) * 86400 + hh * 3600 + mm * 60 + ss - SINGAPORE_UTC_OFFSET_S
    return (seconds + 40 * scene_in_log) * 1_000_000 + 612_460


def _logfile(location: str, condition: str) -> str:
    hh, mm, ss = LOG_START[condition]
    return f"n015-{LOG_DATES[location]}-{hh:02d}-{mm:02d}-{ss:02d}+0800"


def _map_mask(networks: dict[str, Path2D]) -> np.ndarray:
    """Drivable surface as the devkit reads it: 10 px/m, map origin at the bottom-left pixel."""
    points = np.vstack([p.points for p in networks.values()])
    width = int(math.ceil((points[:, 0].max() + 40) / MAP_RESOLUTION_M))
    height = int(math.ceil((points[:, 1].max() + 40) / MAP_RESOLUTION_M))
    mask = np.zeros((height, width), dtype=np.uint8)
    for path in networks.values():
        pixels = np.stack([path.points[:, 0] / MAP_RESOLUTION_M, height - path.points[:, 1] / MAP_RESOLUTION_M], axis=1)
        cv2.polylines(mask, [np.round(pixels).astype(np.int32)], path.closed, 255,
                      thickness=int(ROAD_WIDTH_M / MAP_RESOLUTION_M))
    return mask


def _ego_pose(path: Path2D, s: float, direction: int) -> tuple[np.ndarray, float]:
    """Vehicle position (left lane) and yaw (radians, counter-clockwise from map x = east)."""
    centre, tangent = path.at(s)
    forward = tangent * direction
    left = np.array([-forward[1], forward[0]])
    return centre + LANE_OFFSET_M * left, math.atan2(forward[1], forward[0])


def _write_json(table_root: Path, name: str, records: list[dict]) -> None:
    (table_root / f"{name}.json").write_text(json.dumps(records, indent=0))


def generate(
    root: Path,
    seed: int = 0,
    truth_root: Path | None = None,
    scenes_per_location: int = 3,
    samples_per_scene: int = 24,
    sweeps_per_sample: int = 1,
    width: int = 640,
    height: int = 360,
    jpeg_quality: int = 90,
    version: str = VERSION,
    workers: int = 1,
) -> dict:
    """Write a synthetic v1.0-mini-style nuScenes under ``root`` and camera truth under ``truth_root``;
    ``workers`` processes render the scenes (the files are the same for any number).

    Returns the key frames per scene and per condition.
    """
    if scenes_per_location < 1:
        raise ValueError(f"scenes_per_location must be at least 1, got {scenes_per_location}")
    if samples_per_scene < 1:
        raise ValueError(f"samples_per_scene must be at least 1, got {samples_per_scene}")
    if sweeps_per_sample < 0:
        raise ValueError(f"sweeps_per_sample must be 0 or more, got {sweeps_per_sample}")
    if width < 16 or height < 16:
        raise ValueError(f"image size must be at least 16x16, got {width}x{height}")
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {', '.join(VERSIONS)}, got {version!r}")
    if truth_root is None:
        raise ValueError("truth_root is required: the camera ground truth is written there")
    root, truth_root = Path(root), Path(truth_root)
    intrinsic = camera_intrinsic(width, height)
    hfov_deg = math.degrees(2 * math.atan(width / 2 / intrinsic[0][0]))
    cam_rotation = camera_rotation()
    cam_offset = np.array(CAMERA_TRANSLATION[:2])
    plans = _plan_scenes(seed, scenes_per_location)

    tables: dict[str, list[dict]] = {name: [] for name in (
        "attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
        "sample_annotation", "sample_data", "scene", "sensor", "visibility")}
    tables["category"] = [{"token": _token(seed, "category", n), "name": n, "description": d} for n, d in CATEGORIES]
    tables["attribute"] = [{"token": _token(seed, "attribute", n), "name": n, "description": d} for n, d in ATTRIBUTES]
    tables["visibility"] = [{"description": d, "token": t, "level": lv} for t, lv, d in VISIBILITIES]
    sensor_tokens = {ch: _token(seed, "sensor", ch) for ch, _ in SENSOR_CHANNELS}
    tables["sensor"] = [{"token": sensor_tokens[ch], "channel": ch, "modality": mod} for ch, mod in SENSOR_CHANNELS]

    truth_rows = []
    summary = {"version": version, "frames_per_traversal": {}, "frames_per_condition": {}}
    with atomic_dir(root) as out, atomic_dir(truth_root) as truth_out:
        table_root = out / version
        for folder in (table_root, out / "maps", out / "samples" / CHANNEL, out / "sweeps" / CHANNEL):
            folder.mkdir(parents=True, exist_ok=True)
        worlds, log_tokens = {}, {}
        for i, location in enumerate(LOCATIONS):
            networks = road_network(location)
            worlds[location] = (networks, World(routes=[p.points for p in networks.values()], seed=seed * 100 + i))
            ok, png = cv2.imencode(".png", _map_mask(networks), [cv2.IMWRITE_PNG_COMPRESSION, 9])
            (out / "maps" / f"{MAP_TOKENS[location]}.png").write_bytes(png.tobytes())
            location_plans = [p for p in plans if p.location == location]
            log_tokens[location] = {}
            for condition in ("day", "night"):
                if any(p.condition == condition for p in location_plans):
                    log_tokens[location][condition] = _token(seed, "log", location, condition)
                    tables["log"].append({
                        "token": log_tokens[location][condition], "logfile": _logfile(location, condition),
                        "vehicle": "n015", "date_captured": LOG_DATES[location], "location": location})
            tables["map"].append({
                "category": "semantic_prior", "token": MAP_TOKENS[location],
                "filename": f"maps/{MAP_TOKENS[location]}.png", "log_tokens": sorted(log_tokens[location].values())})
        jobs = []  # (plan, its index among its log's scenes, calibration token), in plan order
        for plan in plans:
            same_log = [p.name for p in plans if p.location == plan.location and p.condition == plan.condition]
            calibration_token = _token(seed, "calibrated_sensor", plan.name)
            tables["calibrated_sensor"].append({
                "token": calibration_token, "sensor_token": sensor_tokens[CHANNEL],
                "translation": list(CAMERA_TRANSLATION), "rotation": list(cam_rotation.elements),
                "camera_intrinsic": intrinsic})
            jobs.append((plan, same_log.index(plan.name), calibration_token))

        def scene_job(k: int) -> tuple[dict, list]:
            """One scene's records and truth rows (its frames are written by whichever process runs it)."""
            plan, scene_in_log, calibration_token = jobs[k]
            networks, world = worlds[plan.location]
            records, rows = {name: [] for name in ("sample", "sample_data", "ego_pose", "scene")}, []
            rng = np.random.default_rng([seed, 2, int(plan.name[-4:])])
            _write_scene(
                out, seed, plan, networks[plan.route], world, rng, log_tokens[plan.location][plan.condition],
                _logfile(plan.location, plan.condition), _log_start_us(plan.location, plan.condition, scene_in_log),
                calibration_token, samples_per_scene, sweeps_per_sample, width, height, hfov_deg,
                cam_offset, jpeg_quality, records, rows)
            return records, rows

        for (plan, _, _), (records, rows) in zip(jobs, map_frames(scene_job, len(jobs), workers, chunk=1)):
            for name, part in records.items():
                tables[name] += part
            truth_rows += rows
            summary["frames_per_traversal"][plan.name] = plan_samples = len(records["sample"])
            summary["frames_per_condition"][plan.condition] = summary["frames_per_condition"].get(plan.condition, 0) + plan_samples
        for name, records in tables.items():
            _write_json(table_root, name, records)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["scene", "location", "condition", "sample_token", "timestamp_us", "camera_x", "camera_y", "heading_deg"])
        writer.writerows(truth_rows)
        (truth_out / "camera_poses.csv").write_text(buf.getvalue())
    return summary


def _write_scene(out, seed, plan, path, world, rng, log_token, logfile, start_us, calibration_token,
                 n_samples, n_sweeps, width, height, hfov_deg, cam_offset, jpeg_quality, tables, truth_rows) -> dict:
    """Append one scene's scene/sample/sample_data/ego_pose records, render its frames, add truth rows."""
    scene_token = _token(seed, "scene", plan.name)
    sample_us = [start_us + k * KEY_FRAME_PERIOD_US + (int(rng.integers(-3000, 3000)) if k else 0) for k in range(n_samples)]
    camera_lag_us = int(rng.integers(8000, 14000))
    key_us = [t + camera_lag_us for t in sample_us]
    # Camera frames in time order: (timestamp, index of the sample it belongs to, is key frame).
    frames = []
    for k in range(n_samples):
        if k:
            for j in range(1, n_sweeps + 1):
                frames.append((key_us[k - 1] + (key_us[k] - key_us[k - 1]) * j // (n_sweeps + 1), k, False))
        frames.append((key_us[k], k, True))
    duration_s = (key_us[-1] - key_us[0]) / 1e6
    speed = float(rng.uniform(5.5, 7.5))
    if plan.route == "loop":
        (x0, _), (w, _) = NETWORKS[plan.location]
        middle = (x0 + w / 2) - (x0 + CORNER_RADIUS_M)  # arc length of the cross street's south end
        start = middle - plan.direction * speed * duration_s / 2 + float(rng.uniform(-3.0, 3.0))
    else:
        speed = min(speed, (path.length - 2.0) / max(duration_s, 1e-9))
        start = 1.0 if plan.direction > 0 else path.length - 1.0
    sample_tokens = [_token(seed, "sample", plan.name, k) for k in range(n_samples)]
    for k, token in enumerate(sample_tokens):
        tables["sample"].append({
            "token": token, "timestamp": sample_us[k],
            "prev": sample_tokens[k - 1] if k else "",
            "next": sample_tokens[k + 1] if k + 1 < n_samples else "",
            "scene_token": scene_token})
    data_tokens = [_token(seed, "sample_data", plan.name, CHANNEL, t) for t, _, _ in frames]
    for f, (timestamp, k, is_key) in enumerate(frames):
        s = start + plan.direction * speed * (timestamp - key_us[0]) / 1e6
        position, yaw = _ego_pose(path, s, plan.direction)
        ego_token = _token(seed, "ego_pose", plan.name, CHANNEL, timestamp)
        ego_rotation = Quaternion(axis=[0.0, 0.0, 1.0], radians=yaw)
        tables["ego_pose"].append({
            "token": ego_token, "timestamp": timestamp, "rotation": list(ego_rotation.elements),
            "translation": [float(position[0]), float(position[1]), 0.0]})
        filename = f"{'samples' if is_key else 'sweeps'}/{CHANNEL}/{logfile}__{CHANNEL}__{timestamp}.jpg"
        tables["sample_data"].append({
            "token": data_tokens[f], "sample_token": sample_tokens[k], "ego_pose_token": ego_token,
            "calibrated_sensor_token": calibration_token, "timestamp": timestamp, "fileformat": "jpg",
            "is_key_frame": is_key, "height": height, "width": width, "filename": filename,
            "prev": data_tokens[f - 1] if f else "", "next": data_tokens[f + 1] if f + 1 < len(frames) else ""})
        # Truth straight from the planar geometry: camera offset rotated by the ego yaw, and the
        # compass bearing of ego yaw plus the camera's mounting yaw.
        c, si = math.cos(yaw), math.sin(yaw)
        camera_xy = position + np.array([c * cam_offset[0] - si * cam_offset[1], si * cam_offset[0] + c * cam_offset[1]])
        heading = (90.0 - math.degrees(yaw) - CAMERA_YAW_DEG) % 360.0
        rgb = render_view(world, float(camera_xy[0]), float(camera_xy[1]), heading, plan.condition,
                          width, height, hfov_deg=hfov_deg, rng=rng)
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        (out / filename).write_bytes(jpeg.tobytes())
        if is_key:
            truth_rows.append([plan.name, plan.location, plan.condition, sample_tokens[k], sample_us[k],
                               repr(float(camera_xy[0])), repr(float(camera_xy[1])), repr(heading)])
    scene = {
        "token": scene_token, "log_token": log_token, "nbr_samples": n_samples,
        "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
        "name": plan.name, "description": plan.description}
    tables["scene"].append(scene)
    return scene

"""Synthetic Oxford RobotCar: runs as extracted from the official tar chunks, and an SDK checkout's models.

Layout written under ``root`` (one folder per run, as the ``<run>_stereo_left_NN.tar`` and
``<run>_gps.tar`` chunks of robotcar-dataset.robots.ox.ac.uk extract)::

    <run>/stereo.timestamps             "<microsecond timestamp> <chunk>" per line
    <run>/stereo/<camera>/<timestamp>.png   8-bit Bayer GBRG, distorted by the camera model
    <run>/gps/ins.csv                   INS at 50 Hz (real columns; yaw in radians, NED)
    <run>/gps/gps.csv                   GPS at 5 Hz (real columns)

and under ``sdk_root`` (default ``<root>/../robotcar-dataset-sdk``; no dataset tar holds them)::

    models/<model>.txt, models/<model>_distortion_lut.bin

Sources (ori-mrg/robotcar-dataset-sdk): ``python/play_images.py`` finds ``<camera>.timestamps``
two folders above ``stereo/<camera>/`` and reads ``tokens[0]`` (timestamp) and ``int(tokens[1])``
(chunk) per line, skipping images of chunks that are not on disk; ``python/camera_model.py`` picks
``stereo_wide_left`` for a ``stereo/left`` folder and ``stereo_narrow_left`` for ``stereo/centre``,
reads ``fx fy cx cy`` then the 4 x 4 ``G_camera_image`` from ``<model>.txt`` and the float64 LUT
reshaped to ``[2, N]`` from ``<model>_distortion_lut.bin``; ``python/image.py`` demosaics with the
GBRG pattern. The INS/GPS headers are those of the real ``gps/ins.csv`` / ``gps/gps.csv``. Image
names are UNIX microseconds on the run's date: the run name is its UTC start time (seqNet's first
``2015-03-17-11-08-44`` image is ``1426590534857014``, 2015-03-17 11:08:54.86 UTC).

The route is a stretch of the real Oxford route (the UTM positions of seqNet's Oxford test struct
file, shipped as `data/oxford_route.csv`, 3.1 km). A longer ``route_length_m`` (a real run drives about
10 km: 30,000-45,000 stereo frames per camera at 16 Hz) repeats that stretch, each copy shifted
``COPY_OFFSET_M`` north of the previous one and joined to it by a straight road, so the copies are
other places. Every run drives it at its own varying speed with a small
lateral offset; the INS of the first run starts after its first camera frames, so a loader has
frames outside the INS time range to drop. Ground truth (true camera pose per frame and some
undistorted frames) goes to `truth_root`.
"""
import calendar
import csv
import time
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import utm

from seqvpr.atomic import atomic_dir
from seqvpr.camera_model import distort, radial_lut
from seqvpr.geometry import cumulative_distance
from seqvpr.synthetic.parallel import map_frames
from seqvpr.synthetic.render import World, continuations, render_view

# The runs of the Oxford benchmarks (Adapt-STformer's Oxford-easy/-hard, seqNet's Oxford pair) and their light.
RUNS = {
    "2014-11-18-13-20-12": "day",
    "2014-12-16-09-14-09": "day",
    "2014-12-16-18-44-24": "night",
    "2014-12-17-18-18-43": "night",
    "2015-03-17-11-08-44": "day",
}
SDK_MODELS = {"left": "stereo_wide_left", "centre": "stereo_narrow_left"}  # python/camera_model.py
INS_COLUMNS = ["timestamp", "ins_status", "latitude", "longitude", "altitude", "northing", "easting", "down",
               "utm_zone", "velocity_north", "velocity_east", "velocity_down", "roll", "pitch", "yaw"]
GPS_COLUMNS = ["timestamp", "num_satellites", "latitude", "longitude", "altitude", "latitude_sigma",
               "longitude_sigma", "altitude_sigma", "northing", "easting", "down", "utm_zone"]
ZONE, BAND = 30, "U"
K1, K2 = -0.18, 0.03
HFOV_DEG = 66.0
TRUTH_EVERY = 10
FIRST_IMAGE_AFTER_S = 10.0  # seconds from the run name to its first image
COPY_OFFSET_M = np.array([0.0, 1000.0])  # each further copy of the shipped stretch (it spans 800 m south-north)
MAX_COPIES = 8


def real_route() -> np.ndarray:
    """(N, 2) easting, northing of the real route shipped with the package."""
    with resources.files("seqvpr.synthetic").joinpath("data/oxford_route.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    return np.array([[float(r["easting"]), float(r["northing"])] for r in rows])


def _stretch(route_length_m: float) -> np.ndarray:
    route = np.vstack([real_route() + k * COPY_OFFSET_M for k in range(MAX_COPIES)])
    travelled = cumulative_distance(route)
    if route_length_m <= 10 or route_length_m > travelled[-1]:
        raise ValueError(f"route_length_m must be in (10, {travelled[-1]:.0f}], got {route_length_m}")
    return route[: int(np.searchsorted(travelled, route_length_m)) + 1]


def _pose_at(route: np.ndarray, travelled: np.ndarray, s: np.ndarray, lateral: float):
    """Position (lateral offset to the left) and compass heading at distances s along the route."""
    x = np.interp(s, travelled, route[:, 0])
    y = np.interp(s, travelled, route[:, 1])
    ahead = np.minimum(s + 2.0, travelled[-1])
    behind = np.maximum(s - 2.0, 0.0)
    dx = np.interp(ahead, travelled, route[:, 0]) - np.interp(behind, travelled, route[:, 0])
    dy = np.interp(ahead, travelled, route[:, 1]) - np.interp(behind, travelled, route[:, 1])
    heading = np.degrees(np.arctan2(dx, dy)) % 360.0
    h = np.radians(heading)
    return x - np.cos(h) * lateral, y + np.sin(h) * lateral, heading


def mosaic_gbrg(rgb: np.ndarray) -> np.ndarray:
    """Bayer GBRG sampling of an RGB image: row 0 = G B G B..., row 1 = R G R G..."""
    raw = np.empty(rgb.shape[:2], dtype=np.uint8)
    raw[0::2, 0::2] = rgb[0::2, 0::2, 1]
    raw[0::2, 1::2] = rgb[0::2, 1::2, 2]
    raw[1::2, 0::2] = rgb[1::2, 0::2, 0]
    raw[1::2, 1::2] = rgb[1::2, 1::2, 1]
    return raw


def run_start_us(run: str) -> int:
    """UNIX microseconds of a run's name (its UTC start time)."""
    return calendar.timegm(time.strptime(run, "%Y-%m-%d-%H-%M-%S")) * 1_000_000


def write_sdk_model(models_dir: Path, name: str, focal: float, principal, lut: np.ndarray) -> None:
    """``<name>.txt`` (fx fy cx cy, then an identity G_camera_image) and the LUT as [2, N] float64."""
    models_dir.mkdir(parents=True, exist_ok=True)
    rows = [f"{focal:.6f} {focal:.6f} {principal[0]:.6f} {principal[1]:.6f}"]
    rows += [" ".join(f"{v:.6f}" for v in row) for row in np.eye(4)]
    (models_dir / f"{name}.txt").write_text("\n".join(rows) + "\n")
    np.ascontiguousarray(lut.T, dtype=np.float64).tofile(models_dir / f"{name}_distortion_lut.bin")


def generate(root: Path, seed: int = 0, truth_root: Path | None = None, frames_per_traversal: int = 0,
             route_length_m: float = 200.0, camera_hz: float = 8.0, width: int = 320, height: int = 240,
             chunks: int = 2, cameras: str = "left", sdk_root: Path | None = None, runs: str = "",
             workers: int = 1) -> dict:
    """Write the runs of ``RUNS`` named in ``runs`` (empty: all five); frames_per_traversal > 0 caps
    each run. Each run's frames are cut into ``chunks`` consecutive chunks (numbered from 1) and
    written for every camera in ``cameras``. A run's frames do not depend on which others are written;
    ``workers`` processes render them (the files are the same for any number)."""
    if frames_per_traversal < 0:
        raise ValueError(f"frames_per_traversal must be >= 0 (0: whole route), got {frames_per_traversal}")
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise ValueError(f"image size must be even and at least 16x16, got {width}x{height}")
    if chunks < 1:
        raise ValueError(f"chunks must be at least 1, got {chunks}")
    chosen = [c.strip() for c in cameras.split(",") if c.strip()]
    if not chosen or set(chosen) - set(SDK_MODELS):
        raise ValueError(f"cameras must name some of {', '.join(SDK_MODELS)}, got {cameras!r}")
    wanted = [r.strip() for r in runs.split(",") if r.strip()] or list(RUNS)
    if set(wanted) - set(RUNS):
        raise ValueError(f"runs must name some of {', '.join(RUNS)}, got {runs!r}")
    route = _stretch(route_length_m)
    travelled = cumulative_distance(route)
    world = World([route, *continuations(route)], seed=seed)  # the route's structures first, then past its ends
    focal = (width / 2) / np.tan(np.radians(HFOV_DEG) / 2)
    rng = np.random.default_rng(seed)
    summary = {}
    truth_lines = ["run,timestamp,easting,northing,heading_deg"]
    root = Path(root)
    sdk_root = Path(sdk_root) if sdk_root is not None else root.parent / "robotcar-dataset-sdk"
    with atomic_dir(root) as tmp:
        for run_index, (run, condition) in enumerate(sorted(RUNS.items())):
            start_us = run_start_us(run) + int(FIRST_IMAGE_AFTER_S * 1e6) + int(rng.integers(0, 10**6))
            steps = max(2000, int(travelled[-1] / 3.0 * 10))  # speed profile sampled at 10 Hz, longer than the drive
            speed = 5.0 + 1.5 * np.sin(np.linspace(0, rng.uniform(2, 5) * steps / 2000, steps) + rng.uniform(0, 6))
            t = np.linspace(0, steps / 10.0, steps)
            s_of_t = np.concatenate([[0.0], np.cumsum(speed[1:] * np.diff(t))])
            duration = float(np.interp(travelled[-1] - 1.0, s_of_t, t))
            lateral = rng.uniform(-1.0, 1.0)
            camera_t = np.arange(0.0, duration, 1.0 / camera_hz)
            if frames_per_traversal:
                camera_t = camera_t[:frames_per_traversal]
            cam_x, cam_y, cam_h = _pose_at(route, travelled, np.interp(camera_t, t, s_of_t), lateral)
            cam_h = (cam_h + rng.normal(0, 1.0, len(camera_t))) % 360.0
            if run not in wanted:
                continue
            stamps = start_us + np.round(camera_t * 1e6).astype(np.int64)
            chunk_of = 1 + np.arange(len(stamps)) * chunks // max(len(stamps), 1)
            folders = [tmp / run / "stereo" / camera for camera in chosen]
            for folder in folders:
                folder.mkdir(parents=True)
            if truth_root is not None:
                (Path(truth_root) / run).mkdir(parents=True, exist_ok=True)

            def frame(i, run=run, run_index=run_index, condition=condition, stamps=stamps, folders=folders,
                      cam_x=cam_x, cam_y=cam_y, cam_h=cam_h) -> str:
                ts = stamps[i]
                rgb = render_view(world, cam_x[i], cam_y[i], cam_h[i], condition, width, height, HFOV_DEG,
                                  rng=np.random.default_rng([seed, run_index, i]))
                bayer = mosaic_gbrg(distort(rgb, focal, K1, K2))
                for folder in folders:
                    cv2.imwrite(str(folder / f"{ts}.png"), bayer)
                if truth_root is not None and i % TRUTH_EVERY == 0:
                    cv2.imwrite(str(Path(truth_root) / run / f"{ts}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                return f"{run},{ts},{cam_x[i]:.4f},{cam_y[i]:.4f},{cam_h[i]:.4f}"

            truth_lines += map_frames(frame, len(stamps), workers)
            (tmp / run / "stereo.timestamps").write_text("".join(f"{ts} {c}\n" for ts, c in zip(stamps, chunk_of)))
            ins_start = camera_t[3] if run_index == 0 and len(camera_t) > 6 else 0.0
            _write_ins_gps(tmp / run / "gps", route, travelled, t, s_of_t, lateral, start_us,
                           ins_start, camera_t[-1] + 0.5)
            summary[run] = {"condition": condition, "frames": len(stamps)}
    # After the runs: ``sdk_root`` may be ``root`` itself (models beside the runs, as a user may keep them).
    with atomic_dir(sdk_root / "models") as models:
        for camera in chosen:
            write_sdk_model(models, SDK_MODELS[camera], focal, (width / 2, height / 2), radial_lut(width, height, focal, K1, K2))
    if truth_root is not None:
        Path(truth_root).mkdir(parents=True, exist_ok=True)
        (Path(truth_root) / "camera_poses.csv").write_text("\n".join(truth_lines) + "\n")
    return summary


def _write_ins_gps(folder: Path, route, travelled, t, s_of_t, lateral, start_us, t0, t1) -> None:
    folder.mkdir(parents=True)
    ins_t = np.arange(t0, t1, 1 / 50.0)
    x, y, heading = _pose_at(route, travelled, np.interp(ins_t, t, s_of_t), lateral)
    yaw = np.radians(heading)
    yaw = (yaw + np.pi) % (2 * np.pi) - np.pi
    lat, lon = utm.to_latlon(x, y, ZONE, BAND)
    vn, ve = np.gradient(y, ins_t), np.gradient(x, ins_t)
    with open(folder / "ins.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(INS_COLUMNS)
        for i, ts in enumerate(start_us + np.round(ins_t * 1e6).astype(np.int64)):
            writer.writerow([ts, "INS_SOLUTION_GOOD", f"{lat[i]:.9f}", f"{lon[i]:.9f}", "110.0", f"{y[i]:.6f}",
                             f"{x[i]:.6f}", "-110.0", f"{ZONE}{BAND}", f"{vn[i]:.4f}", f"{ve[i]:.4f}", "0.0",
                             "0.0", "0.0", f"{yaw[i]:.9f}"])
    with open(folder / "gps.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(GPS_COLUMNS)
        for i in range(0, len(ins_t), 10):
            ts = start_us + int(round(ins_t[i] * 1e6))
            writer.writerow([ts, 9, f"{lat[i]:.9f}", f"{lon[i]:.9f}", "110.0", "1.2", "1.2", "2.0",
                             f"{y[i]:.6f}", f"{x[i]:.6f}", "-110.0", f"{ZONE}{BAND}"])

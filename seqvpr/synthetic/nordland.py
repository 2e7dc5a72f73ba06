"""Synthetic Nordland: four season folders of identically numbered frames along the real track.

Layout written (the one seqNet-era code reads, frame names as in the reference struct files)::

    <root>/<season>/images-<frame:05d>.png      for season in spring, summer, fall, winter
    <root>/gps/<season>.csv                     frame,latitude,longitude (one row per frame)

The NRK release ships the four videos with per-second GPS logs; VPR users extract frames to the
season folders and interpolate the GPS to frame numbers, which is what ``gps/<season>.csv`` holds.
Frame numbers and lat/lon come from the real track (``data/nordland_track.csv``: the first 800
frames of seqNet's Nordland test struct file, ``dbImageFns`` and ``gpsDb``), so the synthetic
train runs where the real one does, and the GPS files repeat the real fixes, dropouts included
(a fix repeated on the next frame).

Rendering. One rural ``World`` along the true track serves all seasons, so a frame number is the
same place in every season. The true track is the real one with repeated fixes replaced by
interpolation between the neighbouring fixes; the camera looks along it. Each season's camera sits
at its own small lateral offset and yaw, and each frame is moved a little along the track (the
frames of the four videos are not taken at exactly the same spot). The rendered poses go to
``<truth_root>/camera_poses.csv`` (season,frame,easting,northing,heading_deg; UTM zone 33).
"""
import csv
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from seqvpr.atomic import atomic_dir, atomic_write_text
from seqvpr.datasets.catalog import NORDLAND_SEASONS
from seqvpr.datasets.nordland import to_utm, track_headings
from seqvpr.synthetic.render import World, render_view

SEASON_LATERAL_M = 0.8  # bound of each season's sideways camera offset
SEASON_YAW_DEG = 1.0  # sd of each season's camera yaw
ALONG_TRACK_M = 1.5  # bound of each frame's offset along the track
WORLD_MARGIN_M = 200.0  # structures beyond the first/last frame, so the ends see a world ahead


def real_track() -> tuple[np.ndarray, np.ndarray]:
    """Frame numbers and (lat, lon) of the real track shipped with the package."""
    with resources.files("seqvpr.synthetic").joinpath("data/nordland_track.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    frames = np.array([int(r["frame"]) for r in rows])
    latlon = np.array([[float(r["latitude"]), float(r["longitude"])] for r in rows])
    return frames, latlon


def true_positions(frames: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Positions with repeated GPS fixes (a fix equal to the previous frame's) interpolated by frame number."""
    fresh = np.ones(len(xy), dtype=bool)
    fresh[1:] = np.any(xy[1:] != xy[:-1], axis=1)
    return np.stack([np.interp(frames, frames[fresh], xy[fresh, k]) for k in range(2)], axis=1)


def generate(root: Path, seed: int = 0, truth_root: Path | None = None, frames: int = 150, start: int = 0,
             width: int = 640, height: int = 360) -> dict:
    """Write four seasons of ``frames`` frames each, starting at track row ``start``."""
    track_frames, track_latlon = real_track()
    if frames <= 0:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if start < 0 or start + frames > len(track_frames):
        raise ValueError(f"frames {start}..{start + frames} outside the shipped track of {len(track_frames)} frames")
    if width < 16 or height < 16:
        raise ValueError(f"image size must be at least 16x16, got {width}x{height}")
    easting, northing, _ = to_utm(track_latlon[:, 0], track_latlon[:, 1])
    track_xy = true_positions(track_frames, np.stack([easting, northing], axis=1))
    track_heading = track_headings(track_xy)
    chosen = slice(start, start + frames)
    numbers, latlon, xy, heading = track_frames[chosen], track_latlon[chosen], track_xy[chosen], track_heading[chosen]
    world = World([_extended(xy, heading)], seed=seed, style="rural")
    truth = ["season,frame,easting,northing,heading_deg"]
    with atomic_dir(root) as tmp:
        (tmp / "gps").mkdir()
        for season_index, season in enumerate(NORDLAND_SEASONS):
            folder = tmp / season
            folder.mkdir()
            season_rng = np.random.default_rng([seed, season_index])
            lateral, yaw = season_rng.uniform(-SEASON_LATERAL_M, SEASON_LATERAL_M), season_rng.normal(0, SEASON_YAW_DEG)
            for i, number in enumerate(numbers):
                rng = np.random.default_rng([seed, season_index, int(number)])
                along = rng.uniform(-ALONG_TRACK_M, ALONG_TRACK_M)
                h = np.radians(heading[i])
                forward, right = np.array([np.sin(h), np.cos(h)]), np.array([np.cos(h), -np.sin(h)])
                x, y = xy[i] + along * forward + lateral * right
                view_heading = (heading[i] + yaw) % 360.0
                rgb = render_view(world, x, y, view_heading, season, width, height, rng=rng)
                ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                (folder / f"images-{number:05d}.png").write_bytes(png.tobytes())
                truth.append(f"{season},{number},{x:.3f},{y:.3f},{view_heading:.3f}")
            lines = ["frame,latitude,longitude"] + [f"{n},{la:.5f},{lo:.5f}" for n, (la, lo) in zip(numbers, latlon)]
            (tmp / "gps" / f"{season}.csv").write_text("\n".join(lines) + "\n")
    if truth_root is not None:
        atomic_write_text(Path(truth_root) / "camera_poses.csv", "\n".join(truth) + "\n")
    return {"seasons": list(NORDLAND_SEASONS), "frames_per_season": frames,
            "first_frame": int(numbers[0]), "last_frame": int(numbers[-1])}


def _extended(xy: np.ndarray, heading: np.ndarray) -> np.ndarray:
    """The track with ``WORLD_MARGIN_M`` added before its first and after its last point."""
    def step(h):
        return WORLD_MARGIN_M * np.array([np.sin(np.radians(h)), np.cos(np.radians(h))])

    return np.vstack([xy[0] - step(heading[0]), xy, xy[-1] + step(heading[-1])])

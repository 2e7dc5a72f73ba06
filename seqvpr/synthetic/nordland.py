"""Synthetic Nordland: four season folders of identically numbered frames along the real track.

Layout written (the one seqNet-era code reads, frame names as in the reference struct files):

    <root>/<season>/images-<frame:05d>.png      for season in spring, summer, fall, winter
    <root>/gps/<season>.csv                     frame,latitude,longitude (one row per frame)

The NRK release ships the four videos with per-second GPS logs; VPR users extract frames to the
season folders and interpolate the GPS to frame numbers, which is what `gps/<season>.csv` holds.
Frame numbers and lat/lon come from the real track (`data/nordland_track.csv`, taken from seqNet's
Nordland test struct file), so the synthetic train runs where the real one does.
"""
import csv
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import utm

from seqvpr.atomic import atomic_dir, atomic_write_text
from seqvpr.datasets.catalog import NORDLAND_SEASONS
from seqvpr.geometry import bearing_along
from seqvpr.synthetic.render import World, render_view


def real_track() -> tuple[np.ndarray, np.ndarray]:
    """Frame numbers and (lat, lon) of the real track shipped with the package."""
    with resources.files("seqvpr.synthetic").joinpath("data/nordland_track.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    frames = np.array([int(r["frame"]) for r in rows])
    latlon = np.array([[float(r["latitude"]), float(r["longitude"])] for r in rows])
    return frames, latlon


def generate(root: Path, seed: int = 0, truth_root: Path | None = None, frames: int = 150, start: int = 0,
             width: int = 640, height: int = 360) -> dict:
    """Write four seasons of `frames` frames each, starting at track row `start`."""
    track_frames, track_latlon = real_track()
    if frames <= 1:
        raise ValueError(f"frames must be at least 2 (a track needs a direction), got {frames}")
    if start < 0 or start + frames > len(track_frames):
        raise ValueError(f"frames {start}..{start + frames} outside the shipped track of {len(track_frames)} frames")
    if width < 16 or height < 16:
        raise ValueError(f"image size must be at least 16x16, got {width}x{height}")
    numbers = track_frames[start:start + frames]
    latlon = track_latlon[start:start + frames]
    easting, northing, _, _ = utm.from_latlon(latlon[:, 0], latlon[:, 1])
    xy = np.stack([easting, northing], axis=1)
    heading = bearing_along(xy)
    world = World([xy], seed=seed, style="rural")
    rng = np.random.default_rng(seed)
    root = Path(root)
    with atomic_dir(root) as tmp:
        (tmp / "gps").mkdir()
        for season_index, season in enumerate(NORDLAND_SEASONS):
            folder = tmp / season
            folder.mkdir()
            # each season's video starts at a slightly different spot: small along/lateral offsets
            jitter = rng.normal(0, 0.6, size=(frames, 2))
            for i, number in enumerate(numbers):
                rgb = render_view(world, xy[i, 0] + jitter[i, 0], xy[i, 1] + jitter[i, 1],
                                  heading[i] + rng.normal(0, 1.5), season, width, height,
                                  rng=np.random.default_rng([seed, season_index, int(number)]))
                cv2.imwrite(str(folder / f"images-{number:05d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            lines = ["frame,latitude,longitude"] + [f"{n},{la:.5f},{lo:.5f}" for n, (la, lo) in zip(numbers, latlon)]
            (tmp / "gps" / f"{season}.csv").write_text("\n".join(lines) + "\n")
    if truth_root is not None:
        truth_lines = ["frame,easting,northing,heading_deg"] + [
            f"{n},{x:.3f},{y:.3f},{h:.3f}" for n, (x, y), h in zip(numbers, xy, heading)
        ]
        atomic_write_text(Path(truth_root) / "track.csv", "\n".join(truth_lines) + "\n")
    return {"seasons": list(NORDLAND_SEASONS), "frames_per_season": frames,
            "first_frame": int(numbers[0]), "last_frame": int(numbers[-1])}

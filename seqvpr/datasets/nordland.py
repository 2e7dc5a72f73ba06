"""Nordland: one season folder per partition, frames named `images-<frame>.png`.

Positions come from `<root>/gps/<season>.csv` (frame,latitude,longitude), see
`seqvpr.synthetic.nordland` for the layout. The frame number is the place identity: the 1-frame
rule pairs equal frame numbers across seasons, so it is stored as `place_index`.
"""
import csv
import re
from pathlib import Path

import cv2
import numpy as np
import utm

from seqvpr.datasets.catalog import NORDLAND_SEASONS
from seqvpr.datasets.frames import NormaliseResult, frame_table, resize_for_model, save_frame
from seqvpr.errors import DataError
from seqvpr.geometry import bearing_along

FRAME_NAME = re.compile(r"^images-(\d+)\.png$")
VIDEO_FPS = 25


def discover_partitions(raw_root: Path) -> list[str]:
    return [s for s in NORDLAND_SEASONS if (Path(raw_root) / s).is_dir()]


def read_gps(path: Path) -> dict[int, tuple[float, float]]:
    """frame -> (lat, lon) from a season's GPS file."""
    if not path.is_file():
        raise DataError(path, "GPS file missing")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"frame", "latitude", "longitude"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(path, f"missing column(s) {', '.join(sorted(missing))}")
        gps = {}
        for line, row in enumerate(reader, start=2):
            try:
                frame, lat, lon = int(row["frame"]), float(row["latitude"]), float(row["longitude"])
            except (TypeError, ValueError):
                raise DataError(path, f"line {line}: not a number in {row}") from None
            if not (np.isfinite(lat) and np.isfinite(lon)):
                raise DataError(path, f"line {line}: non-finite position for frame {frame}")
            if frame in gps:
                raise DataError(path, f"line {line}: duplicate frame {frame}")
            gps[frame] = (lat, lon)
    return gps


def list_frames(season_dir: Path) -> list[tuple[int, Path]]:
    """(frame number, path) of every frame image, sorted by frame number."""
    frames = {}
    for path in sorted(season_dir.iterdir()):
        match = FRAME_NAME.match(path.name)
        if not match:
            continue
        number = int(match.group(1))
        if number in frames:
            raise DataError(path, f"duplicate frame number {number} (also {frames[number].name})")
        frames[number] = path
    if not frames:
        raise DataError(season_dir, "season folder has no images-<frame>.png frames")
    return sorted(frames.items())


def normalise_partition(raw_root: Path, partition: str, out_dir: Path, data_root: Path, size: int = 384) -> NormaliseResult:
    """Resize every frame of one season and build its frame table."""
    raw_root, out_dir, data_root = Path(raw_root), Path(out_dir), Path(data_root)
    season_dir = raw_root / partition
    if not season_dir.is_dir():
        raise DataError(season_dir, f"season folder missing (expected one of {', '.join(NORDLAND_SEASONS)})")
    frames = list_frames(season_dir)
    gps_path = raw_root / "gps" / f"{partition}.csv"
    gps = read_gps(gps_path)
    without_gps = [path.name for number, path in frames if number not in gps]
    if without_gps:
        raise DataError(gps_path, f"no position for {len(without_gps)} frame(s), e.g. {without_gps[0]}")
    latlon = np.array([gps[number] for number, _ in frames])
    easting, northing, zone, band = utm.from_latlon(latlon[:, 0], latlon[:, 1])
    heading = bearing_along(np.stack([easting, northing], axis=1)) if len(frames) > 1 else np.zeros(1)
    rows = []
    for i, (number, path) in enumerate(frames):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DataError(path, "cannot decode image (corrupt, truncated or empty PNG)")
        target = out_dir / f"{number:05d}.png"
        save_frame(resize_for_model(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size), target)
        rows.append({
            "frame_id": f"{partition}_{number:05d}",
            "dataset": "nordland",
            "location": "nordland",
            "traversal": partition,
            "condition": partition,
            "frame_index": number,
            "timestamp_us": number * 1_000_000 // VIDEO_FPS,
            "image_path": str(target.relative_to(data_root)),
            "source_file": str(path.relative_to(raw_root)),
            "lat": float(latlon[i, 0]),
            "lon": float(latlon[i, 1]),
            "easting": float(easting[i]),
            "northing": float(northing[i]),
            "utm_zone": int(zone),
            "utm_band": str(band),
            "heading_deg": float(heading[i]),
            "place_index": number,
        })
    return NormaliseResult(table=frame_table(rows))

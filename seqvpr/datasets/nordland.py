"""Nordland: one season folder per partition, frames named ``images-<frame:05d>.png``.

Positions come from ``<root>/gps/<season>.csv`` (``frame,latitude,longitude``); see
``seqvpr.synthetic.nordland`` for the layout and why. The frame number is the place identity (the
1-frame rule pairs equal frame numbers across seasons), so it is both ``frame_index`` and
``place_index``; ``timestamp_us`` is the frame number in seconds: the season folders are 1 fps extractions.

UTM. Every row is projected into zone 33 (``UTM_ZONE``), the band letter follows each row's
latitude. The line runs from 10.4 E (zone 32) to 14.4 E (zone 33); one zone keeps every season in
one metric frame, at a scale error under 0.03 % at Trondheim.

Heading. The UTM grid bearing of the track at each frame, from the nearest earlier frame at another
position to the nearest later one. GPS repeats its last fix during dropouts (a fifth of the steps
in seqNet's Nordland test track have length zero), so neighbouring frames often share a position
and a plain forward difference would point them north. At the ends of the season the difference is
one-sided; a season with one distinct position gets heading 0. The grid bearing differs from a true
bearing by the grid convergence (under 2 degrees on this line).
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import cv2
import numpy as np
import utm

from seqvpr.datasets.catalog import NORDLAND_SEASONS
from seqvpr.datasets.frames import NormaliseResult, frame_table, resize_for_model, save_frame
from seqvpr.errors import DataError

DATASET = "nordland"
FRAME_NAME = re.compile(r"^images-(\d+)\.png$")
GPS_COLUMNS = ("frame", "latitude", "longitude")
FRAMES_PER_SECOND = 1
UTM_ZONE = 33


def gps_path(raw_root: str | Path, season: str) -> Path:
    return Path(raw_root) / "gps" / f"{season}.csv"


def discover_partitions(raw_root: str | Path) -> list[str]:
    """The seasons (catalog order) whose folder holds at least one frame."""
    raw_root = Path(raw_root)
    return [s for s in NORDLAND_SEASONS
            if (raw_root / s).is_dir() and any(FRAME_NAME.match(p.name) for p in (raw_root / s).iterdir())]


def read_gps(path: Path) -> dict[int, tuple[float, float]]:
    """frame -> (lat, lon) from a season's GPS file."""
    if not path.is_file():
        raise DataError(path, "GPS file missing")
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = set(GPS_COLUMNS) - set(reader.fieldnames or [])
            if missing:
                raise DataError(path, f"missing column(s) {', '.join(sorted(missing))}")
            gps = {}
            for line, row in enumerate(reader, start=2):
                try:
                    frame, lat, lon = int(row["frame"]), float(row["latitude"]), float(row["longitude"])
                except (TypeError, ValueError):
                    raise DataError(path, f"line {line}: not a number in {row}") from None
                if not (np.isfinite(lat) and np.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
                    raise DataError(path, f"line {line}: invalid position {lat}, {lon} for frame {frame}")
                if frame in gps:
                    raise DataError(path, f"line {line}: duplicate frame {frame}")
                gps[frame] = (lat, lon)
        return gps
    except UnicodeDecodeError as err:
        raise DataError(path, f"not a UTF-8 text file: {err.reason} at byte {err.start}") from None


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


def to_utm(lat, lon) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Easting and northing in zone ``UTM_ZONE`` and each point's latitude band letter."""
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    easting, northing, _, _ = utm.from_latlon(lat, lon, force_zone_number=UTM_ZONE)
    return easting, northing, [utm.latitude_to_zone_letter(float(v)) for v in lat]


def track_headings(xy: np.ndarray) -> np.ndarray:
    """Grid bearing (degrees clockwise from north) of a track at each of its points, in track order.

    A run of identical consecutive positions takes the direction from the point before the run to
    the point after it (see the module docstring).
    """
    xy = np.asarray(xy, dtype=np.float64)
    n = len(xy)
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = np.any(xy[1:] != xy[:-1], axis=1)
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:], n)
    run = np.cumsum(new_run) - 1
    before = np.maximum(starts[run] - 1, 0)
    after = np.minimum(ends[run], n - 1)
    delta = xy[after] - xy[before]
    return np.degrees(np.arctan2(delta[:, 0], delta[:, 1])) % 360.0


def _read_image(path: Path) -> np.ndarray:
    if path.stat().st_size == 0:
        raise DataError(path, "empty image file (0 bytes)")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(path, "cannot decode image (corrupt or truncated PNG)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def normalise_partition(raw_root: Path, partition: str, out_dir: Path, data_root: Path, size: int = 384) -> NormaliseResult:
    """Resize every frame of one season and build its frame table."""
    if partition not in NORDLAND_SEASONS:
        raise ValueError(f"unknown Nordland season {partition!r}; expected one of {', '.join(NORDLAND_SEASONS)}")
    raw_root, out_dir, data_root = Path(raw_root), Path(out_dir), Path(data_root)
    season_dir = raw_root / partition
    if not season_dir.is_dir():
        raise DataError(season_dir, "season folder missing")
    frames = list_frames(season_dir)
    gps_file = gps_path(raw_root, partition)
    gps = read_gps(gps_file)
    without_gps = [path.name for number, path in frames if number not in gps]
    if without_gps:
        raise DataError(gps_file, f"no position for {len(without_gps)} frame(s), e.g. {without_gps[0]}")
    latlon = np.array([gps[number] for number, _ in frames])
    easting, northing, bands = to_utm(latlon[:, 0], latlon[:, 1])
    heading = track_headings(np.stack([easting, northing], axis=1))
    rows = []
    for i, (number, path) in enumerate(frames):
        frame_id = f"{partition}_{path.stem}"
        target = out_dir / f"{frame_id}.png"
        save_frame(resize_for_model(_read_image(path), size), target)
        rows.append({
            "frame_id": frame_id,
            "dataset": DATASET,
            "location": DATASET,
            "traversal": partition,
            "condition": partition,
            "frame_index": number,
            "timestamp_us": number * 1_000_000 // FRAMES_PER_SECOND,
            "image_path": target.relative_to(data_root).as_posix(),
            "source_file": path.relative_to(raw_root).as_posix(),
            "lat": float(latlon[i, 0]),
            "lon": float(latlon[i, 1]),
            "easting": float(easting[i]),
            "northing": float(northing[i]),
            "utm_zone": UTM_ZONE,
            "utm_band": bands[i],
            "heading_deg": float(heading[i]),
            "place_index": number,
        })
    return NormaliseResult(table=frame_table(rows))

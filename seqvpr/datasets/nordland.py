"""Nordland: frames extracted at 1 fps from NRK's four videos of the Nordland line, one folder per season.

Layout read: ``<root>/<season>/images-<frame:05d>.png`` for the seasons present, which is what
the real distributions give once extracted (README, "Using the real datasets"): the Adelaide share
of seqNet's Nordland-clean (``summer.tar.gz`` holds ``summer/``; ``winter.tar.gz`` holds bare frames
that gmberton/VPR-datasets-downloader's ``download_nordland.py`` unpacks into ``winter/``, as
``seqvpr.acquire`` does) and any plain folder of the four season folders. Upper-case ``.PNG`` frames
are read like ``.png`` ones, and frames re-encoded as JPEG (``images-NNNNN.jpg``) like PNG ones; other
files in a season folder are ignored with a note naming them. A season whose folder is absent
gives an empty table and a note naming the folders that are there (``winter_images/``, ``autumn/``,
``Winter/``: the season folders are the lower-case catalog names). No GPS file is needed: no release ships one. The partitioned release of
Olid et al. (``<season>_images_{train,test}/section<k>/<n>.png``, as its ``test_nordland.py`` reads
``test/<season>_images_test/section1/<n>.png``) numbers frames within each partition, which does not
map onto Nordland-clean: it is refused with an error rather than paired wrongly.

Place identity. The seasons are frame-synchronised: a frame number is the same place in every
season. seqNet and Adapt-STformer use Nordland-clean (tunnels and red-light stops removed):
``data/nordland_clean_imageNames.txt`` (oravus/seqNet ``structFiles/imageNamesFiles/``, 27,592
names, sorted by frame number). ``place_index`` is a frame's index in that list, the index seqNet's
struct files store in ``utmDb``; frames not in the list are skipped and counted
(``not_in_clean_list``). ``frame_index`` is the frame number; ``timestamp_us`` the frame number in
seconds (1 fps extractions).

Positions (for plots and the struct files' ``gpsDb``/``gpsQ``; pairing uses ``place_index``). The
only public lat/lon per clean frame are those of seqNet's struct files
(``nordland_{train_d-40_d2-10,val_d-1_d2-1,test_d-1_d2-1}.db``, ``gpsDb``): 21,000 of the 27,592
clean frames, shipped as ``data/nordland_clean_gps.csv``. Other frames get NaN lat/lon, UTM and
heading and an empty ``utm_band``: nothing is interpolated.

UTM. Every position is projected into zone 33 (``UTM_ZONE``); the band letter follows each row's
latitude. The line runs from 10.4 E (zone 32) to 14.4 E (zone 33); one zone keeps every season in
one metric frame, at a scale error under 0.03 % at Trondheim.

Heading. The UTM grid bearing of the track at each located clean frame, from the nearest earlier
frame at another position to the nearest later one (in clean-list order). GPS repeats its
last fix during dropouts (a fifth of the steps in seqNet's Nordland test track have length zero),
so a plain forward difference would point such frames north. At the ends the difference is
one-sided; a track with one distinct position gets heading 0. The grid bearing differs from a true
bearing by the grid convergence (under 2 degrees on this line). Headings are computed within each
contiguous stretch of located clean frames, never across a gap.
"""
from __future__ import annotations

import csv
import functools
import re
from collections import Counter
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import utm

from seqvpr.datasets.catalog import NORDLAND_SEASONS
from seqvpr.datasets.frames import NormaliseResult, frame_path, frame_table, read_image, resize_for_model, save_frame
from seqvpr.errors import DataError

DATASET = "nordland"
FRAME_NAME = re.compile(r"^images-(\d+)\.(png|jpe?g)$", re.IGNORECASE)
FRAMES_PER_SECOND = 1
UTM_ZONE = 33
WHERE_TO_GET = {
    "summer": "summer.tar.gz on the Adelaide share of seqNet's Nordland-clean "
              "(gmberton/VPR-datasets-downloader download_nordland.py)",
    "winter": "winter.tar.gz on the Adelaide share of seqNet's Nordland-clean "
              "(gmberton/VPR-datasets-downloader download_nordland.py)",
    "spring": "not on the Adelaide share: extract it from NRK's spring video or another four-season "
              "release, as <root>/spring/images-NNNNN.png",
    "fall": "not on the Adelaide share: extract it from NRK's fall video or another four-season "
            "release, as <root>/fall/images-NNNNN.png",
}


def discover_partitions(raw_root: str | Path) -> list[str]:
    """The seasons (catalog order) whose folder holds at least one frame."""
    raw_root = Path(raw_root)
    return [s for s in NORDLAND_SEASONS
            if (raw_root / s).is_dir() and any(FRAME_NAME.match(p.name) for p in (raw_root / s).iterdir())]


def missing_season_message(season: str, raw_root: Path | None = None) -> str:
    """Where to get an absent season and, given the raw folder, which folders there look like it."""
    message = f"Nordland season {season!r} is not in the raw data"
    if raw_root is not None and Path(raw_root).is_dir():
        folders = sorted(p.name for p in Path(raw_root).iterdir()
                         if p.is_dir() and not p.name.startswith(".") and p.name not in NORDLAND_SEASONS)
        alike = [name for name in folders if season in name.lower().replace("autumn", "fall")]
        if alike:
            message += (f"; {raw_root} has {', '.join(f'{name}/' for name in alike)}: if that is the season, "
                        f"rename it to {season}/ (season folders are named {', '.join(NORDLAND_SEASONS)})")
        elif folders:
            message += f" (other folders in {raw_root}: {', '.join(folders)})"
    return f"{message}; get it from {WHERE_TO_GET[season]}"


@functools.lru_cache(maxsize=1)
def clean_list() -> dict[str, int]:
    """Nordland-clean frame name -> place index (its line in seqNet's list)."""
    text = resources.files("seqvpr.datasets").joinpath("data/nordland_clean_imageNames.txt").read_text()
    return {name: i for i, name in enumerate(text.split())}


@functools.lru_cache(maxsize=1)
def clean_positions() -> dict[int, tuple[float, float, float, float, str, float]]:
    """place index -> (lat, lon, easting, northing, band, heading) for the clean frames seqNet locates."""
    index = clean_list()
    with resources.files("seqvpr.datasets").joinpath("data/nordland_clean_gps.csv").open() as fh:
        rows = sorted((index[r["name"]], float(r["latitude"]), float(r["longitude"])) for r in csv.DictReader(fh))
    place = np.array([r[0] for r in rows])
    latlon = np.array([r[1:] for r in rows])
    easting, northing, bands = to_utm(latlon[:, 0], latlon[:, 1])
    xy = np.stack([easting, northing], axis=1)
    heading = np.zeros(len(place))
    for run in np.split(np.arange(len(place)), np.flatnonzero(np.diff(place) > 1) + 1):
        heading[run] = track_headings(xy[run])  # never across a stretch seqNet does not locate
    return {p: (latlon[i, 0], latlon[i, 1], easting[i], northing[i], bands[i], heading[i]) for i, p in enumerate(place)}


def list_frames(season_dir: Path) -> tuple[list[tuple[int, Path]], list[str]]:
    """(frame number, path) of every frame image, sorted by frame number, and the names of the
    other files in the folder (not frames: ignored)."""
    frames, others = {}, []
    for path in sorted(season_dir.iterdir()):
        match = FRAME_NAME.match(path.name)
        if not match:
            others.append(path.name)
            continue
        number = int(match.group(1))
        if number in frames:
            raise DataError(path, f"duplicate frame number {number} (also {frames[number].name})")
        frames[number] = path
    if not frames:
        raise DataError(season_dir, "season folder has no images-<frame>.png frames"
                                    + (f" (it holds {', '.join(others[:5])})" if others else ""))
    return sorted(frames.items()), others


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
    return cv2.cvtColor(read_image(path), cv2.COLOR_BGR2RGB)


def season_rows(raw_root: Path, season: str, out_dir: Path, data_root: Path) -> tuple[list[dict], Counter, list[str]]:
    """Frame-table rows of one season's clean frames (no image is read), the skips by reason and
    notes (files that are not frames)."""
    raw_root, out_dir, data_root = Path(raw_root), Path(out_dir), Path(data_root)
    clean, positions = clean_list(), clean_positions()
    unknown = (np.nan, np.nan, np.nan, np.nan, "", np.nan)
    rows, skipped = [], Counter()
    frames, others = list_frames(raw_root / season)
    notes = [f"{raw_root / season}: ignored {len(others)} file(s) that are not images-NNNNN.png frames: "
             f"{', '.join(others[:5])}{' ...' if len(others) > 5 else ''}"] if others else []
    for number, path in frames:
        place = clean.get(f"images-{number:05d}.png")
        if place is None:
            skipped["not_in_clean_list"] += 1
            continue
        lat, lon, easting, northing, band, heading = positions.get(place, unknown)
        frame_id = f"{season}_images-{number:05d}"
        rows.append({
            "frame_id": frame_id, "dataset": DATASET, "location": DATASET, "traversal": season,
            "condition": season, "frame_index": number,
            "timestamp_us": number * 1_000_000 // FRAMES_PER_SECOND,
            "image_path": frame_path(out_dir, frame_id).relative_to(data_root).as_posix(),
            "source_file": path.relative_to(raw_root).as_posix(),
            "lat": float(lat), "lon": float(lon), "easting": float(easting), "northing": float(northing),
            "utm_zone": UTM_ZONE, "utm_band": band, "heading_deg": float(heading), "place_index": place,
        })
    return rows, skipped, notes


def _partitioned_folder(raw_root: Path, season: str) -> Path | None:
    """A folder of Olid et al.'s partitioned release for ``season``, if the raw data holds one."""
    for split in ("train", "test"):
        for folder in (raw_root / f"{season}_images_{split}", raw_root / split / f"{season}_images_{split}"):
            if folder.is_dir():
                return folder
    return None


def normalise_partition(raw_root: Path, partition: str, out_dir: Path, data_root: Path, size: int = 384) -> NormaliseResult:
    """Resize every clean frame of one season and build its frame table. A season that is not in
    the raw data gives an empty table and a note that says where to get it."""
    if partition not in NORDLAND_SEASONS:
        raise ValueError(f"unknown Nordland season {partition!r}; expected one of {', '.join(NORDLAND_SEASONS)}")
    raw_root, out_dir, data_root = Path(raw_root), Path(out_dir), Path(data_root)
    partitioned = _partitioned_folder(raw_root, partition)
    if not (raw_root / partition).is_dir() and partitioned is not None:
        raise DataError(partitioned, "the partitioned Nordland of Olid et al. numbers frames within each section, "
                                     "which does not map onto Nordland-clean; use the season folders "
                                     f"<root>/{partition}/images-NNNNN.png of the Adelaide share or the videos")
    if not (raw_root / partition).is_dir():
        return NormaliseResult(table=frame_table([]), notes=[missing_season_message(partition, raw_root)])
    rows, skipped, notes = season_rows(raw_root, partition, out_dir, data_root)
    for row in rows:
        rgb = _read_image(raw_root / row["source_file"])
        save_frame(resize_for_model(rgb, size), data_root / row["image_path"])
    return NormaliseResult(table=frame_table(rows), dropped=dict(sorted(skipped.items())), notes=notes)

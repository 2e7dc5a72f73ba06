"""The VPR-datasets layout (gmberton/VPR-datasets-downloader, read at commit 2f886d5): JPEGs in
``images/<split>/{database,queries}/`` named by ``@``-separated fields, as read by
VPR-methods-evaluation (test_dataset.py, commit adbb6e2), CosPlace and EigenPlaces.

Name (util.get_dst_image_name)::

    @UTM_east@UTM_north@UTM_zone_number@UTM_zone_letter@latitude@longitude@pano_id@tile_num@heading@pitch@roll@height@timestamp@note@.jpg

east/north zero-padded to 10 characters with 2 decimals, latitude 9 with 5, longitude 10 with 5
(util.format_coord), zone ``%02d``, heading ``%03d`` of the integer part, timestamp
``YYYYMMDD_hhmmss`` (util.is_valid_timestamp), empty fields where unknown. Nordland follows
download_nordland.py instead (commit 27cfb27): ``@0@<north>@@@@@<frame>@@@@@@@@.jpg`` with dummy
UTM_north = frame x 25 / 10.5 m (7 characters, 1 decimal) so that 10 frames lie within 25 m, and
the frame number (our place_index) as pano_id.

VPR-methods-evaluation lists each folder with ``sorted(glob(folder/**/*))`` and takes positives by
``radius_neighbors`` on fields 1 and 2 (``--positive_dist_threshold``, metres).

Traversal order: ``timestamp`` only has whole seconds (the downloader's format), so we also put
the exact microsecond timestamp in ``pano_id`` (for RobotCar it is the image's own id) and the
traversal (RobotCar run, nuScenes scene) in ``note``: grouping by ``note`` and sorting by
``int(pano_id)`` gives each traversal's frame order (Nordland: sort by ``pano_id``, the frame).
"""
from __future__ import annotations

import io
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import utm
from PIL import Image

from seqvpr.benchmarks import Benchmark
from seqvpr.datasets.frames import load_frame
from seqvpr.errors import DataError
from seqvpr.exports.common import SplitRows, count_positive_mismatches, radius_positives, split_rows, write_info

CONSUMER = "gsv"
ROLE_FOLDERS = {"db": "database", "query": "queries"}
NORDLAND_FRAME_METRES = 25 / (10 + 0.5)  # download_nordland.py: THRESHOLD_METERS / (THRESHOLD_FRAMES + 0.5)
JPEG_QUALITY = 95


def supports(benchmark: str) -> bool:
    return True


def _coord(value: float, int_digits: int, decimals: int) -> str:
    """Zero-padded fixed-point text: ``int_digits`` characters before the point (sign included)."""
    return f"{float(value):0={int_digits + decimals + 1}.{decimals}f}"


def _clean(text: str, source) -> str:
    if "@" in text or "/" in text:
        raise DataError(source, f"{text!r} cannot be a field of an @-separated file name")
    return text


def _timestamp(us: int) -> str:
    return datetime.fromtimestamp(int(us) / 1e6, tz=timezone.utc).strftime("%Y%m%d_%H%M%S")


def image_name(row: dict, place_index: bool, source="<split table>") -> str:
    """The file name of one frame."""
    if place_index:
        frame = int(row["place_index"])
        return f"@0@{_coord(frame * NORDLAND_FRAME_METRES, 5, 1)}@@@@@{frame}@@@@@@@@.jpg"
    lat, lon = float(row["lat"]), float(row["lon"])
    fields = [
        "",
        _coord(row["easting"], 7, 2),
        _coord(row["northing"], 7, 2),
        f"{utm.latlon_to_zone_number(lat, lon):02d}",
        utm.latitude_to_zone_letter(lat) or "",
        _coord(lat, 3, 5),
        _coord(lon, 4, 5),
        str(int(row["timestamp_us"])),                 # pano_id
        "",                                            # tile_num
        f"{int(float(row['heading_deg'])):03d}",       # heading
        "", "", "",                                    # pitch, roll, height
        _timestamp(row["timestamp_us"]),
        _clean(str(row["traversal"]), source),         # note
        ".jpg",
    ]
    return "@".join(fields)


def positive_dist_threshold(bench: Benchmark, split: str) -> float:
    """VPR-methods-evaluation's ``--positive_dist_threshold`` (an int there, parser.py) that
    reproduces the split's radius (splits may have different radii: Nordland train 40 frames,
    test 1): for Nordland an integer between r and r + 1 frames (clear of the 0.05 m rounding of
    the names); a fractional metric radius stays fractional (that code base cannot take it:
    export.json says so)."""
    radius = bench.rules_for(split).radius
    if bench.uses_place_index:
        return float(np.floor(NORDLAND_FRAME_METRES * (radius + 0.5)))
    return float(radius)


def name_positions(names: list[str]) -> np.ndarray:
    """UTM east, north as VPR-methods-evaluation reads them: fields 1 and 2 of the name."""
    return np.array([(n.split("@")[1], n.split("@")[2]) for n in names], dtype=np.float64).reshape(-1, 2)


def jpeg_bytes(path: Path) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(load_frame(path)).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _write_role(folder: Path, rows: pd.DataFrame, bench: Benchmark, data_root: Path, source) -> list[str]:
    names = [image_name(r, bench.uses_place_index, source) for r in rows.to_dict("records")]
    if len(set(names)) != len(names):
        dup = pd.Series(names)[pd.Series(names).duplicated()].iloc[0]
        raise DataError(source, f"two frames would share the file name {dup!r} in {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    for name, image_path in zip(names, rows["image_path"]):
        (folder / name).write_bytes(jpeg_bytes(Path(data_root) / image_path))
    return names


def _positive_check(bench: Benchmark, part: SplitRows, db_names: list[str], q_names: list[str]) -> int:
    derived = radius_positives(name_positions(db_names), name_positions(q_names), positive_dist_threshold(bench, part.split))
    return count_positive_mismatches(derived, part.query["positives"])


def write_vpr_datasets(folder: Path, table: pa.Table, bench: Benchmark, data_root: Path,
                       source: Path | str = "<split table>") -> dict:
    """Write ``images/<split>/{database,queries}/`` into ``folder`` (an empty temporary folder)."""
    folder = Path(folder)
    checks, counts = {}, {}
    for part in split_rows(table, bench):
        names = {role: _write_role(folder / "images" / part.split / ROLE_FOLDERS[role], getattr(part, role), bench, data_root, source)
                 for role in ROLE_FOLDERS}
        checks[part.split] = _positive_check(bench, part, names["db"], names["query"])
        counts[part.split] = {ROLE_FOLDERS[r]: len(n) for r, n in names.items()}
    thresholds = {split: positive_dist_threshold(bench, split) for split in counts}
    info = {
        "consumer_can_load": True,
        "consumer": "gmberton/VPR-datasets-downloader layout (VPR-methods-evaluation, CosPlace, EigenPlaces)",
        "benchmark": bench.name, "images": counts, "positive_dist_threshold": thresholds,
        "positive_mismatches": checks,
        "positives_note": " ".join(note for note in (
            ("VPR-methods-evaluation uses the radius only; our positives also require the heading within "
             f"{bench.rules.max_heading_deg:g} degrees.") if bench.rules.max_heading_deg is not None else "",
            ("A radius is fractional; VPR-methods-evaluation takes whole metres."
             if any(t != int(t) for t in thresholds.values()) else ""),
        ) if note),
        "commands": [f"python3 main.py --method=cosplace --backbone=ResNet18 --descriptors_dimension=512 "
                     f"--database_folder=<this folder>/images/{s}/database --queries_folder=<this folder>/images/{s}/queries "
                     f"--positive_dist_threshold={thresholds[s]:g}" for s in counts],
    }
    if "@" in str(folder.parent):
        info["path_warning"] = at_sign_warning(folder.parent)
    write_info(folder, info)
    return info


def at_sign_warning(path: Path) -> str:
    """VPR-methods-evaluation reads fields 1 and 2 of ``path.split("@")`` of the whole image path
    (test_dataset.py), so a folder whose path has an '@' gives wrong positions there."""
    return (f"{path} contains '@': VPR-methods-evaluation splits whole image paths on '@' and would read wrong "
            "positions; link or copy this folder to a path without '@' (ln -s <this folder> /tmp/export) and pass that path")

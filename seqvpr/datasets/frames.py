"""Shared pieces of frame normalisation: resize, store, and assemble frame tables."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.frame_table import FRAME_TABLE_SCHEMA
from seqvpr.atomic import atomic_path
from seqvpr.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class NormaliseResult:
    """What normalising one partition produced: its frame table, the frames it dropped by reason,
    and notes for the user (e.g. a partition absent from the raw data and where to get it)."""

    table: pa.Table
    dropped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# Signature every dataset's normaliser implements:
#   normalise_partition(raw_root, partition, out_dir, data_root, size=384) -> NormaliseResult


def resize_for_model(rgb: np.ndarray, size: int) -> np.ndarray:
    """Square resize to the model input (as the Adapt-STformer code does); area filter when shrinking."""
    h, w = rgb.shape[:2]
    interp = cv2.INTER_AREA if (h > size or w > size) else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interp)


def os_problem(err: OSError) -> str:
    """The problem an OSError states, for a DataError naming the file it concerns."""
    return f"{err.strerror or err} (errno {err.errno})" if err.errno else str(err)


def read_image(path: Path, flags: int = cv2.IMREAD_COLOR, what: str = "image") -> np.ndarray:
    """Decode an image file with OpenCV, every failure a DataError naming the file: missing,
    unreadable (permissions, I/O errors), empty, or not decodable.

    EXIF orientation is ignored (``IMREAD_IGNORE_ORIENTATION``), as PIL, nuscenes-devkit
    (``Image.open`` in ``nuscenes/nuscenes.py`` rendering) and the RobotCar SDK (``python/image.py``)
    read frames: the datasets' sizes, intrinsics and poses describe the stored pixels."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(path, f"{what} missing") from None
    except OSError as err:
        raise DataError(path, f"cannot read {what}: {os_problem(err)}") from err
    if not data:
        raise DataError(path, f"empty {what} file (0 bytes): cannot decode {what}")
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), flags | cv2.IMREAD_IGNORE_ORIENTATION)
    if decoded is None or decoded.size == 0:
        raise DataError(path, f"cannot decode {what} (corrupt, truncated or not an image)")
    return decoded


# The normalised frame store: baseline TIFF, RGB, 8 bits a sample, uncompressed (Compression tag 1,
# TIFF 6.0 section 8), as OpenCV's libtiff writes it. Chosen by numbers (benchmarks/RESULTS.md, "Round 4:
# the frame store becomes uncompressed TIFF"): a 384 px frame decodes at about 2,850 frames/s on one core against PNG's 210, so decoding
# no longer bounds the embedding stage (PNG capped a 16-core GPU machine near 3,700 frames/s against
# bf16 CCT384's 7,110); it costs 432 KiB a frame against PNG's 152-224, the size of the frame's own
# float16 token map that the embedding cache holds anyway. Any image viewer, Pillow and OpenCV read it.
FRAME_SUFFIX = ".tif"
TIFF_UNCOMPRESSED = 1


def frame_path(out_dir: Path, frame_id: str) -> Path:
    """Where the frames stage stores frame `frame_id` of a partition folder."""
    return Path(out_dir) / f"{frame_id}{FRAME_SUFFIX}"


def save_frame(rgb: np.ndarray, path: Path) -> None:
    """Write an RGB uint8 (H, W, 3) frame atomically as an uncompressed TIFF (the frame store, above):
    lossless, and the same bytes for the same pixels."""
    ok, buf = cv2.imencode(FRAME_SUFFIX, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_TIFF_COMPRESSION, TIFF_UNCOMPRESSED])
    if not ok:
        raise RuntimeError(f"{path}: TIFF encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def remove_stale_frames(out_dir: Path, table: pa.Table, data_root: Path) -> int:
    """Delete the files of partition folder `out_dir` that its new frame table does not list (frames
    an earlier run wrote and this one did not: since dropped, or in an earlier store format such as
    PNG), so the folder holds exactly the table's frames. Returns how many were removed."""
    listed = {(Path(data_root) / p).resolve() for p in table.column("image_path").to_pylist()}
    removed = 0
    for path in sorted(Path(out_dir).iterdir()) if Path(out_dir).is_dir() else []:
        if path.is_file() and path.resolve() not in listed:
            path.unlink()
            removed += 1
    return removed


def load_frame(path: Path, out: np.ndarray | None = None) -> np.ndarray:
    """Read a normalised frame back as RGB uint8 (DataError naming a missing or broken one); into
    `out` (uint8, the frame's (H, W, 3)) when given, else a new array is returned."""
    return cv2.cvtColor(read_image(path, cv2.IMREAD_COLOR, "normalised frame"), cv2.COLOR_BGR2RGB, dst=out)


def frame_table(rows: Iterable[dict]) -> pa.Table:
    """Build a frame table from row dicts, validated against the schema (column set and types)."""
    rows = list(rows)
    columns = {f.name: [r[f.name] for r in rows] for f in FRAME_TABLE_SCHEMA}
    return pa.Table.from_pydict(columns, schema=FRAME_TABLE_SCHEMA)


def write_table(table: pa.Table, path: Path) -> None:
    """Write a parquet table atomically with deterministic settings."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_statistics=False)


def merge_tables(paths: Iterable[Path]) -> pa.Table:
    """Concatenate per-partition tables in a deterministic order (traversal, frame_index)."""
    tables = [pq.read_table(p, schema=FRAME_TABLE_SCHEMA) for p in sorted(paths)]
    if not tables:
        return FRAME_TABLE_SCHEMA.empty_table()
    merged = pa.concat_tables(tables)
    return merged.sort_by([("traversal", "ascending"), ("frame_index", "ascending")])

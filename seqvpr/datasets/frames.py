"""Shared pieces of frame normalisation: resize, store, and assemble frame tables."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

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
Normaliser = Callable[..., NormaliseResult]


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


def save_frame(rgb: np.ndarray, path: Path) -> None:
    """Write an RGB uint8 frame as PNG (lossless, fast compression level) atomically."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError(f"{path}: PNG encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


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

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


def save_frame(rgb: np.ndarray, path: Path) -> None:
    """Write an RGB uint8 frame as PNG (lossless, fast compression level) atomically."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError(f"{path}: PNG encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def load_frame(path: Path) -> np.ndarray:
    """Read a normalised frame back as RGB uint8."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        from seqvpr.errors import DataError

        raise DataError(path, "cannot decode normalised frame")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


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

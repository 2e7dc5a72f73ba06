"""Split table: one row per frame selected by a benchmark, one parquet file per benchmark.

Conventions
- Rows are sorted by split (train, val, test), role (db, query), then ``order``: the row's index
  within its (split, role) array, which is the index used by struct files, seqBounds files,
  shards and the pair lists.
- ``seq_start``/``seq_end``: the row's contiguous run ``[start, end)`` in ``order`` space
  (same traversal/scene and route section, no gap); sequences never cross it.
- ``section``: route section (1..n, cut from a reference traversal's travelled distance), 0 when
  the benchmark has no sections. ``travelled``: distance along the traversal (metres; Nordland:
  frames) at this frame.
- ``positives`` / ``nontrivial_positives``: for query rows, the ``order`` of the database rows of
  the same split that are positives / non-trivial positives (sorted); empty for database rows.
- The remaining columns are copied from the frame table (schemas/frame_table.py).
"""
from __future__ import annotations

import pyarrow as pa

from schemas.frame_table import FRAME_TABLE_SCHEMA

SPLITS = ("train", "val", "test")
ROLES = ("db", "query")
# frame-table columns copied into the split table (all but the UTM zone and band)
FRAME_COLUMNS = ("frame_id", "dataset", "location", "traversal", "condition", "frame_index", "timestamp_us",
                 "image_path", "source_file", "lat", "lon", "easting", "northing", "heading_deg", "place_index")

SPLIT_TABLE_SCHEMA = pa.schema(
    [
        pa.field("benchmark", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("role", pa.string(), nullable=False),
        pa.field("order", pa.int64(), nullable=False),
        *[FRAME_TABLE_SCHEMA.field(name) for name in FRAME_COLUMNS],
        pa.field("section", pa.int32(), nullable=False),
        pa.field("travelled", pa.float64(), nullable=False),
        pa.field("seq_start", pa.int64(), nullable=False),
        pa.field("seq_end", pa.int64(), nullable=False),
        pa.field("positives", pa.list_(pa.int64()), nullable=False),
        pa.field("nontrivial_positives", pa.list_(pa.int64()), nullable=False),
    ]
)

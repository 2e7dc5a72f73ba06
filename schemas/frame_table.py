"""Frame table: one row per normalised frame, one parquet file per dataset.

Conventions
- ``frame_id``: unique within the dataset, only ``[A-Za-z0-9_-]`` (usable as a WebDataset key),
  built as ``<traversal>_<source stem>`` with dots replaced.
- ``timestamp_us``: microseconds (RobotCar: UNIX time as in the file names; nuScenes: sample
  timestamp; Nordland: frame number in seconds, as the season folders are 1 fps extractions).
- ``easting``/``northing`` in metres in UTM zone ``utm_zone`` (number) and ``utm_band`` (letter).
- ``heading_deg``: compass bearing of the camera's forward axis, clockwise from north, in [0, 360).
- ``place_index``: Nordland: the frame's index in seqNet's Nordland-clean list (what seqNet's struct
  files store in ``utmDb``; ``frame_index`` is the frame number); -1 elsewhere.
- Nordland positions (lat/lon, UTM, heading) are NaN, and ``utm_band`` empty, for clean frames that
  seqNet's struct files do not locate (seqvpr/datasets/nordland.py).
- ``image_path``: normalised frame relative to the data root; ``source_file``: the original image
  relative to the dataset's raw root.
"""
from __future__ import annotations

import pyarrow as pa

FRAME_TABLE_SCHEMA = pa.schema(
    [
        pa.field("frame_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("location", pa.string(), nullable=False),
        pa.field("traversal", pa.string(), nullable=False),
        pa.field("condition", pa.string(), nullable=False),
        pa.field("frame_index", pa.int64(), nullable=False),
        pa.field("timestamp_us", pa.int64(), nullable=False),
        pa.field("image_path", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("lat", pa.float64(), nullable=False),
        pa.field("lon", pa.float64(), nullable=False),
        pa.field("easting", pa.float64(), nullable=False),
        pa.field("northing", pa.float64(), nullable=False),
        pa.field("utm_zone", pa.int32(), nullable=False),
        pa.field("utm_band", pa.string(), nullable=False),
        pa.field("heading_deg", pa.float64(), nullable=False),
        pa.field("place_index", pa.int64(), nullable=False),
    ]
)

CONDITIONS = ("day", "night", "spring", "summer", "fall", "winter")

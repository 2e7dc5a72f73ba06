"""seqNet struct files (``.db``, MATLAB 5 via scipy.io.savemat): the contract with the seqNet /
SeqVLAD / Adapt-STformer code bases, which read them with ``parse_db_struct``.

``loadmat(f)["dbStruct"][0, 0]`` has these fields, in this order (as the reference files in
tests/fixtures/seqnet_struct_files):

- ``whichSet`` str (train / val / test), ``dataset`` str
- ``dbImageFns`` / ``qImageFns``: object N x 1, each a 1-element str array (relative image paths:
  RobotCar ``<run>/stereo/left/images/<us>.png``; Nordland the bare ``images-<n>.png``, identical
  for database and query; seqvpr.structfile.struct_image_name)
- ``numImages`` / ``numQueries``: int64 1 x 1
- ``posDistThr`` / ``posDistSqThr`` / ``nonTrivPosDistSqThr``: 1 x 1, per split, int64 for
  frame-index benchmarks (Nordland train 40, 1600, 100; val/test 1, 1, 1), float64 metres otherwise
  (e.g. 10, 100, 25); the file name carries ``d-<posDistThr>_d2-<sqrt(nonTrivPosDistSqThr)>``
- ``utmDb`` / ``utmQ``: 2 x N float64 rows (northing, easting) as in the Oxford reference, or
  1 x N int64 Nordland-clean indices for Nordland
- Nordland only: ``gpsDb`` / ``gpsQ``: 2 x N float64 rows (lat, lon)

Companion files in the same folder: ``seqBoundsFiles/<stem>_<split>_<database|query>_seqBounds.txt``
(``start end`` per row, indices within the split's array), ``<stem>_splitInds.npz`` (trainInds /
valInds / testInds: object arrays ``[db indices, query indices]`` into the per-role arrays that
concatenate the splits in train, val, test order) and, for heading-aware benchmarks,
``saved_positives/nuscene_positives_<dataset>.pkl`` (object array of int64 db-index arrays, one
per test query).
"""
from __future__ import annotations

STRUCT_FIELDS_METRIC = (
    "whichSet", "dbImageFns", "qImageFns", "numImages", "numQueries", "posDistThr", "posDistSqThr",
    "dataset", "nonTrivPosDistSqThr", "utmDb", "utmQ",
)
STRUCT_FIELDS_PLACE_INDEX = STRUCT_FIELDS_METRIC + ("gpsDb", "gpsQ")
SPLIT_INDS_KEYS = ("trainInds", "valInds", "testInds")
ROLE_FILE_NAMES = {"db": "database", "query": "query"}

"""Struct files (and, optionally, input arrays) by the names the Adapt-STformer code base opens
(ai4ce/Adapt-STFormer, files read at commits 76c37b6 and d6dfefa).

What it opens (get_datasets.py, datasets.py):
- ``./structFiles/`` relative to the current directory: Nordland ``nordland_train_d-40_d2-10.db``
  and ``nordland_test_d-1_d2-1.db`` (the test file is also its val set); Oxford-easy (its
  "oxford2") ``oxford2_<db>-<q>_train.db`` / ``oxford2_<db>-<q>_test.db``; Oxford-hard
  ``oxford_hard_{train,test}.db``; nuScenes ``nuscene_large.db`` for every split, whose
  ``dataset`` field ``nuscene_large`` makes ``get_positives`` load
  ``structFiles/saved_positives/nuscene_positives_nuscene_large.pkl`` (pickle of a 1-D object
  array, one int64 db-index array per query) instead of a radius search, and
  ``structFiles/seqBoundsFiles/nuscene_large_{database,query}_seqbounds.txt`` (``np.loadtxt(f,
  int)``, one ``start end`` line per frame);
- ``--descType raw_384`` arrays under hard-coded folders (the one edit a user makes is to point
  them at ``data/`` here): ``nordland_raw_<season>_384.npy`` (one row per Nordland-clean
  position; trainInds ``arange(0, 15000)``, testInds ``len(train_ref) + arange(15100, 18100)``),
  ``oxford2_raw_<split>_<database|query>_384.npy``, ``oxford_hard_<split>_raw_<database|query>_384.npy``,
  ``nuscene_<database|query>_raw_large_384.npy``: float32 N x 3 x 384 x 384, ImageNet mean/std
  (dataset_generation/nuscene/6_create_nuscene_np.py), rows in struct-file order.

nuScenes struct details follow dataset_generation/nuscene/3_create_nuscene_db_struct.py:
``whichSet`` "large", ``utmDb``/``utmQ`` rows (x, y) = (easting, northing), image names
``nuscene_large_<database|query>/<timestamp>.jpg``; its ``rotationDb``/``rotationQ`` quaternions
are not written (our frame table keeps the heading only, and the loaders never read them).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image

from schemas.struct_file import ROLE_FILE_NAMES
from seqvpr.datasets.frames import load_frame
from seqvpr.embed.cct import IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD
from seqvpr.errors import DataError
from seqvpr.exports.common import (
    SplitRows, count_positive_mismatches, radius_positives, single_traversal, split_rows, write_info,
)
from seqvpr.seqbounds import format_seqbounds
from seqvpr.splits import Benchmark
from seqvpr.structfile import db_struct, object_vector, savemat_bytes

CONSUMER = "adapt-stformer"
# benchmark -> Adapt-STformer --dataset, and the folder its get_datasets.py hard-codes for raw_384
MAPPINGS = {
    "nordland": ("nordland-sw", "/vast/yl9727/nordland/"),
    "oxford_easy": ("oxford-easy", "/scratch/yl9727/oxford2/"),
    "oxford_hard": ("oxford-hard", "/scratch/yl9727/oxford-hard/"),
    "nuscenes": ("nuscene", "/scratch/yl9727/nuscenes/"),
}
NORDLAND_STRUCT_FILES = {"train": "nordland_train_d-40_d2-10.db", "test": "nordland_test_d-1_d2-1.db"}
NUSCENES_DATASET = "nuscene_large"
RAW_SUFFIX = f"_{IMAGE_SIZE}.npy"


def supports(benchmark: str) -> bool:
    return benchmark in MAPPINGS


def struct_file_name(bench: Benchmark, split: str, source) -> str | None:
    """The file Adapt-STformer opens for ``split`` of ``bench`` (None: a split it never reads)."""
    if bench.name == "nordland":
        return NORDLAND_STRUCT_FILES.get(split)
    if bench.name == "nuscenes":
        return f"{NUSCENES_DATASET}.db" if split == "test" else None
    if split not in ("train", "test"):
        return None
    if bench.name == "oxford_hard":
        return f"oxford_hard_{split}.db"
    spec = bench.split(split)
    db = single_traversal(spec.db, split, "db", CONSUMER, source)
    q = single_traversal(spec.query, split, "query", CONSUMER, source)
    return f"oxford2_{db}-{q}_{split}.db"


def raw_array_names(bench: Benchmark, split: str) -> dict[str, str]:
    """role -> input-array file name of one split (not Nordland, whose arrays are per season)."""
    if bench.name == "oxford_easy":
        return {role: f"oxford2_raw_{split}_{ROLE_FILE_NAMES[role]}{RAW_SUFFIX}" for role in ROLE_FILE_NAMES}
    if bench.name == "oxford_hard":
        return {role: f"oxford_hard_{split}_raw_{ROLE_FILE_NAMES[role]}{RAW_SUFFIX}" for role in ROLE_FILE_NAMES}
    return {role: f"nuscene_{ROLE_FILE_NAMES[role]}_raw_large{RAW_SUFFIX}" for role in ROLE_FILE_NAMES}


def _struct(bench: Benchmark, part: SplitRows, name: str) -> dict:
    struct = db_struct(bench, part.split, part.db, part.query)
    if bench.name == "nuscenes":
        struct["whichSet"], struct["dataset"] = "large", NUSCENES_DATASET
        for key, role, rows in (("dbImageFns", "db", part.db), ("qImageFns", "query", part.query)):
            names = [f"{NUSCENES_DATASET}_{ROLE_FILE_NAMES[role]}/{t}.jpg" for t in rows["timestamp_us"]]
            struct[key] = np.array(names, dtype=object).reshape(-1, 1)
        struct["utmDb"] = np.stack([part.db["easting"].to_numpy(np.float64), part.db["northing"].to_numpy(np.float64)])
        struct["utmQ"] = np.stack([part.query["easting"].to_numpy(np.float64), part.query["northing"].to_numpy(np.float64)])
    else:
        # The dataset field of its Oxford/Nordland files is not readable here (binary files in
        # its repository); we use the file stem without the split, as seqNet's files do.
        struct["whichSet"], struct["dataset"] = part.split, "nordland" if bench.name == "nordland" else name.rsplit("_", 1)[0]
    return struct


def normalised_input(path: Path) -> np.ndarray:
    """One frame as Adapt-STformer's transform gives it: Resize([384, 384]), ToTensor, Normalize
    with ImageNet mean/std -> float32 3 x 384 x 384. Our frames are already 384 x 384."""
    rgb = load_frame(path)
    if rgb.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
        rgb = np.asarray(Image.fromarray(rgb).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR))
    x = rgb.astype(np.float32) / 255.0
    x = (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def write_raw_array(path: Path, data_root: Path, image_paths: list[str], length: int | None = None,
                    rows: np.ndarray | None = None) -> None:
    """Stream frames into an N x 3 x 384 x 384 float32 ``.npy`` (numpy.lib.format.open_memmap),
    one frame in memory at a time; ``rows`` places frame i at row rows[i] of a ``length``-row
    array (rows no frame fills stay zero)."""
    length = len(image_paths) if length is None else length
    rows = np.arange(len(image_paths)) if rows is None else rows
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(length, 3, IMAGE_SIZE, IMAGE_SIZE))
    for row, image_path in zip(rows, image_paths):
        array[row] = normalised_input(Path(data_root) / image_path)
    array.flush()
    del array


def _write_raw(data_dir: Path, bench: Benchmark, parts: list[SplitRows], data_root: Path, source) -> list[str]:
    written = []
    if bench.name == "nordland":
        seasons: dict[str, pd.DataFrame] = {}
        for part in parts:
            for rows in (part.db, part.query):
                for season, group in rows.groupby(bench.select_by, sort=True):
                    seasons[season] = pd.concat([seasons.get(season), group]).drop_duplicates("place_index")
        for season, rows in sorted(seasons.items()):
            name = f"nordland_raw_{season}{RAW_SUFFIX}"
            place = rows["place_index"].to_numpy()
            if (place < 0).any():
                raise DataError(source, f"season {season} has frames without a place_index")
            write_raw_array(data_dir / name, data_root, rows["image_path"].tolist(), int(place.max()) + 1, place)
            written.append(name)
        return written
    for part in parts:
        if struct_file_name(bench, part.split, source) is None:
            continue
        for role, name in raw_array_names(bench, part.split).items():
            write_raw_array(data_dir / name, data_root, getattr(part, role)["image_path"].tolist())
            written.append(name)
    return written


def _positive_check(bench: Benchmark, struct: dict, part: SplitRows, positives) -> int:
    """Adapt-STformer's evaluation positives: the pickle for nuscene_large, else a radius search."""
    if positives is None:
        positives = radius_positives(np.atleast_2d(struct["utmDb"]).T, np.atleast_2d(struct["utmQ"]).T, float(struct["posDistThr"]))
    return count_positive_mismatches([np.asarray(p, dtype=np.int64) for p in positives], part.query["positives"])


def commands(bench: Benchmark) -> list[str]:
    dataset, _ = MAPPINGS[bench.name]
    return [f"python svpr_main.py --mode test --split test --arch adapt_stformer --pooling seqvlad --trunc_te 8 "
            f"--freeze_te 1 --seqL 5 --cacheBatchSize 1 --descType raw_384 --img_shape 384 384 --outDims 24576 "
            f"--backbone cct384 --dataset {dataset} --ckpt best --k_points 8 --num_levels 2 --resume <run folder>"]


def write_adapt_stformer(folder: Path, table: pa.Table, bench: Benchmark, data_root: Path | None = None,
                         source: Path | str = "<split table>") -> dict:
    """Write ``structFiles/`` (and with ``data_root``, the raw_384 arrays in ``data/``) into
    ``folder`` (an empty temporary folder); returns export.json."""
    if not supports(bench.name):
        raise DataError(source, f"no Adapt-STformer layout for benchmark {bench.name!r} (known: {sorted(MAPPINGS)})")
    folder = Path(folder)
    struct_dir = folder / "structFiles"
    struct_dir.mkdir(parents=True, exist_ok=True)
    parts = split_rows(table, bench)
    files, checks = [], {}
    for part in parts:
        name = struct_file_name(bench, part.split, source)
        if name is None:
            continue
        struct = _struct(bench, part, name)
        (struct_dir / name).write_bytes(savemat_bytes({"dbStruct": struct}))
        files.append(name)
        positives = None
        if bench.name == "nuscenes":
            for role, rows in (("db", part.db), ("query", part.query)):
                path = struct_dir / "seqBoundsFiles" / f"{NUSCENES_DATASET}_{ROLE_FILE_NAMES[role]}_seqbounds.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(format_seqbounds(rows[["seq_start", "seq_end"]].to_numpy()))
            positives = object_vector([np.asarray(p) for p in part.query["positives"]])
            pickle_path = struct_dir / "saved_positives" / f"nuscene_positives_{NUSCENES_DATASET}.pkl"
            pickle_path.parent.mkdir(parents=True, exist_ok=True)
            pickle_path.write_bytes(pickle.dumps(positives, protocol=4))
        checks[part.split] = _positive_check(bench, struct, part, positives)
    dataset, prefix = MAPPINGS[bench.name]
    raw = _write_raw(folder / "data", bench, parts, data_root, source) if data_root is not None else []
    info = {"consumer": "ai4ce/Adapt-STFormer", "benchmark": bench.name, "dataset": dataset,
            "struct_files": files, "raw_384_arrays": raw, "positive_mismatches": checks,
            "edit": f"in get_datasets.py replace {prefix!r} with the absolute path of this folder's data/",
            "setup": "copy structFiles/ into the Adapt-STFormer code folder (it opens ./structFiles/)",
            "commands": commands(bench)}
    write_info(folder, info)
    return info

"""Write seqNet-compatible struct files, seqBounds, splitInds and nuScenes positives from a
split table (format: schemas/struct_file.py). Every file is atomic and byte-identical on re-run."""
from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.io import savemat

from schemas.split_table import SPLITS
from schemas.struct_file import ROLE_FILE_NAMES, SPLIT_INDS_KEYS
from seqvpr.atomic import atomic_write_bytes
from seqvpr.benchmarks import Benchmark
from seqvpr.seqbounds import write_seqbounds
from seqvpr.splits import role_rows

# scipy writes time.asctime() into the 116-byte MAT header; a fixed text keeps files reproducible.
MAT_HEADER = b"MATLAB 5.0 MAT-file Platform: posix, Created on: Thu Jan  1 00:00:00 1970"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def savemat_bytes(mdict: dict) -> bytes:
    """``scipy.io.savemat`` output with a fixed header instead of the creation time."""
    buf = io.BytesIO()
    savemat(buf, mdict)
    data = bytearray(buf.getvalue())
    data[:116] = MAT_HEADER.ljust(116, b"\0")
    return bytes(data)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz (as ``np.load`` reads it) with fixed member dates, so it is byte-reproducible."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=True)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_DATE), member.getvalue())
    return buf.getvalue()


def object_vector(arrays: list[np.ndarray]) -> np.ndarray:
    """1-D object array of int64 arrays (np.array would make a 2-D array if lengths agree)."""
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = np.asarray(a, dtype=np.int64)
    return out


def _number(value: float, place_index: bool):
    return np.int64(round(value)) if place_index else np.float64(value)


def thresholds(bench: Benchmark, split: str) -> dict[str, float]:
    """posDistThr / posDistSqThr / nonTrivPosDistSqThr of one split as seqNet stores them (the
    reference nordland_train_d-40_d2-10.db: 40, 1600, 100; nordland_test_d-1_d2-1.db: 1, 1, 1)."""
    rules = bench.rules_for(split)
    r, nt = rules.radius, rules.nontrivial_radius
    return {"posDistThr": r, "posDistSqThr": r * r, "nonTrivPosDistSqThr": nt * nt}


def _fmt(value: float) -> str:
    return f"{value:g}"


def struct_names(bench: Benchmark, split: str) -> tuple[str, str]:
    """(file name, ``dataset`` field): the benchmark's template (Adapt-STformer's names, e.g.
    ``oxford2_<db>-<q>_train.db``), else seqNet's pattern ``oxford-v1.0_<db>_<q>_test_d-10_d2-5.db``."""
    spec = bench.split(split)
    thr = thresholds(bench, split)
    suffix = f"{split}_d-{_fmt(thr['posDistThr'])}_d2-{_fmt(thr['nonTrivPosDistSqThr'] ** 0.5)}.db"
    db, q = "+".join(spec.db), "+".join(spec.query)
    if bench.select_by == "traversal":
        name, dataset = f"{bench.struct_stem}_{db}_{q}_{suffix}", f"{bench.struct_stem}_{db}-{q}"
    else:
        name, dataset = f"{bench.struct_stem}_{suffix}", bench.struct_stem
    if bench.struct_file:
        name = bench.struct_file.format(db=db, query=q, split=split)
    return name, bench.struct_dataset or dataset


def struct_image_name(dataset: str, source_file: str) -> str:
    """A frame's name as the seqNet struct files write it: Nordland the bare frame name, identical
    for every season (``images-19159.png``); RobotCar the run's processed stereo image
    (``<run>/stereo/left/images/<timestamp>.png``, as in ``oxford-v1.0_*.db``); nuScenes its
    dataroot-relative file."""
    path = PurePosixPath(source_file)
    if dataset == "nordland":
        return path.name
    if dataset == "robotcar":
        run, _, camera = path.parts[:3]
        return f"{run}/stereo/{camera}/images/{path.stem}.png"
    return source_file


def _image_names(rows: pd.DataFrame, dataset: str) -> np.ndarray:
    names = [struct_image_name(dataset, f) for f in rows["source_file"]]
    return np.array(names, dtype=object).reshape(-1, 1)


def _utm(rows: pd.DataFrame, place_index: bool) -> np.ndarray:
    if place_index:
        return rows["place_index"].to_numpy(dtype=np.int64).reshape(1, -1)
    return np.stack([rows["northing"].to_numpy(np.float64), rows["easting"].to_numpy(np.float64)])


def db_struct(bench: Benchmark, split: str, db: pd.DataFrame, query: pd.DataFrame) -> dict:
    """The ``dbStruct`` dict of one split, fields in the reference order."""
    place = bench.uses_place_index
    thr = {k: _number(v, place) for k, v in thresholds(bench, split).items()}
    struct = {
        "whichSet": split,
        "dbImageFns": _image_names(db, bench.dataset),
        "qImageFns": _image_names(query, bench.dataset),
        "numImages": np.int64(len(db)),
        "numQueries": np.int64(len(query)),
        "posDistThr": thr["posDistThr"],
        "posDistSqThr": thr["posDistSqThr"],
        "dataset": struct_names(bench, split)[1],
        "nonTrivPosDistSqThr": thr["nonTrivPosDistSqThr"],
        "utmDb": _utm(db, place),
        "utmQ": _utm(query, place),
    }
    if place:
        struct["gpsDb"] = np.stack([db["lat"].to_numpy(np.float64), db["lon"].to_numpy(np.float64)])
        struct["gpsQ"] = np.stack([query["lat"].to_numpy(np.float64), query["lon"].to_numpy(np.float64)])
    return struct


@dataclass
class StructOutputs:
    struct_files: list[Path]
    seqbounds_files: list[Path]
    split_inds: Path
    positives_pickle: Path | None


def write_struct_files(table: pa.Table, bench: Benchmark, out_dir: Path) -> StructOutputs:
    """Write the struct file and seqBounds files of every split in the table, the splitInds and
    (heading-aware benchmarks) the positives pickle into ``out_dir``."""
    out_dir = Path(out_dir)
    in_table = set(table.column("split").to_pylist())
    present = [s for s in SPLITS if bench.split(s) is not None and s in in_table]
    structs, bounds_files, inds, offsets = [], [], {}, {"db": 0, "query": 0}
    positives_pickle = None
    for split in present:
        rows = {role: role_rows(table, split, role) for role in ("db", "query")}
        name, dataset = struct_names(bench, split)
        path = out_dir / name
        atomic_write_bytes(path, savemat_bytes({"dbStruct": db_struct(bench, split, rows["db"], rows["query"])}))
        structs.append(path)
        for role, df in rows.items():
            bounds_path = out_dir / "seqBoundsFiles" / f"{bench.struct_stem}_{split}_{ROLE_FILE_NAMES[role]}_seqBounds.txt"
            write_seqbounds(bounds_path, df[["seq_start", "seq_end"]].to_numpy())
            bounds_files.append(bounds_path)
        inds[split] = [offsets[r] + np.arange(len(rows[r]), dtype=np.int64) for r in ("db", "query")]
        offsets = {r: offsets[r] + len(rows[r]) for r in ("db", "query")}
        if split == "test" and bench.rules.max_heading_deg is not None:
            positives_pickle = out_dir / "saved_positives" / f"nuscene_positives_{dataset}.pkl"
            positives = object_vector([np.asarray(p) for p in rows["query"]["positives"]])
            atomic_write_bytes(positives_pickle, pickle.dumps(positives, protocol=4))
    # Splits a benchmark lacks fall back to test (val) / the first split, as both code bases do.
    fallback = inds.get("test") or inds[present[0]]
    split_inds = {key: object_vector(inds.get(split, fallback)) for key, split in zip(SPLIT_INDS_KEYS, SPLITS)}
    split_inds_path = out_dir / f"{bench.struct_stem}_splitInds.npz"
    atomic_write_bytes(split_inds_path, npz_bytes(split_inds))
    return StructOutputs(structs, bounds_files, split_inds_path, positives_pickle)

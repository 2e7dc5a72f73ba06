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
  them at ``data/`` here), opened on every path of its loader, so without them no benchmark
  loads: ``nordland_raw_<season>_384.npy``, ``oxford2_raw_<split>_<database|query>_384.npy``,
  ``oxford_hard_<split>_raw_<database|query>_384.npy``, ``nuscene_<database|query>_raw_large_384.npy``:
  float32 N x 3 x 384 x 384, ImageNet mean/std (dataset_generation/nuscene/6_create_nuscene_np.py),
  rows in struct-file order. It ``np.load``s them with ``mmap_mode="r"`` and then ``np.vstack``s
  them (train and test arrays of each role), which reads every array into memory.

Nordland. ``--dataset nordland-sw`` stacks summer over spring (database) and winter over fall
(queries) and indexes them with ``trainInds = arange(0, 15000)`` and ``testInds = len(summer) +
arange(15100, 18100)`` (``nordland-sf`` the other way round), so all four season arrays are written
and each has all 27,592 rows of the Nordland-clean list (row = place index), whatever frames the
user has. Rows of frames in no split of the export are never written: they read as zeros, and on
file systems with sparse files (ext4, xfs, tmpfs, ...) they take no disk space. A copy must keep
them sparse (``cp --sparse=always``, ``rsync -S``, ``tar -S``); any other copy writes the full size.

nuScenes follows dataset_generation/nuscene/ (d6dfefa):
- 3_create_nuscene_db_struct.py: ``whichSet`` "large", ``dataset`` "nuscene_large", thresholds
  10 / 100 / 25, image names ``nuscene_large_<database|query>/<timestamp>.jpg`` listed with
  ``sorted(glob(...))`` (so rows are in timestamp order across all scenes of a role, not scene by
  scene), ``utmDb``/``utmQ`` rows (x, y) and ``rotationDb``/``rotationQ`` 4 x N quaternions
  (w, x, y, z) of the ego pose, which its 5_gt_generate.py reads. Ours: (x, y) = the camera's
  (easting, northing), and a yaw-only quaternion whose +x axis (the ego frame's forward) points
  along the camera's heading: our frame table keeps the camera's heading, not the ego's pitch and
  roll. 5_gt_generate.py uses only the ground-plane direction of ``R @ [0, 1, 0]`` and angles
  between frames, so the angles it sees are our heading differences.
- 4_create_seq_bounds.py: a role's frames in timestamp order are cut only where two consecutive
  timestamps are more than 1 s (1,000,000 us) apart; a sequence can therefore span consecutive
  scenes of one log. This export follows that rule (``authors_seqbounds``); our own split table
  keeps one run per scene (seqvpr/splits.py), see README "Use with ... Adapt-STFormer".
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
    NORDLAND_CLEAN_ROWS, NORDLAND_RANGES, SplitRows, check_places, count_positive_mismatches, covers_exactly, nordland_seasons,
    radius_positives, single_traversal, split_rows, write_info,
)
from seqvpr.benchmarks import Benchmark
from seqvpr.seqbounds import format_seqbounds, run_bounds
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
RAW_FRAME_BYTES = 3 * IMAGE_SIZE * IMAGE_SIZE * 4  # one float32 3 x 384 x 384 row
NUSCENES_MAX_GAP_US = 1_000_000  # 4_create_seq_bounds.py: np.where(differences > 1000000)
# --seqL of its parser default and of every sbatch file (svpr/utils/utils.py build_svpr_parser). Its
# datasets.py getSeqInds pads a window that meets a sequence's start with the frames after the
# sequence's end: a sequence shorter than seqL takes frames of the next one, and the role's last
# raises IndexError (past the array).
AUTHORS_SEQ_L = 5


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
            struct[key] = np.array(nuscenes_image_names(rows, role), dtype=object).reshape(-1, 1)
        for suffix, rows in (("Db", part.db), ("Q", part.query)):
            struct[f"utm{suffix}"] = np.stack([rows["easting"].to_numpy(np.float64), rows["northing"].to_numpy(np.float64)])
            struct[f"rotation{suffix}"] = heading_quaternions(rows["heading_deg"].to_numpy(np.float64)).T
    else:
        # The dataset field of its Oxford/Nordland files is not readable here (binary files in
        # its repository); we use the file stem without the split, as seqNet's files do.
        struct["whichSet"], struct["dataset"] = part.split, "nordland" if bench.name == "nordland" else name.rsplit("_", 1)[0]
    return struct


def nuscenes_image_names(rows: pd.DataFrame, role: str) -> list[str]:
    """3_create_nuscene_db_struct.py's names: ``nuscene_large_<database|query>/<timestamp>.jpg``."""
    return [f"{NUSCENES_DATASET}_{ROLE_FILE_NAMES[role]}/{int(t)}.jpg" for t in rows["timestamp_us"]]


def heading_quaternions(heading_deg: np.ndarray) -> np.ndarray:
    """N x 4 (w, x, y, z) rotations about the map's z axis whose +x axis points along the compass
    ``heading_deg`` (clockwise from north; map x = east, y = north): yaw = 90 - heading."""
    yaw = np.radians(90.0 - np.asarray(heading_deg, dtype=np.float64))
    zeros = np.zeros_like(yaw)
    return np.stack([np.cos(yaw / 2), zeros, zeros, np.sin(yaw / 2)], axis=1)


def authors_seqbounds(timestamps_us: np.ndarray) -> np.ndarray:
    """4_create_seq_bounds.py: frames in timestamp order, a new sequence wherever the next
    timestamp is more than 1 s later; N x 2 ``[start, end)`` per frame."""
    t = np.asarray(timestamps_us, dtype=np.int64)
    return run_bounds([0] * len(t), np.diff(t, prepend=t[:1]), NUSCENES_MAX_GAP_US)


def nuscenes_authors_order(part: SplitRows, source) -> tuple[SplitRows, np.ndarray, dict]:
    """The split's rows in the authors' order (each role sorted by image name, i.e. timestamp),
    with seq bounds by their rule; returns the reordered rows, the queries' positives as indices
    into the reordered database (the rows' positive columns are renumbered too), and how many
    sequences span scenes."""
    ordered = {}
    for role, rows in (("db", part.db), ("query", part.query)):
        names = nuscenes_image_names(rows, role)
        if len(set(names)) != len(names):
            dup = pd.Series(names)[pd.Series(names).duplicated()].iloc[0]
            raise DataError(source, f"two {role} frames share the timestamp of {dup!r}: the authors' file names cannot tell them apart")
        rows = rows.iloc[np.argsort(np.array(names), kind="stable")].reset_index(drop=True)
        bounds = authors_seqbounds(rows["timestamp_us"].to_numpy())
        rows["seq_start"], rows["seq_end"] = bounds[:, 0], bounds[:, 1]
        ordered[role] = rows
    new_db_index = np.empty(len(part.db), dtype=np.int64)
    new_db_index[ordered["db"]["order"].to_numpy()] = np.arange(len(part.db))
    query = ordered["query"]
    for column in ("positives", "nontrivial_positives"):
        query[column] = [np.sort(new_db_index[np.asarray(p, dtype=np.int64)]) for p in query[column]]
    positives = object_vector(list(query["positives"]))
    runs = {ROLE_FILE_NAMES[role]: {"sequences": int(len(np.unique(rows["seq_start"]))),
                                    "scenes": int(rows["traversal"].nunique()),
                                    "sequences_spanning_scenes": int(rows.groupby("seq_start")["traversal"].nunique().gt(1).sum()),
                                    "shortest_sequence": int((rows["seq_end"] - rows["seq_start"]).min()) if len(rows) else 0}
            for role, rows in ordered.items()}
    return SplitRows(part.split, ordered["db"], ordered["query"]), positives, runs


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


def _season_rows(bench: Benchmark, parts: list[SplitRows]) -> dict[str, pd.DataFrame]:
    """Nordland: every season any split names -> its frames in the export's splits, one per place."""
    seasons = {}
    for season in nordland_seasons(bench):
        rows = [r[r[bench.select_by] == season] for part in parts for r in (part.db, part.query)]
        seasons[season] = (pd.concat(rows).drop_duplicates("place_index") if rows
                           else pd.DataFrame({"place_index": np.zeros(0, np.int64), "image_path": []}))
    return seasons


def _write_raw(data_dir: Path, bench: Benchmark, parts: list[SplitRows], data_root: Path, source) -> dict[str, tuple[int, int]]:
    """Write the raw_384 arrays; returns file name -> (rows, rows written)."""
    written = {}
    if bench.name == "nordland":
        for season, rows in _season_rows(bench, parts).items():
            name = f"nordland_raw_{season}{RAW_SUFFIX}"
            place = rows["place_index"].to_numpy()
            check_places(place, season, source)
            write_raw_array(data_dir / name, data_root, rows["image_path"].tolist(), NORDLAND_CLEAN_ROWS, place)
            written[name] = (NORDLAND_CLEAN_ROWS, len(place))
        return written
    for part in parts:
        if struct_file_name(bench, part.split, source) is None:
            continue
        for role, name in raw_array_names(bench, part.split).items():
            rows = getattr(part, role)
            write_raw_array(data_dir / name, data_root, rows["image_path"].tolist())
            written[name] = (len(rows), len(rows))
    return written


def loader_needs(bench: Benchmark, parts: list[SplitRows], arrays: dict[str, tuple[int, int]]) -> dict:
    """Disk and memory the authors' loader needs for the raw_384 arrays (``arrays``: name ->
    (rows, rows written)). Memory, in training (svpr_main.py --mode train, its largest case):
    get_datasets.py ``np.vstack``s every array it opens (all of them: Nordland's four seasons, both
    splits' arrays of each role); WholeDatasetFromStruct and QueryDatasetFromStruct each copy the
    training split's database and query rows (``dbDescs[inds]``), the validation set (its test
    split) copies that split's rows once more. Passing copies (the concatenation) come on top."""
    gib = lambda rows: round(rows * RAW_FRAME_BYTES / 2**30, 2)
    total = sum(rows for rows, _ in arrays.values())
    written = sum(n for _, n in arrays.values())
    rows_of = {p.split: len(p.db) + len(p.query) for p in parts}
    if bench.name == "nordland":  # the fixed ranges, not our split's size
        rows_of = {s: 2 * (end - start) for s, (start, end) in NORDLAND_RANGES.items()}
    test = rows_of.get("test", 0)
    train = rows_of.get("train", test)  # nuscene: its one struct file serves every split
    return {"frame_bytes": RAW_FRAME_BYTES, "disk_apparent_gib": gib(total), "disk_allocated_gib": gib(written),
            "memory_gib": gib(total + 2 * train + test),
            "memory_note": ("training: get_datasets.py np.vstack()s every raw array it opens into memory (all of them), "
                            "then holds the training split's database and query rows twice more and the test split's once "
                            "(its validation set); passing copies come on top")}


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
    parts, files, checks, extra = [], [], {}, {}
    for part in split_rows(table, bench):
        name = struct_file_name(bench, part.split, source)
        if name is None:
            continue
        positives = None
        if bench.name == "nuscenes":
            part, positives, extra["seqbounds"] = nuscenes_authors_order(part, source)
            for role, rows in (("db", part.db), ("query", part.query)):
                path = struct_dir / "seqBoundsFiles" / f"{NUSCENES_DATASET}_{ROLE_FILE_NAMES[role]}_seqbounds.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(format_seqbounds(rows[["seq_start", "seq_end"]].to_numpy()))
            pickle_path = struct_dir / "saved_positives" / f"nuscene_positives_{NUSCENES_DATASET}.pkl"
            pickle_path.parent.mkdir(parents=True, exist_ok=True)
            pickle_path.write_bytes(pickle.dumps(positives, protocol=4))
        struct = _struct(bench, part, name)
        (struct_dir / name).write_bytes(savemat_bytes({"dbStruct": struct}))
        files.append(name)
        parts.append(part)
        checks[part.split] = _positive_check(bench, struct, part, positives)
    dataset, prefix = MAPPINGS[bench.name]
    info = {"consumer": "ai4ce/Adapt-STFormer", "benchmark": bench.name, "dataset": dataset,
            "struct_files": files, "positive_mismatches": checks,
            "setup": "copy structFiles/ into the Adapt-STFormer code folder (it opens ./structFiles/)",
            "commands": commands(bench), **extra}
    if bench.name == "nuscenes":
        info["row_order"] = "each role in timestamp order (3_create_nuscene_db_struct.py sorts the image names)"
        info["pose_note"] = ("utmDb/utmQ: the camera's UTM easting, northing; rotationDb/rotationQ: (w, x, y, z) rotations "
                             "about the vertical whose +x (ego forward) axis has the camera's heading (no pitch or roll)")
    reasons, fixes = [], []
    if data_root is None:
        planned = _planned_arrays(bench, parts)
        needs = loader_needs(bench, parts, planned)
        reasons.append("its get_datasets.py opens the raw_384 input arrays on every path and this export has none (raw_inputs is off)")
        fixes.append(f"seqvpr export --format adapt-stformer --benchmark {bench.name} --raw-inputs "
                     f"(or raw_inputs: true in the {bench.name}_adapt_stformer_export config); it writes "
                     f"{sorted(planned)} into data/: {needs['disk_allocated_gib']} GiB on disk "
                     f"({needs['disk_apparent_gib']} GiB apparent), and the authors' loader needs about "
                     f"{needs['memory_gib']} GiB of memory")
        info.update(raw_384_arrays=[], loader_needs=needs)
    else:
        arrays = _write_raw(folder / "data", bench, parts, data_root, source)
        needs = loader_needs(bench, parts, arrays)
        sparse = sorted(n for n, (rows, written) in arrays.items() if written < rows)
        info.update(raw_384_arrays=sorted(arrays), loader_needs=needs,
                    edit=(f"in get_datasets.py replace {prefix!r} with the absolute path of this folder's data/, or leave "
                          f"it unchanged and make {prefix.rstrip('/')} a symbolic link to this folder's data/"),
                    raw_rows={n: {"rows": rows, "rows_written": written} for n, (rows, written) in arrays.items()},
                    sparse_files=sparse,
                    sparse_note=("" if not sparse else
                                 f"{sparse} have rows no frame of this export fills (zeros, never written): on file systems "
                                 f"with sparse files they take {needs['disk_allocated_gib']} GiB of {needs['disk_apparent_gib']} GiB. "
                                 "Copy with cp --sparse=always, rsync -S or tar -S: any other copy writes the full size."))
    short = {role: runs["shortest_sequence"] for role, runs in extra.get("seqbounds", {}).items()
             if runs["shortest_sequence"] < AUTHORS_SEQ_L}
    if short:
        reasons.append(f"the {sorted(short)} role(s) have sequences shorter than its --seqL {AUTHORS_SEQ_L} (shortest: {short}): "
                       "its getSeqInds fills their windows with frames after the sequence's end (another sequence, "
                       "or past the array: IndexError)")
        fixes.append(f"drop the scenes whose frames form sequences of fewer than {AUTHORS_SEQ_L} frames, or run it with a smaller --seqL")
    if bench.name == "nordland":
        off = sorted(p.split for p in parts if not covers_exactly(p, NORDLAND_RANGES[p.split]))
        info["fixed_ranges_match"] = {p.split: p.split not in off for p in parts}
        if off:
            used = {s: NORDLAND_RANGES[s] for s in NORDLAND_STRUCT_FILES}
            held = {p.split: [len(p.db), len(p.query)] for p in sorted(parts, key=lambda p: p.split) if p.split in off}
            reasons.append(f"its Nordland loader takes the rows of its fixed ranges {used} whatever the struct file "
                           f"lists; the {off} split(s) here hold other places ({held} database/query frames): with "
                           "fewer frames than the range it fails (test.py's getRecallAtN and QueryDatasetFromStruct "
                           "index the struct's queries by the range's rows: IndexError), with as many it scores other frames")
            fixes.append("have every frame of those ranges and keep the benchmark's default index ranges")
    info["consumer_can_load"] = not reasons
    if reasons:
        info.update(cannot_load_because="; ".join(reasons), to_make_it_loadable="; ".join(fixes))
    write_info(folder, info)
    return info


def _planned_arrays(bench: Benchmark, parts: list[SplitRows]) -> dict[str, tuple[int, int]]:
    """The arrays ``--raw-inputs`` would write, name -> (rows, rows written), without writing them."""
    if bench.name == "nordland":
        return {f"nordland_raw_{season}{RAW_SUFFIX}": (NORDLAND_CLEAN_ROWS, len(rows))
                for season, rows in _season_rows(bench, parts).items()}
    return {name: (len(getattr(p, role)), len(getattr(p, role))) for p in parts
            for role, name in raw_array_names(bench, p.split).items()}

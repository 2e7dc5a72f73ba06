"""A seqNet working directory (oravus/seqNet, read at commit 6b83d36): run its ``main.py`` with
this folder as the current directory and it finds everything by the names it hard-codes.

What seqNet opens (get_datasets.py, datasets.py):
- ``./structFiles/<name>.db`` read by ``parse_db_struct`` (scipy ``loadmat(f)["dbStruct"][0, 0]``);
  names: Nordland ``nordland_{train_d-40_d2-10,val_d-1_d2-1,test_d-1_d2-1}.db``; Oxford
  ``oxford-v1.0_<ref>_<qry>_train_d-20_d2-5.db`` and ``..._test_d-10_d2-5.db`` (its val set is
  the test file);
- ``./data/descData/<descType>/nordland-clean-<season>.npy``: one row per Nordland-clean frame,
  indexed by the clean-list position (our ``place_index``); seqNet slices them with the fixed
  ranges ``arange(15000)`` (train), ``arange(15100, 18100)`` (test), ``arange(18200, 21200)``
  (val), summer/winter for ``--dataset nordland-sw`` and spring/fall for ``nordland-sf``, so
  every season's array has all 27,592 rows of the clean list whatever frames the user has;
- ``./data/descData/<descType>/oxford_<run>_stereo_left.npy``: one row per kept frame of a
  RobotCar run, in time order, and ``./structFiles/oxford-v1.0_splitInds.npz`` (``trainInds``,
  ``valInds``, ``testInds``: object arrays ``[ref indices, query indices]`` into those arrays;
  ``tolist()`` of each is what the loader assigns);
- positives: ``NearestNeighbors.radius_neighbors(utmQ.T, posDistThr)`` on ``utmDb.T``.

seqNet reads seqBounds files only for MSLS; for the other datasets every role is one run, so the
``structFiles/seqBoundsFiles/`` written here (MSLS naming) document our runs without being read.
Rows of a Nordland season whose frame no split of the export holds (a frame the user does not
have, or a place outside every split) are NaN in every column, counted per season in export.json
(``rows_without_descriptors``, and within each of seqNet's ranges): a real descriptor is
L2-normalised, so a NaN row cannot be mistaken for one, and a protocol that reads it yields NaN
distances rather than plausible garbage.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from schemas.struct_file import ROLE_FILE_NAMES, SPLIT_INDS_KEYS
from schemas.split_table import SPLITS
from seqvpr.errors import DataError
from seqvpr.exports.common import (
    NORDLAND_CLEAN_ROWS, NORDLAND_RANGES, SplitRows, check_places, count_positive_mismatches, covers_exactly, nordland_seasons,
    radius_positives, save_npy, single_traversal, split_rows, write_info,
)
from seqvpr.benchmarks import Benchmark
from seqvpr.seqbounds import format_seqbounds
from seqvpr.structfile import db_struct, npz_bytes, object_vector, savemat_bytes

CONSUMER = "seqnet"
NORDLAND_STRUCT_FILES = {"train": "nordland_train_d-40_d2-10.db", "val": "nordland_val_d-1_d2-1.db",
                         "test": "nordland_test_d-1_d2-1.db"}
# get_datasets.py: --dataset nordland-sw loads summer (ref) / winter (qry), nordland-sf spring / fall,
# and slices both with NORDLAND_RANGES for every split.
NORDLAND_DATASETS = {"nordland-sw": ("summer", "winter"), "nordland-sf": ("spring", "fall")}
OXFORD_DATASET = "oxford-v1.0"
OXFORD_STRUCT_SUFFIX = {"train": "_train_d-20_d2-5.db", "test": "_test_d-10_d2-5.db"}
OXFORD_STRUCT_FILES_SPLITS = tuple(OXFORD_STRUCT_SUFFIX)
# seqNet's Oxford loader hard-codes this pair of runs (get_datasets.py).
OXFORD_RUNS = ("2015-03-17-11-08-44", "2014-12-16-18-44-24")
# benchmark -> seqNet dataset family; others have no seqNet layout (seqNet has one db and one
# query traversal per dataset, Oxford-easy/hard change them between splits).
MAPPINGS = {"nordland": "nordland", "oxford_seqnet": "oxford"}


def supports(benchmark: str) -> bool:
    return benchmark in MAPPINGS


def _struct(bench: Benchmark, part: SplitRows, dataset: str) -> dict:
    struct = db_struct(bench, part.split, part.db, part.query)
    struct["whichSet"], struct["dataset"] = part.split, dataset
    return struct


def _positive_check(struct: dict, part: SplitRows) -> dict:
    """seqNet's evaluation and training positives, derived from the struct we wrote."""
    db, q = np.atleast_2d(struct["utmDb"]).T, np.atleast_2d(struct["utmQ"]).T
    trivial = radius_positives(db, q, float(struct["posDistThr"]))
    nontrivial = radius_positives(db, q, float(struct["nonTrivPosDistSqThr"]) ** 0.5)
    return {"positives": count_positive_mismatches(trivial, part.query["positives"]),
            "nontrivial_positives": count_positive_mismatches(nontrivial, part.query["nontrivial_positives"])}


def _seqbounds(folder: Path, stem: str, part: SplitRows) -> None:
    for role, rows in (("db", part.db), ("query", part.query)):
        path = folder / "structFiles" / "seqBoundsFiles" / f"{stem}_{part.split}_{ROLE_FILE_NAMES[role]}_seqBounds.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(format_seqbounds(rows[["seq_start", "seq_end"]].to_numpy()))


def _nordland(folder: Path, bench: Benchmark, parts: list[SplitRows], descriptors, desc_dir: Path, source) -> dict:
    by_season: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {s: [] for s in nordland_seasons(bench)}
    checks, ranges = {}, {}
    for part in parts:
        struct = _struct(bench, part, "nordland")
        (folder / "structFiles" / NORDLAND_STRUCT_FILES[part.split]).write_bytes(savemat_bytes({"dbStruct": struct}))
        _seqbounds(folder, "nordland", part)
        checks[part.split] = _positive_check(struct, part)
        for role, rows in (("db", part.db), ("query", part.query)):
            for season, idx in rows.groupby(bench.select_by, sort=True).indices.items():
                by_season.setdefault(season, []).append((rows["place_index"].to_numpy()[idx], descriptors[(part.split, role)][idx]))
        ranges[part.split] = covers_exactly(part, NORDLAND_RANGES[part.split])
    width = next(iter(descriptors.values())).shape[1]
    coverage, absent, present = {}, {}, {}
    for season, chunks in sorted(by_season.items()):
        places = np.concatenate([p for p, _ in chunks]) if chunks else np.zeros(0, np.int64)
        check_places(places, season, source)
        array = np.full((NORDLAND_CLEAN_ROWS, width), np.nan, dtype=np.float32)
        for p, d in chunks:
            array[p] = d
        save_npy(desc_dir / f"nordland-clean-{season}.npy", array)
        present[season] = np.unique(places)
        coverage[season] = _index_ranges(present[season])
        absent[season] = NORDLAND_CLEAN_ROWS - len(present[season])
    in_ranges = {dataset: {split: {season: int(end - start - np.isin(np.arange(start, end), present[season]).sum())
                                   for season in seasons if season in present}
                           for split, (start, end) in NORDLAND_RANGES.items()}
                 for dataset, seasons in NORDLAND_DATASETS.items()}
    return {"positive_mismatches": checks, "seqnet_fixed_ranges_match": ranges,
            "season_rows": NORDLAND_CLEAN_ROWS, "rows_with_descriptors": coverage, "rows_without_descriptors": absent,
            "rows_without_descriptors_in_seqnet_ranges": in_ranges,
            "absent_rows": (f"every nordland-clean-<season>.npy has all {NORDLAND_CLEAN_ROWS} rows of the Nordland-clean list "
                            "(row = place index); a row whose frame is in no split of this export is NaN in every column")}


def _index_ranges(values: np.ndarray) -> list[list[int]]:
    """Sorted unique integers as ``[start, end)`` runs."""
    breaks = np.flatnonzero(np.diff(values) != 1) + 1
    return [[int(r[0]), int(r[-1]) + 1] for r in np.split(values, breaks) if len(r)]


def _traversal_array(rows: list[pd.DataFrame]) -> pd.DataFrame:
    """All frames of one run used by any split, once each, in time order."""
    frames = pd.concat(rows, ignore_index=True).drop_duplicates("frame_id")
    return frames.sort_values(["timestamp_us", "frame_id"], kind="stable").reset_index(drop=True)


def _oxford(folder: Path, bench: Benchmark, parts: list[SplitRows], descriptors, desc_dir: Path, source) -> dict:
    runs = {(single_traversal(bench.split(p.split).db, p.split, "db", CONSUMER, source),
             single_traversal(bench.split(p.split).query, p.split, "query", CONSUMER, source)) for p in parts}
    if len(runs) != 1:
        raise DataError(source, f"seqNet uses one database and one query run for every split, the benchmark has {sorted(runs)}")
    ref, qry = runs.pop()
    stem = f"{OXFORD_DATASET}_{ref}_{qry}"
    used = [p for p in parts if p.split in OXFORD_STRUCT_FILES_SPLITS]
    if not used:
        raise DataError(source, f"seqNet reads only the {list(OXFORD_STRUCT_FILES_SPLITS)} splits of Oxford")
    arrays, inds, checks = {}, {}, {}
    for run, role in ((ref, "db"), (qry, "query")):
        frames = _traversal_array([getattr(p, role) for p in used])
        position = pd.Series(np.arange(len(frames)), index=frames["frame_id"])
        array = np.zeros((len(frames), descriptors[(used[0].split, role)].shape[1]), dtype=np.float32)
        for p in used:
            rows = getattr(p, role)
            at = position[rows["frame_id"]].to_numpy()
            array[at] = descriptors[(p.split, role)]
            inds.setdefault(p.split, {})[role] = at.astype(np.int64)
        arrays[run] = array
    for run, array in arrays.items():
        save_npy(desc_dir / f"oxford_{run}_stereo_left.npy", array)
    for p in used:
        struct = _struct(bench, p, f"{OXFORD_DATASET}_{ref}-{qry}")
        (folder / "structFiles" / f"{stem}{OXFORD_STRUCT_SUFFIX[p.split]}").write_bytes(savemat_bytes({"dbStruct": struct}))
        _seqbounds(folder, OXFORD_DATASET, p)
        checks[p.split] = _positive_check(struct, p)
    # seqNet evaluates "val" on the test struct file, so valInds repeat testInds (as its own npz).
    fallback = inds.get("test") or inds[used[0].split]
    split_inds = {key: object_vector([inds.get(s, fallback)["db"], inds.get(s, fallback)["query"]])
                  for key, s in zip(SPLIT_INDS_KEYS, SPLITS)}
    (folder / "structFiles" / f"{OXFORD_DATASET}_splitInds.npz").write_bytes(npz_bytes(split_inds))
    skipped = sorted(p.split for p in parts if p.split not in OXFORD_STRUCT_FILES_SPLITS)
    return {"positive_mismatches": checks, "runs": [ref, qry], "seqnet_hardcoded_runs_match": (ref, qry) == OXFORD_RUNS,
            "splits_seqnet_cannot_read": skipped}



def commands(bench: Benchmark, desc_type: str) -> list[str]:
    """The consumer commands, run inside this folder with seqNet's code at <seqNet>."""
    if MAPPINGS[bench.name] == "nordland":
        return [f"python <seqNet>/main.py --mode train --pooling seqnet --dataset nordland-sw --seqL 10 --w 5 --outDims 4096 --descType {desc_type}",
                f"python <seqNet>/main.py --mode test --pooling single --dataset nordland-sf --seqL 1 --split test --descType {desc_type}"]
    return [f"python <seqNet>/main.py --mode train --pooling seqnet --dataset {OXFORD_DATASET} --seqL 5 --w 3 --outDims 4096 --descType {desc_type}",
            f"python <seqNet>/main.py --mode test --pooling single --dataset {OXFORD_DATASET} --seqL 1 --split test --descType {desc_type}"]


def write_seqnet(folder: Path, table: pa.Table, bench: Benchmark, descriptors: dict, desc_type: str,
                 source: Path | str = "<split table>") -> dict:
    """Write the working directory into ``folder`` (an empty temporary folder); returns export.json."""
    if not supports(bench.name):
        raise DataError(source, f"no seqNet layout for benchmark {bench.name!r} (known: {sorted(MAPPINGS)})")
    folder = Path(folder)
    (folder / "structFiles").mkdir(parents=True, exist_ok=True)
    desc_dir = folder / "data" / "descData" / desc_type
    parts = split_rows(table, bench)
    if MAPPINGS[bench.name] == "nordland":
        checked = _nordland(folder, bench, parts, descriptors, desc_dir, source)
    else:
        checked = _oxford(folder, bench, parts, descriptors, desc_dir, source)
    info = {"consumer": "oravus/seqNet", "benchmark": bench.name, "descType": desc_type,
            "commands": commands(bench, desc_type), "cwd": "this folder", **checked, **_loadable(checked)}
    write_info(folder, info)
    return info


def _loadable(checked: dict) -> dict:
    """Whether seqNet reads our splits: its Nordland loader takes 15000 / 3000 / 3000 rows by its
    fixed ranges whatever the struct file lists (a split on other places mis-scores or fails in
    its recall code), and its Oxford loader opens files named by its hard-coded runs."""
    if "seqnet_fixed_ranges_match" in checked:
        off = sorted(s for s, match in checked["seqnet_fixed_ranges_match"].items() if not match)
        if not off:
            return {"consumer_can_load": True}
        return {"consumer_can_load": False,
                "cannot_load_because": (f"seqNet slices every season with its fixed ranges {NORDLAND_RANGES}; the {off} split(s) "
                                        "here hold other places, so its --split for them fails or mis-scores"
                                        + (" (the other splits load)" if len(off) < len(checked["seqnet_fixed_ranges_match"]) else "")),
                "to_make_it_loadable": ("have every frame of those ranges (all of Nordland-clean for the seasons of each split) "
                                        "and keep the benchmark's default index ranges")}
    if checked["seqnet_hardcoded_runs_match"] and not checked["splits_seqnet_cannot_read"]:
        return {"consumer_can_load": True}
    return {"consumer_can_load": False,
            "cannot_load_because": (f"seqNet's get_datasets.py opens the runs {list(OXFORD_RUNS)} and reads the train and test "
                                    f"struct files only; this export has runs {checked['runs']} and splits "
                                    f"{checked['splits_seqnet_cannot_read']} it cannot read"),
            "to_make_it_loadable": f"use the runs {list(OXFORD_RUNS)} (database, query) with train and test splits only"}

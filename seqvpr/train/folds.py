"""Route folds of a training split, for choosing a training setting without the test split.

A benchmark with no val split (Oxford-easy, as the Adapt-STformer authors split it) chooses its
kept epoch on the test split, as the authors' code does; a setting such as a margin chosen there
would be chosen on test too. `route_folds` cuts the training split itself into stretches of the
route: fold k holds the k-th contiguous stretch of the database (struct-file order, which follows
the route) and the queries whose positives lie there, so a model trained on one fold and evaluated
on another has never seen the places it is evaluated on. `scripts/cross_validate.py` trains a grid
of settings this way.
"""
from __future__ import annotations

import numpy as np

from seqvpr.data import take_rows
from seqvpr.seqbounds import run_bounds
from seqvpr.train.split_data import SplitData


def subset_bounds(bounds: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The [start, end) runs (N, 2) of the kept `rows` (sorted, unique) renumbered to their new
    positions, each run cut where the kept rows stop being consecutive (a window never joins frames
    that were not neighbours): `run_bounds` keyed by each row's old run, a skipped row a step over 1.
    Returns (len(rows), 2) int64."""
    rows = np.asarray(rows, dtype=np.int64)
    return run_bounds(bounds[rows, 0].tolist(), np.r_[0, np.diff(rows)], max_step=1)


def _renumber(indices, new_index: np.ndarray) -> np.ndarray:
    """Database indices mapped through `new_index` (-1: not in the fold), those outside dropped."""
    indices = np.asarray(indices, dtype=np.int64)
    mapped = new_index[indices[indices >= 0]]
    return mapped[mapped >= 0]


def route_folds(data: SplitData, folds: int = 2) -> list[SplitData]:
    """`data` cut into `folds` SplitData along the route: fold k's database is the k-th of `folds`
    equal contiguous stretches of database rows, its queries those whose median positive lies in it
    (queries with no positive are left out), with positives, non-trivial positives and negative
    candidates renumbered to the fold's database and dropped where they lie outside it. Token rows
    are views (`take_rows`), not read. Raises ValueError for fewer than 2 folds or a fold with no
    query that has a positive (too short a split)."""
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    n_db = len(data.db_bounds)
    centre = np.array([np.median(p) if len(p) else -1.0 for p in data.positives])
    edges = np.linspace(0, n_db, folds + 1).round().astype(np.int64)
    result = []
    for k in range(folds):
        db_rows = np.arange(edges[k], edges[k + 1])
        q_rows = np.flatnonzero((centre >= edges[k]) & (centre < edges[k + 1]))
        if len(q_rows) == 0:
            raise ValueError(f"fold {k + 1} of {folds} (database rows {edges[k]}-{edges[k + 1] - 1}) has no query "
                             f"with a positive: the split is too short for {folds} folds")
        new_index = np.full(n_db, -1, dtype=np.int64)
        new_index[db_rows] = np.arange(len(db_rows))
        negatives = [_renumber(data.negatives[q], new_index) for q in q_rows]
        padded = np.full((len(q_rows), max(1, max(len(n) for n in negatives))), -1, dtype=np.int64)
        for row, candidates in enumerate(negatives):
            padded[row, :len(candidates)] = candidates
        result.append(SplitData(
            db_tokens=take_rows(data.db_tokens, db_rows), q_tokens=take_rows(data.q_tokens, q_rows),
            db_bounds=subset_bounds(data.db_bounds, db_rows), q_bounds=subset_bounds(data.q_bounds, q_rows),
            positives=[_renumber(data.positives[q], new_index) for q in q_rows],
            nontrivial_positives=[_renumber(data.nontrivial_positives[q], new_index) for q in q_rows],
            negatives=padded,
            frame_ids=([data.frame_ids[i] for i in db_rows] + [data.frame_ids[n_db + q] for q in q_rows]
                       if data.frame_ids else []),
        ))
    return result

"""Ground-truth pairs between queries and database frames.

- positives: database frames within ``radius`` of the query (KD-tree radius search, distance
  <= radius), and for nuScenes also within ``max_heading_deg`` of its heading (on the circle);
- non-trivial positives: the same rule with the smaller non-trivial radius (seqNet's
  ``nonTrivPosDistSqThr`` is its square), used to mine the best positive during training;
- negative candidates: a bounded, seeded random sample of database frames farther than
  ``negative_radius``; training picks the hardest among them (seqNet's cached negatives).

Positions are N x D arrays: UTM metres, or for Nordland the 1-D ``place_index`` (Nordland-clean
index), where seqNet's test radius 1 makes frames i-1, i and i+1 positives of query i. Nothing here builds a query x database matrix: it scales to 100k.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from seqvpr.geometry import heading_difference_deg


@dataclass(frozen=True)
class PairRules:
    radius: float
    nontrivial_radius: float
    negative_radius: float
    max_heading_deg: float | None = None
    negatives_per_query: int = 1000
    seed: int = 0


def _as_points(positions) -> np.ndarray:
    points = np.asarray(positions, dtype=np.float64)
    return points.reshape(-1, 1) if points.ndim == 1 else points


def within_radius(db_tree: cKDTree, query_xy: np.ndarray, radius: float) -> list[np.ndarray]:
    """Sorted database indices within ``radius`` (inclusive) of every query."""
    if len(query_xy) == 0:
        return []
    if db_tree.n == 0:
        return [np.zeros(0, dtype=np.int64) for _ in range(len(query_xy))]
    hits = db_tree.query_ball_point(query_xy, r=radius, return_sorted=True)
    return [np.asarray(h, dtype=np.int64) for h in hits]


def filter_by_heading(candidates: list[np.ndarray], db_heading, query_heading, max_deg: float) -> list[np.ndarray]:
    """Keep candidates whose heading differs from the query's by at most ``max_deg`` degrees."""
    db_heading = np.asarray(db_heading, dtype=np.float64)
    query_heading = np.asarray(query_heading, dtype=np.float64)
    return [
        cand[heading_difference_deg(db_heading[cand], query_heading[q]) <= max_deg]
        for q, cand in enumerate(candidates)
    ]


def positives(db_positions, query_positions, radius: float, db_heading=None, query_heading=None,
              max_heading_deg: float | None = None, db_tree: cKDTree | None = None) -> list[np.ndarray]:
    """Per query, the sorted database indices that satisfy the distance (and heading) rule."""
    query_xy = _as_points(query_positions)
    tree = db_tree if db_tree is not None else cKDTree(_as_points(db_positions))
    found = within_radius(tree, query_xy, radius)
    if max_heading_deg is not None:
        found = filter_by_heading(found, db_heading, query_heading, max_heading_deg)
    return found


def negative_candidates(num_db: int, excluded: list[np.ndarray], sample: int, seed: int) -> np.ndarray:
    """num_queries x sample array of database indices outside each query's excluded set, drawn
    without replacement with a seeded generator; rows are sorted and padded with -1 when fewer
    candidates exist. Cost is O(sample + |excluded|) per query, independent of ``num_db``."""
    rng = np.random.default_rng(seed)
    out = np.full((len(excluded), sample), -1, dtype=np.int64)
    for q, skip in enumerate(excluded):
        available = num_db - len(skip)
        if available <= 0 or sample <= 0:
            continue
        draw = min(num_db, sample + len(skip))
        picked = rng.choice(num_db, size=draw, replace=False)
        picked = picked[~np.isin(picked, skip, assume_unique=True)][:sample]
        out[q, : len(picked)] = np.sort(picked)
    return out


@dataclass
class Pairs:
    """Pairs of one split: lists are per query, indices are database rows of the split."""

    positives: list[np.ndarray]
    nontrivial_positives: list[np.ndarray]
    negatives: np.ndarray  # num_queries x negatives_per_query, -1 padded

    def queries_without_positives(self) -> int:
        return sum(1 for p in self.positives if len(p) == 0)


def compute_pairs(db_positions, query_positions, rules: PairRules, db_heading=None, query_heading=None) -> Pairs:
    """Positives, non-trivial positives and cached negative candidates under ``rules``."""
    db_xy = _as_points(db_positions)
    query_xy = _as_points(query_positions)
    tree = cKDTree(db_xy)
    heading = dict(db_heading=db_heading, query_heading=query_heading, max_heading_deg=rules.max_heading_deg)
    pos = positives(db_xy, query_xy, rules.radius, db_tree=tree, **heading)
    nontrivial = positives(db_xy, query_xy, rules.nontrivial_radius, db_tree=tree, **heading)
    # Negatives exclude every frame near the query regardless of heading: a frame at the same
    # place facing elsewhere is ambiguous, not a safe negative.
    near = within_radius(tree, query_xy, rules.negative_radius)
    negatives = negative_candidates(len(db_xy), near, rules.negatives_per_query, rules.seed)
    return Pairs(pos, nontrivial, negatives)

"""Trajectory geometry: distance travelled, subsampling by distance, headings, route sections.

Positions are UTM (easting, northing) in metres; headings are compass bearings in degrees.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def cumulative_distance(xy: np.ndarray) -> np.ndarray:
    """Distance travelled along a trajectory up to each point (first point: 0)."""
    xy = np.asarray(xy, dtype=np.float64)
    if len(xy) == 0:
        return np.zeros(0)
    steps = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(steps)])


def subsample_by_distance(travelled: np.ndarray, separation: float) -> np.ndarray:
    """Indices of the points kept so that consecutive kept points are >= ``separation`` apart
    along the trajectory (greedy from the first point), e.g. metres for RobotCar or frames for
    Nordland. A separation <= 0 keeps every point."""
    travelled = np.asarray(travelled, dtype=np.float64)
    if separation <= 0 or len(travelled) == 0:
        return np.arange(len(travelled))
    if np.any(np.diff(travelled) < 0):
        raise ValueError("travelled distance must be non-decreasing")
    kept = [0]
    next_at = travelled[0] + separation
    while True:
        # Greedy: the first point at or beyond the next threshold; searchsorted keeps it O(k log n).
        i = int(np.searchsorted(travelled, next_at - 1e-9, side="left"))
        if i >= len(travelled):
            break
        kept.append(i)
        next_at = travelled[i] + separation
    return np.asarray(kept, dtype=np.int64)


def heading_difference_deg(a, b) -> np.ndarray:
    """Smallest angle between compass bearings, in [0, 180]: 359 vs 1 is 2 degrees."""
    diff = np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) % 360.0
    return np.minimum(diff, 360.0 - diff)


def route_fractions(reference_xy: np.ndarray) -> np.ndarray:
    """Where every reference point lies along the reference traversal, as a fraction of its length."""
    travelled = cumulative_distance(reference_xy)
    total = travelled[-1] if len(travelled) else 0.0
    return travelled / total if total > 0 else np.zeros(len(travelled))


def sections_of(fractions: np.ndarray, n_sections: int) -> np.ndarray:
    """Section number (1..n) of route fractions: the route cut into ``n_sections`` equal lengths."""
    return np.minimum((np.asarray(fractions) * n_sections).astype(np.int64), n_sections - 1) + 1


def assign_sections(xy: np.ndarray, reference_xy: np.ndarray, reference_sections: np.ndarray) -> np.ndarray:
    """Section (or any per-point value, e.g. route fraction) of each point = that of its nearest
    reference point (KD-tree)."""
    if len(xy) == 0:
        return np.zeros(0, dtype=np.int64)
    _, nearest = cKDTree(np.asarray(reference_xy, dtype=np.float64)).query(np.asarray(xy, dtype=np.float64))
    return np.asarray(reference_sections)[nearest]

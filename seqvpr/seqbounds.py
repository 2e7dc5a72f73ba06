"""Sequence bounds: every frame's contiguous run ``[start, end)`` and centred sequences inside it.

A run is a maximal stretch of consecutive rows (in split order) with the same key (traversal /
scene, route section) and no jump larger than ``max_step`` between neighbours. seqNet's
seqBounds files hold one ``start end`` line per frame; a sequence of length L around frame i is
centred on i and shifted (never truncated) so that it stays inside the run, as seqNet does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from seqvpr.atomic import atomic_write_text
from seqvpr.errors import DataError


def run_bounds(keys: list, steps: np.ndarray | None = None, max_step: float | None = None) -> np.ndarray:
    """N x 2 int64 ``[start, end)`` of each row's run. ``steps[i]`` is the distance from row i-1
    to row i (steps[0] is ignored); a step above ``max_step`` starts a new run."""
    n = len(keys)
    if n == 0:
        return np.zeros((0, 2), dtype=np.int64)
    new_run = np.zeros(n, dtype=bool)
    new_run[0] = True
    for i in range(1, n):
        if keys[i] != keys[i - 1]:
            new_run[i] = True
    if steps is not None and max_step is not None:
        steps = np.asarray(steps, dtype=np.float64)
        new_run[1:] |= steps[1:] > max_step
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:], n)
    run_of_row = np.cumsum(new_run) - 1
    return np.stack([starts[run_of_row], ends[run_of_row]], axis=1).astype(np.int64)


def centred_sequence(index: int, length: int, start: int, end: int) -> np.ndarray | None:
    """Indices of the length-L sequence centred on ``index`` (L//2 frames before it), shifted to
    stay inside ``[start, end)``; None when the run is shorter than L."""
    if end - start < length:
        return None
    first = min(max(index - length // 2, start), end - length)
    return np.arange(first, first + length, dtype=np.int64)


def has_full_sequence(bounds: np.ndarray, length: int) -> np.ndarray:
    """Rows whose centred sequence of ``length`` fits in their run without shifting (seqNet's
    ``seqL_filterData`` keeps only these)."""
    index = np.arange(len(bounds))
    first = index - length // 2
    return (first >= bounds[:, 0]) & (first + length <= bounds[:, 1])


def format_seqbounds(bounds: np.ndarray) -> str:
    """The seqBounds text format: one ``start end`` line per frame."""
    return "".join(f"{int(s)} {int(e)}\n" for s, e in bounds)


def write_seqbounds(path: Path, bounds: np.ndarray) -> None:
    atomic_write_text(path, format_seqbounds(bounds))


def read_seqbounds(path: Path) -> np.ndarray:
    """Parse and validate a seqBounds file (every row inside its own run, runs well formed)."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        parts = line.split()
        if len(parts) != 2 or not all(p.lstrip("-").isdigit() for p in parts):
            raise DataError(path, f"line {number}: expected 'start end', got {line!r}")
        rows.append((int(parts[0]), int(parts[1])))
    bounds = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
    index = np.arange(len(bounds))
    bad = np.flatnonzero((bounds[:, 0] > index) | (bounds[:, 1] <= index) | (bounds[:, 1] > len(bounds)))
    if len(bad):
        raise DataError(path, f"line {bad[0] + 1}: frame {bad[0]} outside its bounds {bounds[bad[0]].tolist()}")
    return bounds

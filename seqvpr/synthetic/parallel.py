"""Frames of the synthetic worlds rendered in worker processes.

Every frame of a generator depends only on its index (its own seeded generator, the shared world),
so the frames can be rendered in any order and by any process: the files written are the same
whatever the number of workers. Workers are forked, so the world is shared, not copied or pickled.
"""
from __future__ import annotations

import multiprocessing
from typing import Callable

_TASK: Callable[[int], object] | None = None  # the frame function the forked workers inherit


def _run(indices: range) -> list:
    return [_TASK(i) for i in indices]


def map_frames(task: Callable[[int], object], count: int, workers: int = 1, chunk: int = 256) -> list:
    """``[task(0), ..., task(count - 1)]``, computed by ``workers`` forked processes in chunks of
    ``chunk`` frames when ``workers`` > 1 (in this process otherwise)."""
    global _TASK
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if workers == 1 or count <= chunk:
        return [task(i) for i in range(count)]
    _TASK = task
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_run, [range(s, min(s + chunk, count)) for s in range(0, count, chunk)], chunksize=1)
    finally:
        _TASK = None
    return [item for part in parts for item in part]

"""Synthetic mini-worlds written in each dataset's exact on-disk format.

`generate(dataset, root, seed)` writes the dataset under `root` exactly as the real one is laid
out, so the loaders cannot tell it from real data. Ground truth that the real datasets do not ship
(true poses, undistorted images) goes to `truth_root`, outside the dataset folder.
"""
from __future__ import annotations

from pathlib import Path

from seqvpr.layout import DATASETS


def generate(dataset: str, root: str | Path, seed: int = 0, truth_root: str | Path | None = None, **scale) -> dict:
    """Write the synthetic `dataset` under `root`; returns a summary (counts per traversal)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    root = Path(root)
    truth_root = Path(truth_root) if truth_root is not None else root.parent / f"{root.name}_truth"
    if dataset == "robotcar":
        from seqvpr.synthetic import robotcar as module
    elif dataset == "nuscenes":
        from seqvpr.synthetic import nuscenes as module
    else:
        from seqvpr.synthetic import nordland as module
    return module.generate(root, seed=seed, truth_root=truth_root, **scale)

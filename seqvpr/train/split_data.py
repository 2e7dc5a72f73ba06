"""One split of a benchmark as training and evaluation read it: `SplitData`, and `load_split_data`,
which reads it from the split's shard folder with its token maps left in the shards."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from seqvpr.data import ShardFolder


@dataclass
class SplitData:
    """One split of a benchmark, in struct-file order (the split table's `order`). Tokens are read
    from the shards when indexed (`seqvpr.data.FrameArray`, see `load_split_data`) or held in memory."""

    db_tokens: np.ndarray  # (Ndb, n, D) float16, after the frozen blocks; or (Ndb, D) published frame descriptors
    q_tokens: np.ndarray  # (Nq, n, D) float16; or (Nq, D)
    db_bounds: np.ndarray  # (Ndb, 2) [start, end) runs
    q_bounds: np.ndarray
    positives: list  # per query: db indices within the radius (and heading) rule
    nontrivial_positives: list
    negatives: np.ndarray  # (Nq, K) negative candidates (outside the negative radius), -1 padded
    frame_ids: list = field(default_factory=list)  # database frames, then queries


def load_split_data(shard_dir) -> SplitData:
    """A split from its shard folder (`seqvpr.data.ShardFolder`): bounds, positives and the negative
    candidates in memory, token maps read from the shards when indexed (memory does not grow with
    the split)."""
    folder = ShardFolder(shard_dir)
    return SplitData(
        db_tokens=folder.tokens("db"), q_tokens=folder.tokens("query"), db_bounds=folder.bounds["db"],
        q_bounds=folder.bounds["query"], positives=folder.positives, nontrivial_positives=folder.nontrivial_positives,
        negatives=folder.negatives, frame_ids=folder.frame_ids["db"] + folder.frame_ids["query"],
    )

"""Training tuples and their loss, as the reference `QueryDatasetFromStruct` and `train.py`: a
query's positive and margin-violating negatives (`mine_tuple`), and a batch's triplet (or
OptiCorNet's quadruplet) loss (`batch_loss`)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from seqvpr.models.opticornet import quadruplet_loss
from seqvpr.train.config import TrainConfig
from seqvpr.train.model import SequenceModel, device_of, sequences
from seqvpr.train.split_data import SplitData


def mine_tuple(q_desc: np.ndarray, db_desc: np.ndarray, nontrivial: np.ndarray, candidates: np.ndarray,
               neg_cache: np.ndarray, negatives: int, sample: int, margin: float, rng: np.random.Generator):
    """(positive, negatives) of one query as the reference `QueryDatasetFromStruct.__getitem__`, or
    None when it has no non-trivial positive or no negative violates the margin.

    Positive: the non-trivial positive nearest in descriptor space. Negatives: `sample` candidates
    drawn with replacement, joined with the query's cached hard negatives; of their 10 x `negatives`
    nearest, those closer than d(q, p) + sqrt(margin) (Euclidean, as the reference), at most
    `negatives` of them."""
    candidates = candidates[candidates >= 0]
    if len(nontrivial) == 0 or len(candidates) == 0:
        return None
    d_pos = np.linalg.norm(db_desc[nontrivial] - q_desc, axis=1)
    positive = int(nontrivial[np.argmin(d_pos)])
    pool = np.unique(np.concatenate([neg_cache, rng.choice(candidates, sample)]).astype(np.int64))
    d_neg = np.linalg.norm(db_desc[pool] - q_desc, axis=1)
    nearest_first = np.argsort(d_neg, kind="stable")[: negatives * 10]
    violating = nearest_first[d_neg[nearest_first] < d_pos.min() + margin ** 0.5]
    if len(violating) == 0:
        return None
    return positive, pool[violating[:negatives]]


def batch_loss(model: SequenceModel, cfg: TrainConfig, data: SplitData, tuples: list, q_windows, db_windows):
    """The reference's batch loss over the queries, positives and negatives of a batch of tuples; summed
    triplet losses divided by the number of negatives, with margin or, seqNet, sqrt(margin)
    (`Recipe.sqrt_margin_in_loss`); OptiCorNet: its quadruplet loss per tuple."""
    device = device_of(model)
    if cfg.loss == "quadruplet":  # Eqs. 7-9 read only the two nearest mined negatives (mined nearest first)
        tuples = [(qi, p, negs[:2]) for qi, p, negs in tuples]
    queries = [qi for qi, _, _ in tuples]
    db_rows = [p for _, p, _ in tuples] + [n for _, _, negs in tuples for n in negs]
    q = model(sequences(data.q_tokens, q_windows, queries, device))
    others = model(sequences(data.db_tokens, db_windows, db_rows, device))
    positives, negatives = others[: len(tuples)], others[len(tuples):]
    if cfg.loss == "quadruplet":  # OptiCorNet's Eqs. 7-9 per tuple with its two nearest mined negatives
        return quadruplet_loss(q, positives, negatives[0::2], negatives[1::2], margin=cfg.margin)
    owner = torch.tensor([i for i, (_, _, negs) in enumerate(tuples) for _ in negs], device=device)
    margin = cfg.margin ** 0.5 if cfg.sqrt_margin_in_loss else cfg.margin
    return F.triplet_margin_loss(q[owner], positives[owner], negatives, margin=margin, reduction="sum") / len(owner)

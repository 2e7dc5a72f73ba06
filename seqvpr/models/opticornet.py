"""OptiCorNet (Li et al.) as its paper writes it: a 1D conv encoder over NetVLAD frame descriptors,
the Differentiable Sequence Delta (Eqs. 1-6), the quadruplet loss (Eqs. 7-9) and hierarchical
retrieval (Eqs. 10-12: shortlist by sequence descriptor, re-rank by the learned single-image
descriptors S1 along the aligned window).

Not stated in the paper, chosen here: encoder width C = 512 and LSTM width d = 512 (so R = D, the
"otherwise" case of Eq. 5), no activation after the encoder, gamma1 = gamma2 = 1, and margin m = 0.1
in the GPU recipe (seqNet's margin value, whose recipe the paper's follows) but 2.0 in the CPU budget:
on squared distances between unit vectors (range 0-4) 0.1 is small, the training loss reaches 0 and
training stops moving, and route-fold cross-validation on Oxford-easy's training split
(`scripts/cross_validate.py`, README "OptiCorNet's margin") chose 2.0 among 0.1-4.0: from 2.0 on the
hinge never closes on the mined quadruplets and every margin trains alike.
w in Eq. 1 has one entry per frame, so the model is tied to its sequence length (paper: l = 5).
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class DifferentiableSequenceDelta(nn.Module):
    """Eqs. 1-6: D = X . w (w anti-symmetric over the T frames, initialised to [-1, 0, ..., 0, +1]),
    H = LSTM(D) run on that single step, Z = H, R = Proj(D) if C != d else D, F = Z + R."""

    def __init__(self, dim: int, hidden: int, seq_len: int):
        super().__init__()
        if seq_len < 2:
            raise ValueError("temporal differencing needs at least 2 frames")
        init = torch.zeros(seq_len)
        init[0], init[-1] = -1.0, 1.0
        self.raw_weights = nn.Parameter(init)
        self.lstm = nn.LSTM(dim, hidden, num_layers=1, batch_first=True)
        self.project = nn.Linear(dim, hidden) if dim != hidden else None

    def weights(self) -> torch.Tensor:
        """w = (v - reverse(v)) / 2: anti-symmetric for any v."""
        return 0.5 * (self.raw_weights - self.raw_weights.flip(0))

    def forward(self, x):  # (B, T, C) -> (B, d)
        if x.shape[1] != self.raw_weights.shape[0]:
            raise ValueError(f"the differencing weights span {self.raw_weights.shape[0]} frames, got {x.shape[1]}")
        delta = torch.einsum("btc,t->bc", x, self.weights())  # Eq. 1
        z = self.lstm(delta.unsqueeze(1))[0].squeeze(1)  # Eqs. 2-4
        return z + (delta if self.project is None else self.project(delta))  # Eqs. 5-6


class OptiCorNet(nn.Module):
    """NetVLAD frame descriptors (B, T, dim) -> Conv1d encoder (kernel 3) -> DSD -> L2 norm.

    Stages named as the paper describes them and as Fig. 3 of Adapt-STformer splits a model: the
    encoder is its "spatial feature extraction" (`spatial`), DSD its "temporal differencing"
    (`temporal`)."""

    def __init__(self, dim: int = 4096, channels: int = 512, hidden: int = 512, seq_len: int = 5, kernel: int = 3):
        super().__init__()
        self.seq_len = seq_len
        self.spatial = nn.Conv1d(dim, channels, kernel_size=kernel, padding=kernel // 2)
        self.temporal = DifferentiableSequenceDelta(channels, hidden, seq_len)

    def forward(self, frames):
        x = self.spatial(frames.transpose(1, 2)).transpose(1, 2)
        return F.normalize(self.temporal(x), dim=-1)

    def frame_descriptors(self, frames: torch.Tensor) -> torch.Tensor:
        """S1: the encoder applied to each frame on its own, (N, dim) -> (N, channels) L2-normalised."""
        return F.normalize(self.spatial(frames.unsqueeze(-1)).squeeze(-1), dim=-1)


def quadruplet_loss(anchor, positive, negative1, negative2, margin: float = 0.1, gamma1: float = 1.0,
                    gamma2: float = 1.0):
    """Eqs. 7-9 with squared L2 distances, mean over the batch:
    gamma1 [m + d(a,p) - d(a,n1)]+ + gamma2 [m + d(a,p) - d(a,n2)]+."""
    d_ap = (anchor - positive).pow(2).sum(-1)
    d_an1 = (anchor - negative1).pow(2).sum(-1)
    d_an2 = (anchor - negative2).pow(2).sum(-1)
    return (gamma1 * F.relu(margin + d_ap - d_an1) + gamma2 * F.relu(margin + d_ap - d_an2)).mean()


def hierarchical_retrieval(q_seq: np.ndarray, db_seq: np.ndarray, q_frames: np.ndarray, db_frames: np.ndarray,
                           q_windows: np.ndarray, db_windows: np.ndarray, shortlist: int = 100, top: int = 20,
                           budget_bytes: int = 64 << 20) -> np.ndarray:
    """Eqs. 10-12: for each query, the `shortlist` db sequences nearest by sequence descriptor, re-ranked
    by the summed L2 distance of the learned S1 frame descriptors along the aligned windows.

    q_windows / db_windows: (N, L) frame indices of each sequence. Returns (Nq, top) db indices.
    Queries are processed in chunks sized so that no intermediate exceeds about `budget_bytes`.
    """
    if shortlist < top:
        raise ValueError(f"the shortlist ({shortlist}) must be at least as long as the ranking ({top})")
    shortlist = min(shortlist, len(db_seq))
    length, frame_dim = q_windows.shape[1], q_frames.shape[1]
    per_query = max(len(db_seq) * 8, shortlist * length * frame_dim * 8)
    chunk = max(1, budget_bytes // per_query)
    db_norms = (db_seq.astype(np.float64) ** 2).sum(1)
    ranked = np.empty((len(q_seq), min(top, shortlist)), dtype=np.int64)
    for start in range(0, len(q_seq), chunk):
        q = q_seq[start:start + chunk].astype(np.float64)
        distances = (q ** 2).sum(1, keepdims=True) + db_norms[None] - 2.0 * q @ db_seq.T.astype(np.float64)
        candidates = np.argpartition(distances, shortlist - 1, axis=1)[:, :shortlist]
        order = np.argsort(np.take_along_axis(distances, candidates, 1), axis=1, kind="stable")
        candidates = np.take_along_axis(candidates, order, 1)  # Eq. 10 ranking, nearest first
        del distances
        q_aligned = q_frames[q_windows[start:start + chunk]][:, None]  # (c, 1, L, D)
        db_aligned = db_frames[db_windows[candidates]]  # (c, K, L, D)
        scores = np.linalg.norm(q_aligned - db_aligned, axis=-1).sum(-1)  # Eq. 11
        rerank = np.argsort(scores, axis=1, kind="stable")[:, :top]  # Eq. 12
        ranked[start:start + chunk] = np.take_along_axis(candidates, rerank, 1)
    return ranked

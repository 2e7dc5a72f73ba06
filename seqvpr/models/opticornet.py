"""OptiCorNet (Li et al.): 1D conv encoder + Differentiable Sequence Delta, quadruplet loss, and
hierarchical retrieval (sequence shortlist, then SeqSLAM-style re-ranking with frame descriptors)."""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqvpr.models.sequence import frame_descriptors


class DifferentiableSequenceDelta(nn.Module):
    """Learnable anti-symmetric temporal differencing (a depthwise temporal kernel w with
    w[k] = -w[-k], initialised to the central difference), a one-layer LSTM and a residual projection."""

    def __init__(self, dim: int, kernel: int = 3):
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError("the differencing kernel needs an odd width")
        init = torch.zeros(kernel)
        init[0], init[-1] = -0.5, 0.5
        self.half_kernel = nn.Parameter(init.repeat(dim, 1))
        self.lstm = nn.LSTM(dim, dim, num_layers=1, batch_first=True)
        self.residual = nn.Linear(dim, dim)

    def kernel(self) -> torch.Tensor:
        return 0.5 * (self.half_kernel - self.half_kernel.flip(-1))

    def forward(self, x):  # (B, L, D)
        weight = self.kernel().unsqueeze(1)  # (D, 1, k): anti-symmetric by construction
        delta = F.conv1d(x.transpose(1, 2), weight, padding=weight.shape[-1] // 2, groups=x.shape[-1]).transpose(1, 2)
        refined, _ = self.lstm(delta)
        return refined + self.residual(x)


class OptiCorNet(nn.Module):
    def __init__(self, dim: int = 384, hidden: int = 512, out_dim: int = 512):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv1d(dim, hidden, kernel_size=3, padding=1), nn.ReLU())
        self.delta = DifferentiableSequenceDelta(hidden)
        self.head = nn.Linear(hidden, out_dim)

    def forward(self, tokens):
        x = self.encoder(frame_descriptors(tokens).transpose(1, 2)).transpose(1, 2)
        return F.normalize(self.head(self.delta(x).mean(1)), dim=-1)


def quadruplet_loss(anchor, positive, negative, negative2, margin1: float = 0.1, margin2: float = 0.05):
    """max(0, d(a,p) - d(a,n1) + m1) + max(0, d(a,p) - d(n1,n2) + m2), squared L2 distances, mean over batch."""
    d_ap = (anchor - positive).pow(2).sum(-1)
    d_an = (anchor - negative).pow(2).sum(-1)
    d_nn = (negative - negative2).pow(2).sum(-1)
    return (F.relu(d_ap - d_an + margin1) + F.relu(d_ap - d_nn + margin2)).mean()


def hierarchical_retrieval(q_seq: np.ndarray, db_seq: np.ndarray, q_frames: np.ndarray, db_frames: np.ndarray,
                           q_windows: np.ndarray, db_windows: np.ndarray, shortlist: int = 20, top: int = 20) -> np.ndarray:
    """Rank db sequences for each query: shortlist by sequence descriptor distance, then re-rank the
    shortlist by the SeqSLAM score, the summed frame-descriptor distance along the aligned window.

    q_windows / db_windows: (N, L) frame indices of each sequence. Returns (Nq, top) db indices.
    """
    distances = ((q_seq[:, None, :] - db_seq[None, :, :]) ** 2).sum(-1)
    candidates = np.argsort(distances, axis=1, kind="stable")[:, :shortlist]
    ranked = []
    for qi, cands in enumerate(candidates):
        q = q_frames[q_windows[qi]]  # (L, D)
        scores = [np.linalg.norm(q - db_frames[db_windows[c]], axis=1).sum() for c in cands]
        ranked.append(cands[np.argsort(scores, kind="stable")][:top])
    return np.array(ranked)

"""Sequence models. Every model maps a token sequence (B, L, n, D) to an L2-normalised descriptor.

Token-level models (Adapt-STformer, SeqVLAD, STformer and the ablations) read the CCT384 token
maps; descriptor-level models (SeqNet, JIST) pool each frame's tokens to one descriptor first.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from seqvpr.models.layers import (
    DeformableEncoderLayer,
    DenseCrossEncoderLayer,
    NetVLAD,
    SeqGeM,
    grid_reference_points,
)


def frame_descriptors(tokens: torch.Tensor) -> torch.Tensor:
    """(B, L, n, D) tokens -> (B, L, D) L2-normalised mean-pooled frame descriptors."""
    return F.normalize(tokens.mean(dim=2), dim=-1)


class AdaptSTformer(nn.Module):
    """Recurrent deformable transformer encoder -> SeqGeM over time -> SeqVLAD.

    At step t the query is the encoder output of step t-1 and the value is frame t's tokens; the
    first query is frame 0's tokens plus a learnable offset. Any sequence length works.
    `temporal="recurrent"` is the paper's model; "transformer" replaces the recurrence with a
    temporal transformer over the frames (Table III); `spatial="dense"` attends to all n tokens
    instead of K deformable points (Table IV); `temporal="seqgem"` skips the encoder (SeqGeM only).
    """

    def __init__(self, dim: int = 384, tokens: int = 576, heads: int = 8, points: int = 8, levels: int = 2,
                 clusters: int = 64, spatial: str = "deformable", temporal: str = "recurrent"):
        super().__init__()
        if spatial not in ("deformable", "dense") or temporal not in ("recurrent", "transformer", "seqgem"):
            raise ValueError(f"unknown Adapt-STformer variant spatial={spatial!r} temporal={temporal!r}")
        self.side = int(math.isqrt(tokens))
        if self.side * self.side != tokens:
            raise ValueError(f"tokens must form a square grid, got {tokens}")
        self.temporal = temporal
        self.query_offset = nn.Parameter(torch.zeros(1, tokens, dim))
        self.encoder = (DeformableEncoderLayer(dim, heads, points, levels) if spatial == "deformable"
                        else DenseCrossEncoderLayer(dim, heads))
        if temporal == "transformer":
            self.temporal_encoder = nn.TransformerEncoderLayer(dim, heads, 1024, batch_first=True)
        self.register_buffer("reference", grid_reference_points(self.side), persistent=False)
        self.seqgem = SeqGeM()
        self.vlad = NetVLAD(dim, clusters)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, length, n, d = tokens.shape
        reference = self.reference.expand(b, n, 2)
        shape = (self.side, self.side)
        if self.temporal == "seqgem":
            refined = tokens
        elif self.temporal == "recurrent":
            query, outputs = tokens[:, 0] + self.query_offset, []
            for t in range(length):
                query = self.encoder(query, reference, tokens[:, t], shape)
                outputs.append(query)
            refined = torch.stack(outputs, 1)
        else:
            spatial = self.encoder(tokens.flatten(0, 1), reference.repeat(length, 1, 1), tokens.flatten(0, 1), shape)
            per_token = spatial.view(b, length, n, d).transpose(1, 2).reshape(b * n, length, d)
            refined = self.temporal_encoder(per_token).view(b, n, length, d).transpose(1, 2)
        return self.vlad(self.seqgem(refined))


class SeqVLAD(nn.Module):
    """NetVLAD over all L x n tokens of the sequence (Mereu et al.)."""

    def __init__(self, dim: int = 384, clusters: int = 64):
        super().__init__()
        self.vlad = NetVLAD(dim, clusters)

    def forward(self, tokens):
        return self.vlad(tokens.flatten(1, 2))


class STformer(nn.Module):
    """Dense spatial attention per frame, then a temporal transformer with learned positions for a
    fixed sequence length, then NetVLAD over all tokens (Zhao et al.)."""

    def __init__(self, dim: int = 384, heads: int = 8, clusters: int = 64, seq_len: int = 5):
        super().__init__()
        self.seq_len = seq_len
        self.spatial = nn.TransformerEncoderLayer(dim, heads, 1024, batch_first=True)
        self.temporal = nn.TransformerEncoderLayer(dim, heads, 1024, batch_first=True)
        self.time_embedding = nn.Parameter(torch.zeros(1, seq_len, dim))
        self.vlad = NetVLAD(dim, clusters)

    def forward(self, tokens):
        b, length, n, d = tokens.shape
        if length != self.seq_len:
            raise ValueError(f"STformer is built for sequences of {self.seq_len} frames, got {length}")
        x = self.spatial(tokens.flatten(0, 1)).view(b, length, n, d)
        x = x.transpose(1, 2).reshape(b * n, length, d) + self.time_embedding
        x = self.temporal(x).view(b, n, length, d).transpose(1, 2)
        return self.vlad(x.flatten(1, 2))


class SeqNet(nn.Module):
    """1D temporal convolution over frame descriptors, then mean over time (Garg & Milford)."""

    def __init__(self, dim: int = 384, out_dim: int = 4096, width: int = 5):
        super().__init__()
        self.width = width
        self.conv = nn.Conv1d(dim, out_dim, kernel_size=width, bias=True)

    def forward(self, tokens):
        x = frame_descriptors(tokens).transpose(1, 2)  # (B, D, L)
        if x.shape[-1] < self.width:
            x = F.pad(x, (0, self.width - x.shape[-1]), mode="replicate")
        return F.normalize(self.conv(x).mean(-1), dim=-1)


class JIST(nn.Module):
    """SeqGeM over frame descriptors (Berton et al.), with a linear projection."""

    def __init__(self, dim: int = 384, out_dim: int = 512):
        super().__init__()
        self.project = nn.Linear(dim, out_dim)
        self.seqgem = SeqGeM()

    def forward(self, tokens):
        x = F.relu(self.project(frame_descriptors(tokens)))
        return F.normalize(self.seqgem(x), dim=-1)

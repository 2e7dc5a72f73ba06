"""The trained model: the CCT blocks after the cut, the pooled frame descriptor where the head reads
one, and the head (`SequenceModel`, `build_sequence_model`); sequence descriptors of a split and its
Recall@K (`describe`, `evaluate_recall`)."""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from seqvpr.data import collect, sequence_windows, take_rows
from seqvpr.embed.cct import CCTTail
from seqvpr.metrics import nearest, recall_at_k
from seqvpr.models import FIXED_LENGTH, build_model
from seqvpr.train.pooling import POOLED_DIM, GridWhitening, reads_pooled_tokens
from seqvpr.train.split_data import SplitData


class SequenceModel(nn.Module):
    """The trainable CCT blocks after the cut (per frame), optionally a pooled frame descriptor
    (`GridWhitening`, for heads standing in for another frame backbone), then the head."""

    def __init__(self, head: nn.Module, tail: CCTTail | None = None, pooling: GridWhitening | None = None):
        super().__init__()
        self.head = head
        self.tail = tail
        self.pooling = pooling

    @property
    def pooled(self) -> bool:
        return self.pooling is not None

    def final_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, n, D) cached tokens -> final CCT tokens (N, n, D), through the trainable blocks if any."""
        return tokens if self.tail is None else self.tail(tokens)

    def frames(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, n, D) cached tokens -> what the head reads per frame: final CCT tokens (N, n, D), or
        with `pooling` the frame descriptors (N, POOLED_DIM)."""
        tokens = self.final_tokens(tokens)
        return self.pooling(tokens) if self.pooled else tokens

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L, n, D) cached tokens -> (B, dim) descriptors."""
        if self.tail is None and not self.pooled:
            return self.head(tokens)
        return self.head(self.frames(tokens.flatten(0, 1)).unflatten(0, tokens.shape[:2]))


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def token_batches(tokens: np.ndarray, batch_size: int, device=None):
    """(<= batch_size, n, D) float32 tensors on `device` of consecutive frames of `tokens` (array or FrameArray)."""
    for i in range(0, len(tokens), batch_size):
        yield torch.from_numpy(np.asarray(tokens[i:i + batch_size], dtype=np.float32)).to(device)


def sequences(tokens: np.ndarray, windows: np.ndarray, rows, device=None) -> torch.Tensor:
    """(B, L, ...) float32 tensor of the frames of windows[rows], read from `tokens` (array or FrameArray)."""
    return torch.from_numpy(np.asarray(tokens[windows[rows]], dtype=np.float32)).to(device)


@torch.no_grad()
def frame_features(model: SequenceModel, tokens: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Every frame's features (`SequenceModel.frames`) computed once, so sequences that share frames
    do not recompute them: the cached tokens themselves with a frozen backbone and a token head.
    Read `batch_size` frames at a time; kept in memory up to `seqvpr.data.DESCRIPTOR_BUDGET` bytes,
    beyond in a temporary file (`seqvpr.data.collect`)."""
    if model.tail is None and not model.pooled:
        return tokens
    model.eval()
    out = collect(model.frames(batch).cpu().numpy().astype(np.float32 if model.pooled else np.float16)
                  for batch in token_batches(tokens, batch_size, device_of(model)))
    return tokens if out is None else out


@torch.no_grad()
def describe(model: SequenceModel, tokens: np.ndarray, windows: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Sequence descriptors (N, dim) float32 of every frame's window, `batch_size` sequences at a
    time, in memory or beyond `seqvpr.data.DESCRIPTOR_BUDGET` bytes in a temporary file (a FrameArray)."""
    model.eval()
    used = np.unique(windows)  # only the frames these windows read go through the trainable blocks
    frames, windows, device = frame_features(model, take_rows(tokens, used)), np.searchsorted(used, windows), device_of(model)
    out = collect(model.head(sequences(frames, windows, slice(i, i + batch_size), device)).cpu().numpy()
                  for i in range(0, len(windows), batch_size))
    return np.zeros((0, 1), np.float32) if out is None else out


def evaluate_recall(model, data: SplitData, length: int, ks=(1, 5, 10, 20)) -> dict[int, float]:
    db = describe(model, data.db_tokens, sequence_windows(data.db_bounds, length))
    q = describe(model, data.q_tokens, sequence_windows(data.q_bounds, length))
    return recall_at_k(nearest(db, q, max(ks)), data.positives, ks)


def head_kwargs(name: str, seq_len: int, model_kwargs: dict | None = None, published_features: bool = False) -> dict:
    """The head's constructor arguments: `seq_len` for fixed-length models, and for heads reading
    pooled CCT tokens an input (and, SeqNet, output) dimension of the CCT width, unless given;
    heads reading their published frame descriptors keep their published widths."""
    kwargs = dict(model_kwargs or {})
    if name in FIXED_LENGTH:
        kwargs["seq_len"] = seq_len
    if not reads_pooled_tokens(name, published_features):
        return kwargs
    kwargs.setdefault("dim", POOLED_DIM)
    if name == "seqnet":
        kwargs.setdefault("out_dim", kwargs["dim"])  # seqNet maps descriptors to their own width
    elif name == "jist":  # the frames are fixed features: CosPlace's last layer trains in the head
        kwargs.setdefault("frame_fc", True)
    return kwargs


def build_sequence_model(name: str, seq_len: int, model_kwargs: dict | None = None, tail: CCTTail | None = None,
                         seed: int = 0, published_features: bool = False) -> SequenceModel:
    """A head with seeded initial weights (the same for training and for the untrained rows).
    published_features: the head reads its published backbone's frame descriptors (no CCT tail)."""
    torch.manual_seed(seed)
    kwargs = head_kwargs(name, seq_len, model_kwargs, published_features)
    pooling = GridWhitening(kwargs["dim"]) if reads_pooled_tokens(name, published_features) else None
    return SequenceModel(build_model(name, **kwargs), copy.deepcopy(tail), pooling)

"""The frame descriptor that the heads standing in for another frame backbone (JIST, SeqNet,
OptiCorNet) read from the CCT token map: `GridWhitening`, grid means of the map PCA-whitened to
POOLED_DIM on the training split, as the published VGG16 + NetVLAD descriptor ends in a WPCA."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqvpr.models import MODEL_BACKBONE


def reads_pooled_tokens(name: str, published_features: bool = False) -> bool:
    """Whether model `name` reads pooled CCT tokens (GridWhitening) in place of its published frame descriptor."""
    return MODEL_BACKBONE[name] != "cct384" and not published_features


POOLED_GRID = 2  # GridWhitening: means over a POOLED_GRID x POOLED_GRID grid of the token map


POOLED_DIM = 16  # ... whitened to this many dimensions (the heads' input width); see GridWhitening


class GridWhitening(nn.Module):
    """A frame descriptor from a token map that keeps its layout: (N, n, D) tokens on a square
    sqrt(n) x sqrt(n) map -> means over a `grid` x `grid` grid of it (N, grid^2 D), centred and
    PCA-whitened to `dim` (fitted on training frames by `fit`, as the WPCA that ends the published
    VGG16 + NetVLAD descriptor), L2-normalised: (N, dim) float32. Its mean and projection are
    buffers (saved in checkpoints, never trained); sized at `fit` or when a checkpoint is loaded.
    With no more training frames than `dim` (a tiny split), the dimensions past the centred frames'
    rank stay zero."""

    def __init__(self, dim: int = POOLED_DIM, grid: int = POOLED_GRID):
        super().__init__()
        self.dim, self.grid = dim, grid
        self.register_buffer("mean", torch.zeros(0))
        self.register_buffer("projection", torch.zeros(0, dim))

    def grid_means(self, tokens: torch.Tensor) -> torch.Tensor:
        n, side = tokens.shape[1], round(tokens.shape[1] ** 0.5)
        if side * side != n or side % self.grid:
            raise ValueError(f"{n} tokens are not a square map divisible into a {self.grid} x {self.grid} grid")
        cell = side // self.grid
        return tokens.reshape(len(tokens), self.grid, cell, self.grid, cell, -1).mean((2, 4)).flatten(1)

    def fit(self, grid_means: Iterable[np.ndarray]) -> int:
        """Fit the whitening on batches of (M, grid^2 D) grid means of training frames, streamed: it
        keeps their count, sum and scatter (grid^2 D squared float64: 18 MB at 1,536-D, whatever the
        split's size), shifted by the first batch's mean so the centring loses no precision, then
        takes the eigenvectors of the centred scatter (the right singular vectors of the centred
        frames, as an SVD of them would give). Each eigenvector's largest entry is made positive, so
        the fit does not depend on the eigensolver's signs. Returns the frames used; ValueError when
        there are none."""
        count, shift, total, scatter = 0, None, None, None
        for batch in grid_means:
            x = np.asarray(batch, dtype=np.float64)
            if not len(x):
                continue
            if shift is None:
                shift = x.mean(0)
                total, scatter = np.zeros_like(shift), np.zeros((len(shift), len(shift)))
            x = x - shift
            count, total, scatter = count + len(x), total + x.sum(0), scatter + x.T @ x
        if not count:
            raise ValueError("GridWhitening.fit: no training frames")
        offset = total / count
        eigenvalues, eigenvectors = np.linalg.eigh(scatter - count * np.outer(offset, offset))
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
        kept = int(min(self.dim, np.sum(eigenvalues > max(eigenvalues[0], 0.0) * 1e-10)))
        signs = np.sign(eigenvectors[np.abs(eigenvectors).argmax(0), np.arange(eigenvectors.shape[1])])
        projection = np.zeros((len(shift), self.dim))
        projection[:, :kept] = eigenvectors[:, :kept] * signs[:kept] / np.sqrt(eigenvalues[:kept])
        self.mean = torch.from_numpy((shift + offset).astype(np.float32))
        self.projection = torch.from_numpy(projection.astype(np.float32))
        return count

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if not len(self.mean):
            raise RuntimeError("GridWhitening used before fit (or loading a checkpoint)")
        return F.normalize((self.grid_means(tokens) - self.mean) @ self.projection, dim=-1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("mean", "projection"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

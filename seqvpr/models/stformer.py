"""STformer (Zhao et al., RA-L 2024) as the Adapt-STformer authors run it (ai4ce/Adapt-STFormer
`svpr/models/encoder.py` `STEcoder`, `svpr/models/net.py`, `svpr/models/cct_utils/transformers.py`,
trained by `sbatch_files/train/cct_stformer_train.sbatch`: `--trunc_te 4 --trunc_te_tatt 4
--rel_pos_temporal --abs_pos_embed`).

Both branches read the CCT384 tokenizer output of every frame: a spatial branch (CCT blocks 0-3 with
their learned absolute positions) and, in parallel, a temporal branch (4 CCT blocks whose attention
runs inside 6 x 6 token windows, stride 3, across all 5 frames at once, with 3D relative position
biases; overlapping windows are summed back by `fold`). The two outputs are summed and SeqVLAD pools
all L x 576 tokens. The window covers exactly `seq_len` frames, so the model is tied to it.
The CCT blocks' attention dropout and stochastic depth (0.1 in the authors' code) are not modelled.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from seqvpr.embed.cct import EncoderLayer
from seqvpr.models.layers import NetVLAD


def _relative_index(size: int) -> torch.Tensor:
    """index[i, j] = i - j + size - 1 into a (2 * size - 1)-row table (MViTv2's `_add_rel_pos`)."""
    return torch.arange(size)[:, None] - torch.arange(size)[None, :] + size - 1


class WindowedSpaceTimeAttention(nn.Module):
    """Self-attention within each window x window patch of the token grid over all frames jointly,
    plus decomposed relative position biases along height, width and time."""

    def __init__(self, dim: int, heads: int, seq_len: int, side: int, window: int, stride: int):
        super().__init__()
        if (side - window) % stride:
            raise ValueError(f"windows of {window} with stride {stride} do not tile a {side} x {side} grid")
        self.heads, self.seq_len, self.side, self.window, self.stride = heads, seq_len, side, window, stride
        head_dim = dim // heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * window - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * window - 1, head_dim))
        self.rel_pos_t = nn.Parameter(torch.zeros(2 * seq_len - 1, head_dim))
        for table in (self.rel_pos_h, self.rel_pos_w, self.rel_pos_t):
            nn.init.trunc_normal_(table, std=0.02)
        self.register_buffer("space_index", _relative_index(window), persistent=False)
        self.register_buffer("time_index", _relative_index(seq_len), persistent=False)

    def _relative_bias(self, q):
        """(B, h, s*k*k, hd) queries -> (B, h, N, N) bias: q . R_h + q . R_w + q . R_t."""
        b, h, _, hd = q.shape
        s, k = self.seq_len, self.window
        r = q.view(b, h, s, k, k, hd)
        bias_h = torch.einsum("bnthwc,hkc->bnthwk", r, self.rel_pos_h[self.space_index])
        bias_w = torch.einsum("bnthwc,wkc->bnthwk", r, self.rel_pos_w[self.space_index])
        bias_t = torch.einsum("bnthwc,tkc->bnthwk", r, self.rel_pos_t[self.time_index])
        bias = bias_h[..., None, :, None] + bias_w[..., None, None, :] + bias_t[..., :, None, None]
        return bias.reshape(b, h, s * k * k, s * k * k)

    def forward(self, x):
        """x (B * seq_len, side * side, C), frames of a sequence consecutive."""
        bs, n, c = x.shape
        s, k = self.seq_len, self.window
        b = bs // s
        cols = F.unfold(x.transpose(1, 2).reshape(bs, c, self.side, self.side), k, stride=self.stride)
        windows = cols.shape[-1]
        tokens = cols.view(b, s, c, k, k, windows).permute(0, 5, 1, 3, 4, 2).reshape(b * windows, s * k * k, c)
        q, key, v = self.qkv(tokens).view(b * windows, s * k * k, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ key.transpose(-2, -1)) / math.sqrt(c // self.heads) + self._relative_bias(q)
        out = self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(b * windows, s * k * k, c))
        out = out.view(b, windows, s, k, k, c).permute(0, 2, 5, 3, 4, 1).reshape(bs, c * k * k, windows)
        return F.fold(out, self.side, k, stride=self.stride).flatten(2).transpose(1, 2)


class TemporalEncoderLayer(EncoderLayer):
    """A CCT block whose attention is WindowedSpaceTimeAttention (CCT key names kept)."""

    def __init__(self, dim, heads, mlp_ratio, seq_len, side, window, stride):
        super().__init__(dim, heads, mlp_ratio)
        self.self_attn = WindowedSpaceTimeAttention(dim, heads, seq_len, side, window, stride)


class SpatialBranch(nn.Module):
    """CCT's `classifier` truncated to `blocks` blocks: absolute positions, blocks, final norm."""

    def __init__(self, dim, tokens, heads, mlp_ratio, blocks):
        super().__init__()
        self.positional_emb = nn.Parameter(torch.zeros(1, tokens, dim))
        nn.init.trunc_normal_(self.positional_emb, std=0.2)
        self.blocks = nn.ModuleList([EncoderLayer(dim, heads, mlp_ratio) for _ in range(blocks)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        x = x + self.positional_emb
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class TemporalBranch(nn.Module):
    """The temporal CCT `classifier`: no absolute positions (`--rel_pos_temporal`), windowed blocks, norm."""

    def __init__(self, dim, heads, mlp_ratio, blocks, seq_len, side, window, stride):
        super().__init__()
        self.blocks = nn.ModuleList([TemporalEncoderLayer(dim, heads, mlp_ratio, seq_len, side, window, stride)
                                     for _ in range(blocks)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class STformer(nn.Module):
    """CCT384 tokenizer tokens (B, seq_len, 576, 384) -> (B, 64 * 384) descriptor.

    token_pool > 1 (not in the paper; the CPU budget of `seqvpr.models.REGISTRY`) averages
    token_pool x token_pool tokens of the 24 x 24 grid before both branches, so a CPU can train
    and evaluate it in minutes.

    Parameters: 12.10M here + 1.21M tokenizer = 13.32M against Table II's 13.5M (1.3 %); the
    authors' count also includes the temporal branch's unused absolute positions (0.22M).
    """

    def __init__(self, dim: int = 384, tokens: int = 576, heads: int = 6, mlp_ratio: int = 3, blocks: int = 4,
                 clusters: int = 64, seq_len: int = 5, window: int = 6, stride: int = 3, token_pool: int = 1):
        super().__init__()
        side = math.isqrt(tokens)
        if side * side != tokens or side % token_pool:
            raise ValueError(f"tokens must form a square grid divisible by token_pool {token_pool}, got {tokens}")
        self.seq_len, self.token_pool, self.side = seq_len, token_pool, side
        side //= token_pool
        tokens = side * side
        self.spatial = SpatialBranch(dim, tokens, heads, mlp_ratio, blocks)
        self.temporal = TemporalBranch(dim, heads, mlp_ratio, blocks, seq_len, side, window, stride)
        self.aggregation = NetVLAD(dim, clusters)

    def load_cct(self, cct_state: dict) -> None:
        """Initialise both branches from a CCT checkpoint, as the authors do (relative position
        tables stay fresh): spatial <- classifier.{positional_emb, blocks.i, norm}; temporal <- blocks.i, norm."""
        for branch in (self.spatial, self.temporal):
            own = branch.state_dict()
            picked = {k: cct_state[f"classifier.{k}"] for k in own if f"classifier.{k}" in cct_state}
            branch.load_state_dict({**own, **picked})

    def forward(self, tokens):
        b, length, n, d = tokens.shape
        if length != self.seq_len:
            raise ValueError(f"STformer is built for sequences of {self.seq_len} frames, got {length}")
        frames = tokens.flatten(0, 1)
        if self.token_pool > 1:  # CPU budget: average k x k tokens of the grid (not in the paper)
            grid = frames.transpose(1, 2).reshape(-1, d, self.side, self.side)
            frames = F.avg_pool2d(grid, self.token_pool).flatten(2).transpose(1, 2)
        fused = self.spatial(frames) + self.temporal(frames)
        return self.aggregation(fused.reshape(b, -1, d))

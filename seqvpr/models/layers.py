"""Building blocks shared by the sequence models: NetVLAD, GeM over time, deformable attention."""
import math

import torch
import torch.nn.functional as F
from torch import nn


class NetVLAD(nn.Module):
    """NetVLAD over a set of local features (B, N, D) -> (B, C * D), intra- and L2-normalised.

    Used as SeqVLAD when the set is all L x n tokens of a sequence.
    """

    def __init__(self, dim: int, clusters: int = 64, alpha: float = 100.0):
        super().__init__()
        self.clusters, self.dim, self.alpha = clusters, dim, alpha
        self.centroids = nn.Parameter(torch.randn(clusters, dim) * 0.1)
        self.assign = nn.Linear(dim, clusters)
        self._init_assignment()

    def _init_assignment(self):
        c = F.normalize(self.centroids.data, dim=1)
        self.assign.weight.data = 2.0 * self.alpha * c
        self.assign.bias.data = -self.alpha * c.norm(dim=1)

    @torch.no_grad()
    def init_from_descriptors(self, descriptors, iterations: int = 100, seed: int = 0) -> None:
        """k-means initialisation as the authors' `modified_initialize_seqvlad_layer` and
        `init_params` (ai4ce/Adapt-STFormer `svpr/models/pooling.py`): centroids are the k-means
        centres of the L2-normalised local descriptors; alpha = -log(0.01) / mean gap between each
        descriptor's two best normalised-centroid dot products; assignment weights are alpha times
        the normalised centroids, with no bias."""
        import faiss

        x = F.normalize(torch.as_tensor(descriptors, dtype=torch.float32), dim=-1).contiguous().numpy()
        if len(x) < self.clusters:
            raise ValueError(f"k-means for {self.clusters} clusters needs at least as many descriptors, got {len(x)}")
        kmeans = faiss.Kmeans(x.shape[1], self.clusters, niter=iterations, seed=seed, verbose=False)
        kmeans.train(x)
        centroids = torch.from_numpy(kmeans.centroids.copy())
        unit = F.normalize(centroids, dim=-1)
        dots = torch.sort(unit @ torch.from_numpy(x).T, dim=0, descending=True).values
        self.alpha = float(-math.log(0.01) / (dots[0] - dots[1]).mean())
        self.centroids.data.copy_(centroids)
        self.assign.weight.data.copy_(self.alpha * unit)
        if self.assign.bias is not None:
            self.assign.bias.data.zero_()

    def forward(self, x):
        x = F.normalize(x, dim=-1)
        soft = F.softmax(self.assign(x), dim=-1)  # (B, N, C)
        residual_sum = torch.einsum("bnc,bnd->bcd", soft, x) - soft.sum(1).unsqueeze(-1) * self.centroids
        vlad = F.normalize(residual_sum, dim=-1).flatten(1)
        return F.normalize(vlad, dim=-1)


class SeqGeM(nn.Module):
    """Generalised mean over the time axis (dim 1), as JIST and Adapt-STformer pool sequences."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(p))
        self.eps = eps

    def forward(self, x):
        return x.clamp(min=self.eps).pow(self.p).mean(dim=1).pow(1.0 / self.p)


class DeformableAttention(nn.Module):
    """Multi-scale deformable attention (Deformable DETR) in pure PyTorch with `grid_sample`.

    Each query attends to `points` sampled locations per head and level around its reference
    point, instead of to every token. `levels` value maps are expected; Adapt-STformer builds 2
    levels and feeds one, which `levels_fed` reproduces (the second level's offsets are unused).
    """

    def __init__(self, dim: int, heads: int = 8, levels: int = 2, points: int = 8, levels_fed: int = 1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.dim, self.heads, self.levels, self.points, self.levels_fed = dim, heads, levels, points, levels_fed
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self._reset()

    def _reset(self):
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.heads, dtype=torch.float32) * (2.0 * math.pi / self.heads)
        grid = torch.stack([angles.cos(), angles.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.heads, 1, 1, 2).repeat(1, self.levels, self.points, 1)
        for i in range(self.points):
            grid[:, :, i, :] *= i + 1
        self.sampling_offsets.bias.data = grid.flatten()
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query, reference_points, value, shape: tuple[int, int]):
        """query (B, Lq, D); reference_points (B, Lq, 2) in [0, 1] as (x, y); value (B, H*W, D)."""
        b, lq, _ = query.shape
        h, w = shape
        head_dim = self.dim // self.heads
        v = self.value_proj(value).view(b, h * w, self.heads, head_dim).permute(0, 2, 3, 1).reshape(b * self.heads, head_dim, h, w)
        offsets = self.sampling_offsets(query).view(b, lq, self.heads, self.levels, self.points, 2)[:, :, :, : self.levels_fed]
        weights = self.attention_weights(query).view(b, lq, self.heads, self.levels * self.points)
        weights = weights.softmax(-1).view(b, lq, self.heads, self.levels, self.points)[:, :, :, : self.levels_fed]
        normaliser = torch.tensor([w, h], dtype=query.dtype, device=query.device)
        locations = reference_points[:, :, None, None, None, :] + offsets / normaliser
        grid = (2.0 * locations - 1.0).permute(0, 2, 1, 3, 4, 5).reshape(b * self.heads, lq, self.levels_fed * self.points, 2)
        sampled = F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (B*h, hd, Lq, P)
        weights = weights.permute(0, 2, 1, 3, 4).reshape(b * self.heads, 1, lq, self.levels_fed * self.points)
        out = (sampled * weights).sum(-1).view(b, self.heads * head_dim, lq).transpose(1, 2)
        return self.output_proj(out)


def grid_reference_points(side: int, device=None) -> torch.Tensor:
    """Reference points of a side x side token grid, pixel centres in [0, 1], row-major (x, y)."""
    coords = (torch.arange(side, dtype=torch.float32, device=device) + 0.5) / side
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], -1)


class DeformableEncoderLayer(nn.Module):
    """Deformable transformer encoder layer: deformable attention + FFN, post-norm as in Deformable DETR."""

    def __init__(self, dim: int, heads: int = 8, points: int = 8, levels: int = 2, ffn: int = 1024, dropout: float = 0.1):
        super().__init__()
        self.attn = DeformableAttention(dim, heads, levels, points)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query, reference_points, value, shape):
        x = self.norm1(query + self.dropout(self.attn(query, reference_points, value, shape)))
        return self.norm2(x + self.dropout(self.ffn(x)))


class DenseCrossEncoderLayer(nn.Module):
    """The dense (K = all tokens) counterpart of DeformableEncoderLayer, for the Table IV ablation."""

    def __init__(self, dim: int, heads: int = 8, ffn: int = 1024, dropout: float = 0.1):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query, reference_points, value, shape):
        x = self.norm1(query + self.dropout(self.attn(query, value, value, need_weights=False)[0]))
        return self.norm2(x + self.dropout(self.ffn(x)))

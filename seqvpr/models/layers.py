"""Building blocks shared by the sequence models: NetVLAD, GeM over time, deformable attention."""
import math

import torch
import torch.nn.functional as F
from torch import nn


class NetVLAD(nn.Module):
    """NetVLAD over a set of local features (B, N, D) -> (B, C * D), intra- and L2-normalised.

    Used as SeqVLAD when the set is all L x n tokens of a sequence. The soft assignment has no bias,
    as the authors' layer (ai4ce/Adapt-STFormer `svpr/models/pooling.py`: `nn.Conv1d(dim,
    clusters_num, kernel_size=1, bias=False)`): NetVLAD's bias -alpha ||c_k|| is the same for every
    cluster when the centroids in the assignment are unit vectors, so it never changes the softmax.
    Parameters: 2 x clusters x dim.
    """

    def __init__(self, dim: int, clusters: int = 64, alpha: float = 100.0):
        super().__init__()
        self.clusters, self.dim, self.alpha = clusters, dim, alpha
        self.centroids = nn.Parameter(torch.randn(clusters, dim) * 0.1)
        self.assign = nn.Linear(dim, clusters, bias=False)
        self._init_assignment()

    def _init_assignment(self):
        self.assign.weight.data = 2.0 * self.alpha * F.normalize(self.centroids.data, dim=1)

    @torch.no_grad()
    def init_from_descriptors(self, descriptors, iterations: int = 100, seed: int = 0) -> None:
        """k-means initialisation as the authors' `modified_initialize_seqvlad_layer` and
        `init_params` (ai4ce/Adapt-STFormer `svpr/models/pooling.py`): centroids are the k-means
        centres of the L2-normalised local descriptors; alpha = -log(0.01) / mean gap between each
        descriptor's two best normalised-centroid dot products; assignment weights are alpha times
        the normalised centroids."""
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
    """Multi-scale deformable attention (Deformable DETR) in pure PyTorch, without `grid_sample`.

    Each query attends to `points` sampled locations per head and level around its reference
    point, instead of to every token. `levels` value maps are expected; Adapt-STformer builds 2
    levels and feeds one, which `levels_fed` reproduces (the second level's offsets are unused).
    Sampling is one fused `embedding_bag` gather over the bilinear corners in the fed levels (see
    `forward`), faster than Deformable DETR's per-head `grid_sample` formulation
    (`ms_deform_attn_core_pytorch`; speed-ups in benchmarks/RESULTS.md), which
    tests/test_deformable.py keeps as the reference and matches, outputs and gradients, to 1e-5.
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
        """query (B, Lq, D); reference_points (B, Lq, 2) in [0, 1] as (x, y); value (B, H*W, D).

        Bilinear sampling (zero padding, align_corners=False, as `grid_sample`) done as one fused
        gather-weight-sum: the value map gets a zero border, every sampled point's four corners
        become rows of the flattened map with weight attention x bilinear, and `embedding_bag`
        sums them. Only the fed levels' offsets are computed; the softmax still runs over all
        levels, as in the reference formulation (tests/test_deformable.py).
        """
        b, lq, _ = query.shape
        h, w = shape
        head_dim = self.dim // self.heads
        value = self.value_proj(value).view(b, h, w, self.dim)
        table = F.pad(value, (0, 0, 1, 2, 1, 2)).reshape(-1, head_dim)  # rows: (batch, y + 1, x + 1, head)
        offsets = F.linear(query, *self._fed_offset_parameters())
        offsets = offsets.view(b, lq, self.heads, self.levels_fed * self.points, 2)
        weights = self.attention_weights(query).view(b, lq, self.heads, self.levels * self.points).softmax(-1)
        weights = weights.view(b, lq, self.heads, self.levels, self.points)[:, :, :, : self.levels_fed]
        rows, corner_weights = _padded_bilinear_corners(reference_points, offsets, weights.flatten(3), h, w, self.heads)
        out = F.embedding_bag(rows.view(b * lq * self.heads, -1), table, mode="sum",
                              per_sample_weights=corner_weights.view(b * lq * self.heads, -1).to(table.dtype))
        return self.output_proj(out.view(b, lq, self.dim))

    def _fed_offset_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows of `sampling_offsets` that belong to the fed levels (the others are never used)."""
        if self.levels_fed == self.levels:
            return self.sampling_offsets.weight, self.sampling_offsets.bias
        per_level = (self.heads, self.levels, self.points * 2)
        weight = self.sampling_offsets.weight.view(*per_level, self.dim)[:, : self.levels_fed].reshape(-1, self.dim)
        bias = self.sampling_offsets.bias.view(per_level)[:, : self.levels_fed].reshape(-1)
        return weight, bias


def _padded_bilinear_corners(reference_points, offsets, weights, h: int, w: int, heads: int):
    """Rows and weights of each sample's four bilinear corners in the value map padded by one
    zero row / column before and two after, flattened to (B * (H + 3) * (W + 3) * heads, head_dim).

    offsets (B, Lq, heads, P, 2) in token units around reference_points (B, Lq, 2) in [0, 1];
    weights (B, Lq, heads, P) attention weights. Pixel coordinates follow
    `grid_sample(align_corners=False)`: x * W - 0.5. Clamping them to [-1, W] (and [-1, H]) moves
    samples that lie wholly outside onto the zero border without changing any value or gradient.
    x and y are kept as separate contiguous tensors: elementwise ops that broadcast over a last
    axis of 2 run several times slower on CPUs.
    Returns rows and weights, both (B, Lq, heads, 4 * P), the corners in the same order.
    """
    b, lq, _, points, _ = offsets.shape
    dtype = torch.promote_types(offsets.dtype, torch.float32)  # integer parts need full precision
    device = offsets.device
    start = reference_points.to(dtype) * torch.tensor([w, h], dtype=dtype, device=device) - 0.5
    x = (offsets[..., 0].to(dtype) + start[:, :, 0, None, None]).clamp_(-1.0, w)
    y = (offsets[..., 1].to(dtype) + start[:, :, 1, None, None]).clamp_(-1.0, h)
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    # the padded row of corner (x0, y0); (x, y) = (-1, -1) is padded row 0, hence the + 1s
    first = torch.arange(b, device=device).view(b, 1, 1, 1) * ((h + 3) * (w + 3) * heads)
    first = first + torch.arange(heads, device=device).view(1, 1, heads, 1) + (w + 4) * heads
    row00 = first + (y0.long() * (w + 3) + x0.long()) * heads
    rows = torch.cat([row00, row00 + heads, row00 + (w + 3) * heads, row00 + (w + 4) * heads], -1)
    weights = weights.to(dtype)
    top, bottom = weights - weights * fy, weights * fy
    left, right = 1 - fx, fx
    return rows, torch.cat([top * left, top * right, bottom * left, bottom * right], -1)


def grid_reference_points(side: int, device=None) -> torch.Tensor:
    """Reference points of a side x side token grid, pixel centres in [0, 1], row-major (x, y)."""
    coords = (torch.arange(side, dtype=torch.float32, device=device) + 0.5) / side
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], -1)


class DeformableEncoderLayer(nn.Module):
    """The authors' `Detr` layer (ai4ce/Adapt-STFormer `svpr/models/detr.py` with
    `SpatialCrossAttention2D`): LayerNorm(query + dropout(deformable attention)), no FFN.

    `ffn` adds Deformable DETR's feed-forward sub-layer (Linear-ReLU-Linear, post-norm), which the
    authors' layer does not have.
    """

    def __init__(self, dim: int, heads: int = 8, points: int = 8, levels: int = 2, ffn: int | None = None,
                 dropout: float = 0.1):
        super().__init__()
        self.attn = DeformableAttention(dim, heads, levels, points)
        self.norm1 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        if ffn:
            self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn, dim))
            self.norm2 = nn.LayerNorm(dim)
        else:
            self.ffn = None

    def forward(self, query, reference_points, value, shape):
        x = self.norm1(query + self.dropout(self.attn(query, reference_points, value, shape)))
        return x if self.ffn is None else self.norm2(x + self.dropout(self.ffn(x)))


class DenseCrossAttention(nn.Module):
    """The authors' dense cross-attention (`dense_spatial_cross_attention.py`, `CrossAttention`):
    learned absolute positions added to query and key, bias-free q/k/v projections."""

    def __init__(self, dim: int, heads: int, tokens: int, dropout: float = 0.1):
        super().__init__()
        self.heads = heads
        self.pos_embed_q = nn.Parameter(torch.zeros(1, tokens, dim))
        self.pos_embed_k = nn.Parameter(torch.zeros(1, tokens, dim))
        nn.init.trunc_normal_(self.pos_embed_q, std=0.02)
        nn.init.trunc_normal_(self.pos_embed_k, std=0.02)
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        for layer in (self.q_proj, self.k_proj, self.v_proj, self.proj):
            nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(self.proj.bias)
        self.dropout = dropout

    def forward(self, query, value):
        b, n, d = query.shape

        def heads(x):
            return x.view(b, -1, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = heads(self.q_proj(query + self.pos_embed_q)), heads(self.k_proj(value + self.pos_embed_k)), heads(self.v_proj(value))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return F.dropout(self.proj(out.transpose(1, 2).reshape(b, n, d)), self.dropout, self.training)


class DenseCrossEncoderLayer(nn.Module):
    """Table IV's K = 576 layer: the authors' `DenseCrossAttention2D` (pre-norm on the query,
    residual, post-norm) followed, as in their `Detr`, by the layer's own LayerNorm."""

    def __init__(self, dim: int, heads: int = 8, tokens: int = 576, dropout: float = 0.1):
        super().__init__()
        self.pre_norm = nn.LayerNorm(dim)
        self.attn = DenseCrossAttention(dim, heads, tokens, dropout)
        self.post_norm = nn.LayerNorm(dim)
        self.norm1 = nn.LayerNorm(dim)

    def forward(self, query, reference_points, value, shape):
        return self.norm1(self.post_norm(query + self.attn(self.pre_norm(query), value)))

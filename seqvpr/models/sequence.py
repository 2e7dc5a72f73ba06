"""Sequence heads as published. Every head maps a batch of per-frame features to an L2-normalised
sequence descriptor; which features depends on the model's frame backbone
(`seqvpr.models.MODEL_BACKBONE`):

- CCT384 token maps (B, L, 576, 384): Adapt-STformer and its ablations, SeqVLAD (tokens after CCT
  block 8) and STformer (tokenizer output, see `seqvpr.models.stformer`);
- NetVLAD-4096 frame descriptors (B, L, 4096): SeqNet;
- CosPlace ResNet-18 GeM descriptors (B, L, 512): JIST.

Submodules are named `spatial`, `temporal` and `aggregation` where a model has such a stage, so a
benchmark can time each stage with forward hooks (Adapt-STformer paper, Fig. 3).
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


class RecurrentDeformableEncoder(nn.Module):
    """The authors' `Detr` module (ai4ce/Adapt-STFormer `svpr/models/detr.py`): at step t the query
    is the layer's output at t-1 and the value is frame t's tokens; the first query is frame 0's
    tokens plus a learnable offset. (B, L, n, D) -> (B, L, n, D), any L.

    `dense=True` swaps the deformable layer for dense cross-attention over all n tokens (Table IV,
    K = 576, the authors' `DenseCrossAttention2D`).
    """

    def __init__(self, dim: int, tokens: int, heads: int = 8, points: int = 8, levels: int = 2, dense: bool = False):
        super().__init__()
        self.side = math.isqrt(tokens)
        if self.side * self.side != tokens:
            raise ValueError(f"tokens must form a square grid, got {tokens}")
        self.query_offset = nn.Parameter(torch.zeros(1, tokens, dim))
        nn.init.xavier_uniform_(self.query_offset)
        self.layer = DenseCrossEncoderLayer(dim, heads, tokens) if dense else DeformableEncoderLayer(dim, heads, points, levels)
        self.register_buffer("reference", grid_reference_points(self.side), persistent=False)

    def forward(self, tokens):
        b, length, n, _ = tokens.shape
        reference, shape = self.reference.expand(b, n, 2), (self.side, self.side)
        query, outputs = tokens[:, 0] + self.query_offset, []
        for t in range(length):
            query = self.layer(query, reference, tokens[:, t], shape)
            outputs.append(query)
        return torch.stack(outputs, 1)


class AdaptSTformer(nn.Module):
    """Recurrent deformable encoder -> SeqGeM over time -> SeqVLAD (ai4ce/Adapt-STFormer
    `svpr/models/adapt_stformer.py`, `Bev_RGB_Fusion`). Tokens (B, L, n, D) after CCT block 8.

    Variants (the authors' flags): `temporal="transformer"` (`--use_temporal_encoder`, Table III):
    a 2-layer transformer encoder (16 heads, FFN 2048, GELU) over all L x n tokens of a sequence
    replaces SeqGeM and SeqVLAD pools all of them; `temporal="seqgem"` (`--no_recurrent_dte`,
    Table III "seqGeM only"): no encoder; `spatial="dense"` (`--spatial_ablation`, Table IV K = 576).
    The authors' transformer runs with PyTorch's default `batch_first=False` on a (1, L*n, D)
    tensor, so each token attends only to itself; here it attends across the sequence as the
    paper describes.

    Parameters with CCT384 at 8 blocks: 13.26M + 0.22M query offset + 0.44M deformable attention +
    0.05M SeqVLAD = 13.97M against Table II's 13.9M (0.5 %).
    """

    def __init__(self, dim: int = 384, tokens: int = 576, heads: int = 8, points: int = 8, levels: int = 2,
                 clusters: int = 64, spatial: str = "deformable", temporal: str = "recurrent"):
        super().__init__()
        if spatial not in ("deformable", "dense") or temporal not in ("recurrent", "transformer", "seqgem"):
            raise ValueError(f"unknown Adapt-STformer variant spatial={spatial!r} temporal={temporal!r}")
        self.variant = temporal
        if temporal != "seqgem":
            self.spatial = RecurrentDeformableEncoder(dim, tokens, heads, points, levels, dense=spatial == "dense")
        if temporal == "transformer":
            layer = nn.TransformerEncoderLayer(dim, 16, 2048, dropout=0.1, activation="gelu", batch_first=True)
            self.temporal = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        else:
            self.temporal = SeqGeM()
        self.aggregation = NetVLAD(dim, clusters)

    def forward(self, tokens):
        b, length, n, d = tokens.shape
        x = tokens if self.variant == "seqgem" else self.spatial(tokens)
        if self.variant == "transformer":
            return self.aggregation(self.temporal(x.reshape(b, length * n, d)))
        return self.aggregation(self.temporal(x))


class SeqVLAD(nn.Module):
    """NetVLAD over all L x n tokens of the sequence (Mereu et al.). Tokens after CCT block 8.

    Parameters with CCT384 at 8 blocks: 13.26M + 0.05M = 13.31M (Table II: 13.3M).
    """

    def __init__(self, dim: int = 384, clusters: int = 64):
        super().__init__()
        self.aggregation = NetVLAD(dim, clusters)

    def forward(self, tokens):
        return self.aggregation(tokens.flatten(1, 2))


class SeqNet(nn.Module):
    """seqNet (oravus/seqNet `seqNet.py`): Conv1d over the time axis of NetVLAD frame descriptors,
    mean over the output steps, L2 norm. Input (B, L, 4096) with L >= width.

    Conv1d 4096 -> 4096, width 5: 83.89M parameters, Table II's 83.9M. That count is the head
    alone: seqNet trains on precomputed descriptors, and the VGG16 + NetVLAD + WPCA backbone that
    produces them (`vgg16_netvlad`, 149.0M, of which 134.2M is the 32768 -> 4096 whitening PCA) is
    not part of it.
    """

    def __init__(self, dim: int = 4096, out_dim: int = 4096, width: int = 5):
        super().__init__()
        self.width = width
        self.temporal = nn.Conv1d(dim, out_dim, kernel_size=width)

    def forward(self, frames):
        if frames.shape[1] < self.width:
            raise ValueError(f"SeqNet needs at least {self.width} frames, got {frames.shape[1]}")
        return F.normalize(self.temporal(frames.transpose(1, 2)).mean(-1), dim=-1)


class JIST(nn.Module):
    """JIST (gmberton/JIST; ai4ce/Adapt-STFormer `svpr/models/JIST.py`): SeqGeM over the CosPlace
    ResNet-18 frame descriptors (B, L, 512). The head is SeqGeM's one parameter; with the backbone
    (`resnet18_gem`) 11.44M, Table II's 11.4M. The authors return SeqGeM's output unnormalised;
    it is L2-normalised here, as every descriptor of this package.

    JIST fine-tunes its frame backbone with the sequence loss; on precomputed frame features only
    SeqGeM's exponent would train. `frame_fc=True` adds the last layer of CosPlace's descriptor
    head (`aggregation`: GeM, Linear(dim, dim), L2Norm) as a trainable per-frame layer, started
    at the identity so the untrained model is plain SeqGeM; it is what trains when the frames are
    fixed features standing in for the published backbone (pooled CCT384 tokens).
    """

    def __init__(self, dim: int = 512, frame_fc: bool = False):
        super().__init__()
        self.spatial = None
        if frame_fc:
            self.spatial = nn.Linear(dim, dim)
            with torch.no_grad():
                self.spatial.weight.copy_(torch.eye(dim))
                self.spatial.bias.zero_()
        self.aggregation = SeqGeM()

    def forward(self, frames):
        if self.spatial is not None:
            frames = F.normalize(self.spatial(frames), dim=-1)
        return F.normalize(self.aggregation(frames), dim=-1)

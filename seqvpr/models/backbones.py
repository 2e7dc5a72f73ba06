"""Frame backbones of the baselines, in plain torch with the official parameter names.

- `resnet18_gem`: CosPlace's `GeoLocalizationNet("ResNet18", fc_output_dim=512)` (gmberton/CosPlace
  `cosplace_model/cosplace_network.py`), the per-frame network JIST fine-tunes (gmberton/JIST, and
  ai4ce/Adapt-STFormer `svpr/models/JIST.py`, which loads it through `torch.hub`): torchvision's
  ResNet-18 without avgpool/fc as `backbone.0..7`, then `aggregation` = L2Norm, GeM, Flatten,
  Linear(512, 512), L2Norm. Frame feature: (B, 512), L2-normalised.
- `vgg16_netvlad`: Patch-NetVLAD's global model (QVPR/Patch-NetVLAD
  `patchnetvlad/models/models_generic.py` with `append_pca_layer=True`), the 4096-D NetVLAD
  descriptors seqNet trains on: VGG16 `features` without its last ReLU and max-pool as
  `encoder.0..28`, `pool` = NetVLAD (64 clusters, no assignment bias: `vladv2=False`) and `WPCA` =
  1x1 conv 32768 -> 4096, Flatten, L2Norm. Frame feature: (B, 4096), L2-normalised.
- `cct384`: `seqvpr.embed.cct.build_cct384`; frame feature: the (B, 576, 384) token map.

Each loads its official checkpoint with `strict=True` (a `{"state_dict": ...}` wrapper, as
Patch-NetVLAD saves, is unwrapped) or, without one, uses seeded random weights.
"""
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from seqvpr.embed.cct import build_cct384, weights_identity

log = logging.getLogger(__name__)

BACKBONES = ("cct384", "resnet18_gem", "vgg16_netvlad")
RESNET18_STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (channels, stride of the first block)
VGG16_CHANNELS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class L2Norm(nn.Module):
    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return F.normalize(x, dim=self.dim)


class GeM(nn.Module):
    """Generalised-mean pooling over the spatial map, CosPlace's `p` parameter of shape (1,)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x):
        return F.avg_pool2d(x.clamp(min=self.eps).pow(self.p), x.shape[-2:]).pow(1.0 / self.p)


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (`conv1`, `bn1`, `conv2`, `bn2`, `downsample.0/1`)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                           if stride != 1 or c_in != c_out else None)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


def resnet18_trunk() -> nn.Sequential:
    """conv1, bn1, relu, maxpool, layer1..4 as `0..7` (CosPlace keeps `children()[:-2]`)."""
    layers, c_in = [], 64
    for c_out, stride in RESNET18_STAGES:
        layers.append(nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)))
        c_in = c_out
    return nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                         nn.MaxPool2d(3, 2, 1), *layers)


class ResNet18GeM(nn.Module):
    """CosPlace ResNet-18 + GeM + FC: images (B, 3, H, W) -> (B, out_dim) L2-normalised."""

    def __init__(self, out_dim: int = 512):
        super().__init__()
        self.backbone = resnet18_trunk()
        self.aggregation = nn.Sequential(L2Norm(), GeM(), nn.Flatten(), nn.Linear(512, out_dim), L2Norm())

    def forward(self, images):
        return self.aggregation(self.backbone(images))


def vgg16_trunk() -> nn.Sequential:
    """torchvision `vgg16().features` without its final ReLU and max-pool (`encoder.0..28`)."""
    layers, c_in = [], 3
    for item in VGG16_CHANNELS:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, item, 3, padding=1), nn.ReLU(inplace=True)]
            c_in = item
    return nn.Sequential(*layers[:-1])


class PatchNetVLADPool(nn.Module):
    """Patch-NetVLAD's `NetVLAD` (vladv2=False): (B, D, H, W) -> (B, K * D), intra- and L2-normalised."""

    def __init__(self, clusters: int = 64, dim: int = 512):
        super().__init__()
        self.conv = nn.Conv2d(dim, clusters, kernel_size=1, bias=False)
        self.centroids = nn.Parameter(torch.rand(clusters, dim))

    def forward(self, x):
        x = F.normalize(x, dim=1).flatten(2)  # (B, D, N)
        soft = F.softmax(torch.einsum("kd,bdn->bkn", self.conv.weight[:, :, 0, 0], x), dim=1)
        vlad = torch.einsum("bkn,bdn->bkd", soft, x) - soft.sum(-1).unsqueeze(-1) * self.centroids
        return F.normalize(F.normalize(vlad, dim=2).flatten(1), dim=1)


class VGG16NetVLAD(nn.Module):
    """VGG16 + NetVLAD-64 + whitening PCA to `pcs` dims: images -> (B, pcs) L2-normalised."""

    def __init__(self, clusters: int = 64, pcs: int = 4096):
        super().__init__()
        self.encoder = vgg16_trunk()
        self.pool = PatchNetVLADPool(clusters, 512)
        self.WPCA = nn.Sequential(nn.Conv2d(clusters * 512, pcs, kernel_size=1), nn.Flatten(), L2Norm(dim=-1))

    def forward(self, images):
        return self.WPCA(self.pool(self.encoder(images))[:, :, None, None])


def build_backbone(name: str, checkpoint: str | Path | None = None, seed: int = 0) -> tuple[nn.Module, str]:
    """The frame backbone `name` in eval mode and its weights identity (checkpoint SHA-256 or seed)."""
    if name == "cct384":
        return build_cct384(checkpoint=checkpoint, seed=seed)
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")
    torch.manual_seed(seed)
    model = ResNet18GeM() if name == "resnet18_gem" else VGG16NetVLAD()
    if checkpoint:
        state = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("state_dict", state), strict=True)
    else:
        _init_random(model)
        log.warning("no %s checkpoint given: using seeded random weights (seed %d)", name, seed)
    return model.eval(), weights_identity(checkpoint, seed)


def _init_random(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

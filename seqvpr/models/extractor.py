"""The whole sequence-descriptor extraction, backbone included, as Table II of Adapt-STformer times
it: images (B, L, 3, 384, 384) -> frame backbone -> sequence head -> descriptor.

`module_times` splits one extraction into the parts of the paper's Fig. 3 (backbone, spatial,
temporal, aggregation) with forward hooks on submodules of those names.
"""
import time
from collections import defaultdict

import torch
from torch import nn

from seqvpr.embed.cct import DEFAULT_LAYERS, build_cct384
from seqvpr.models import build_model

# The parts of Fig. 3: the extractor's `backbone`, and the head's submodules of these names.
STAGES = ("backbone", "spatial", "temporal", "aggregation")


def backbone_for(model_name: str) -> str:
    """The frame backbone a sequence model runs on; the single place where it is chosen.

    LEAD (merge with H12b): return `seqvpr.models.MODEL_BACKBONE[model_name]` (SeqNet on
    VGG16 + NetVLAD-4096, JIST on ResNet-18 + GeM). On this branch every model runs on CCT384.
    """
    return "cct384"


def build_backbone(name: str, checkpoint=None) -> nn.Module:
    """LEAD (merge with H12b): `seqvpr.models.backbones.build_backbone(name)` for the non-CCT ones."""
    if name != "cct384":
        raise ValueError(f"unknown backbone {name!r}")
    # truncated to 8 of 14 blocks as the authors (see seqvpr.embed.cct)
    return build_cct384(DEFAULT_LAYERS, checkpoint)[0]


class SequenceExtractor(nn.Module):
    """Frame backbone applied to every frame, then the sequence head on the stacked features."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, length = images.shape[:2]
        features = self.backbone(images.flatten(0, 1))
        return self.head(features.view(b, length, *features.shape[1:]))


def build_extractor(name: str, checkpoint=None, **head_kwargs) -> SequenceExtractor:
    """`name` is a registry name of seqvpr.models; head_kwargs go to build_model (e.g. seq_len)."""
    head = build_model(name, **head_kwargs)
    return SequenceExtractor(build_backbone(backbone_for(name), checkpoint), head).eval()


def stage_modules(extractor: SequenceExtractor) -> dict[str, nn.Module]:
    """The extractor's `backbone` and every head submodule whose own name is a Fig. 3 stage, by path."""
    found = {"backbone": extractor.backbone}
    for path, module in extractor.head.named_modules():
        if path and path.rsplit(".", 1)[-1] in STAGES:
            found[path] = module
    return found


def module_times(extractor: SequenceExtractor, images: torch.Tensor, clock=time.perf_counter) -> dict[str, float]:
    """Seconds spent inside each stage module during one extraction (summed over repeated calls,
    e.g. a recurrent spatial layer run once per frame), plus `total`, by `clock` (e.g.
    time.process_time for CPU time). Stages nested in one another each count their own inclusive
    time. On CUDA every hook synchronises, so time each stage here and the whole extraction without
    hooks."""
    sync = torch.cuda.synchronize if images.is_cuda else (lambda: None)
    seconds, started, handles = defaultdict(float), {}, []

    def before(path):
        def hook(module, args):
            sync()
            started[path] = clock()
        return hook

    def after(path):
        def hook(module, args, output):
            sync()
            seconds[path] += clock() - started.pop(path)
        return hook

    for path, module in stage_modules(extractor).items():
        handles += [module.register_forward_pre_hook(before(path)), module.register_forward_hook(after(path))]
    try:
        with torch.inference_mode():
            sync()
            start = clock()
            extractor(images)
            sync()
            seconds["total"] = clock() - start
    finally:
        for handle in handles:
            handle.remove()
    return dict(seconds)

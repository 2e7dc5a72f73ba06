"""The whole sequence-descriptor extraction, backbone included, as Table II of Adapt-STformer times
it: images (B, L, 3, H, W) -> the model's published frame backbone on every frame -> sequence head
-> descriptor.

Backbones (`seqvpr.models.MODEL_BACKBONE`): CCT384 cut after `CCT_BLOCKS_BEFORE_HEAD[name]` blocks
(8 for Adapt-STformer, its ablations and SeqVLAD; STformer reads the tokenizer output, its own
branches hold the blocks), CosPlace ResNet-18 + GeM for JIST, VGG16 + NetVLAD + WPCA-4096 for
SeqNet and OptiCorNet. Only the parts that run are kept, so the extractor's parameters are exactly
what one extraction uses.

`module_times` splits one extraction into the parts of the paper's Fig. 3 (backbone, spatial,
temporal, aggregation) with forward hooks: the extractor's `backbone` and the head's submodules of
those names (every head names its stages so, see seqvpr.models.sequence).
"""
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

from seqvpr.models import CCT_BLOCKS_BEFORE_HEAD, FIXED_LENGTH, MODEL_BACKBONE, build_model
from seqvpr.models.backbones import build_backbone

STAGES = ("backbone", "spatial", "temporal", "aggregation")


class SequenceExtractor(nn.Module):
    """Frame backbone applied to every frame, then the sequence head on the stacked features."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, length = images.shape[:2]
        features = self.backbone(images.flatten(0, 1))
        return self.head(features.view(b, length, *features.shape[1:]))


def frame_backbone(name: str, checkpoint: str | Path | None = None, seed: int = 0) -> nn.Module:
    """Model `name`'s frame backbone in eval mode, cut where its head starts."""
    backbone, _ = build_backbone(MODEL_BACKBONE[name], checkpoint, seed)
    if MODEL_BACKBONE[name] != "cct384":
        return backbone
    blocks = CCT_BLOCKS_BEFORE_HEAD[name]
    if blocks == 0:
        return backbone.tokenizer  # (B, 576, 384) without positions, as STformer's branches read it
    classifier = backbone.classifier
    classifier.blocks = classifier.blocks[:blocks]  # CCT384.forward runs blocks[:num_layers]
    classifier.attention_pool = classifier.fc = None  # the classification head never runs
    backbone.num_layers = blocks
    return backbone


def build_extractor(name: str, checkpoint: str | Path | None = None, seq_len: int = 5, seed: int = 0) -> SequenceExtractor:
    """`name` is a registry name of seqvpr.models; `checkpoint` the official weights of its backbone
    (for STformer also the start of both its branches, as the authors); `seq_len` reaches the models
    built for one sequence length (`FIXED_LENGTH`)."""
    backbone = frame_backbone(name, checkpoint, seed)
    head = build_model(name, **({"seq_len": seq_len} if name in FIXED_LENGTH else {}))
    if name == "stformer" and checkpoint:
        state = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
        head.load_cct(state.get("state_dict", state))
    return SequenceExtractor(backbone, head).eval()


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

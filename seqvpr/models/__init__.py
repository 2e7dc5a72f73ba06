"""Sequence heads (`build_model(name)`, the registry), their frame backbones (`MODEL_BACKBONE`,
`seqvpr.models.backbones.build_backbone`) and the Table II parameter counts (`parameter_count`).

Head inputs, per frame of a (B, L, ...) batch:
- `cct384` models: the CCT384 token map (576, 384) after `CCT_BLOCKS_BEFORE_HEAD[name]` blocks
  (8 by default: the authors' `--trunc_te 8`; STformer: 0, i.e. the tokenizer output without
  positions, because its own spatial and temporal CCT branches start there);
- `vgg16_netvlad` models: the 4096-D NetVLAD + WPCA descriptor;
- `resnet18_gem` models: the 512-D CosPlace descriptor.
"""
import torch

from seqvpr.embed.cct import CCT384, DEFAULT_LAYERS
from seqvpr.models.backbones import ResNet18GeM, VGG16NetVLAD
from seqvpr.models.opticornet import OptiCorNet
from seqvpr.models.sequence import JIST, AdaptSTformer, SeqNet, SeqVLAD
from seqvpr.models.stformer import STformer

MODELS = {
    "adapt_stformer": lambda **kw: AdaptSTformer(**kw),
    "seqvlad": lambda **kw: SeqVLAD(**kw),
    "stformer": lambda **kw: STformer(**kw),
    "seqnet": lambda **kw: SeqNet(**kw),
    "jist": lambda **kw: JIST(**kw),
    "opticornet": lambda **kw: OptiCorNet(**kw),
    # ablations of the Adapt-STformer paper (Tables III and IV)
    "adapt_transformer_temporal": lambda **kw: AdaptSTformer(temporal="transformer", **kw),
    "adapt_seqgem_only": lambda **kw: AdaptSTformer(temporal="seqgem", **kw),
    "adapt_dense_k576": lambda **kw: AdaptSTformer(spatial="dense", **kw),
}

MODEL_BACKBONE = {
    "adapt_stformer": "cct384", "seqvlad": "cct384", "stformer": "cct384",
    "adapt_transformer_temporal": "cct384", "adapt_seqgem_only": "cct384", "adapt_dense_k576": "cct384",
    "seqnet": "vgg16_netvlad", "opticornet": "vgg16_netvlad", "jist": "resnet18_gem",
}

CCT_BLOCKS_BEFORE_HEAD = {name: 0 if name == "stformer" else DEFAULT_LAYERS
                          for name, backbone in MODEL_BACKBONE.items() if backbone == "cct384"}

# models whose descriptor does not depend on a fixed sequence length; the others take a `seq_len`
# (STformer, OptiCorNet) or need at least `width` = 5 frames (SeqNet)
LENGTH_AGNOSTIC = {"adapt_stformer", "seqvlad", "jist", "adapt_transformer_temporal", "adapt_seqgem_only",
                   "adapt_dense_k576"}
FIXED_LENGTH = {"stformer", "opticornet"}

# Table II of the Adapt-STformer paper (backbone included)
PAPER_PARAMETERS = {"seqvlad": 13.3e6, "stformer": 13.5e6, "adapt_stformer": 13.9e6, "seqnet": 83.9e6, "jist": 11.4e6}


def build_model(name: str, **kwargs):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def backbone_parameter_count(name: str) -> int:
    """Parameters of the frame backbone that model `name` runs (CCT384: tokenizer, positions and the
    blocks before the head, final norm; seqNet's count in Table II excludes its backbone: 0)."""
    with torch.device("meta"):
        if MODEL_BACKBONE[name] == "cct384":
            cct, blocks = CCT384(), CCT_BLOCKS_BEFORE_HEAD[name]
            if blocks == 0:
                return _count(cct.tokenizer)
            used = [cct.tokenizer, cct.classifier.norm, *cct.classifier.blocks[:blocks]]
            return sum(_count(m) for m in used) + cct.classifier.positional_emb.numel()
        if name == "seqnet":
            return 0
        return _count(ResNet18GeM() if MODEL_BACKBONE[name] == "resnet18_gem" else VGG16NetVLAD())


def parameter_count(name: str) -> int:
    """Head + backbone parameters at the published sizes, as Table II counts them."""
    with torch.device("meta"):
        head = build_model(name)
    return _count(head) + backbone_parameter_count(name)

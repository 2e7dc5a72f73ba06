"""Sequence models for seq-VPR on CCT384 token maps; `build_model(name)` is the registry."""
from seqvpr.models.opticornet import OptiCorNet
from seqvpr.models.sequence import JIST, AdaptSTformer, SeqNet, SeqVLAD, STformer

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

# models whose descriptor does not depend on a fixed sequence length
LENGTH_AGNOSTIC = {"adapt_stformer", "seqvlad", "seqnet", "jist", "opticornet",
                   "adapt_transformer_temporal", "adapt_seqgem_only", "adapt_dense_k576"}


def build_model(name: str, **kwargs):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)

"""Sequence heads (`build_model(name)`, the registry), their frame backbones (`MODEL_BACKBONE`,
`seqvpr.models.backbones.build_backbone`) and the Table II parameter counts (`parameter_count`).

Head inputs, per frame of a (B, L, ...) batch:
- `cct384` models: the CCT384 token map (576, 384) after `CCT_BLOCKS_BEFORE_HEAD[name]` blocks
  (8 by default: the authors' `--trunc_te 8`; STformer: 0, i.e. the tokenizer output without
  positions, because its own spatial and temporal CCT branches start there);
- `vgg16_netvlad` models: the 4096-D NetVLAD + WPCA descriptor;
- `resnet18_gem` models: the 512-D CosPlace descriptor.
"""
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable

import torch
from torch import nn

from seqvpr.embed.cct import CCT384, DEFAULT_LAYERS
from seqvpr.models.backbones import ResNet18GeM, VGG16NetVLAD
from seqvpr.models.opticornet import OptiCorNet
from seqvpr.models.sequence import JIST, AdaptSTformer, SeqNet, SeqVLAD
from seqvpr.models.stformer import STformer

@dataclass(frozen=True)
class Recipe:
    """How a model trains (seqvpr.train): optimiser, schedule, budget, mining and loss settings.

    optimizer "adam" or "sgd" (with `momentum`); weight_decay; lr_step > 0 halves (`lr_gamma`) the
    learning rate every lr_step epochs (seqNet's StepLR); queries_per_epoch 0: every training
    query, as the references; patience 0: no early stopping (seqNet's default); negatives: nNeg
    mined per query; loss "triplet" (summed over the negatives, divided by their number, as the
    Adapt-STformer and seqNet code) or "quadruplet" (OptiCorNet's Eqs. 7-9 on the two nearest);
    margin: the references' `--margin`, which negative mining always compares as sqrt(margin) on
    Euclidean distances; sqrt_margin_in_loss: the triplet loss uses sqrt(margin) too (seqNet's
    `nn.TripletMarginLoss(margin=opt.margin**0.5)`, oravus/seqNet main.py and the Adapt-STformer
    code's seqnet branch of get_models.py), otherwise margin itself (that code's other models);
    group_lrs: learning rates of named parts of the head (`head.<name>`), the rest at `lr` (STformer:
    the authors' get_models.py gives its spatial, temporal and aggregation parts their own);
    start_is_candidate: the starting weights compete with the trained epochs for the checkpoint
    (the Adapt-STformer code's svpr_main.py evaluates before each epoch's training, the first time
    on the start), or only trained epochs do (seqNet's main.py evaluates after each epoch's);
    model_kwargs: constructor arguments of the head under this budget (none: its published size)."""

    optimizer: str = "adam"
    lr: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_step: int = 0
    lr_gamma: float = 0.5
    epochs: int = 200
    queries_per_epoch: int = 0
    batch_size: int = 4
    negatives: int = 5
    negative_sample: int = 1000
    margin: float = 0.1
    sqrt_margin_in_loss: bool = False
    group_lrs: dict = field(default_factory=dict)  # head part name -> its learning rate
    start_is_candidate: bool = True
    loss: str = "triplet"
    patience: int = 5
    seq_len: int = 5
    kmeans_init: bool = True
    model_kwargs: dict = field(default_factory=dict)  # the head's size under this budget (default: published)


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry: how to build the head, what its frame backbone is, and how it trains.

    gpu: the authors' recipe (source cited in `recipe_source`); cpu: the budget that trains it
    visibly on the synthetic default in minutes on 2 cores, and `cpu_note` says how and why it
    differs. fixed_length: built for one sequence length (`seq_len`); default_table: trained and
    evaluated by default (the Table III/IV ablations are trained on request)."""

    name: str
    build: Callable[..., nn.Module]
    backbone: str
    gpu: Recipe
    cpu: Recipe
    recipe_source: str
    cpu_note: str
    fixed_length: bool = False
    cct_blocks: int = DEFAULT_LAYERS  # CCT384 blocks before the head (cct384 backbones)
    paper_parameters: float | None = None  # Table II of the Adapt-STformer paper, backbone included
    default_table: bool = True

    def recipe(self, on_gpu: bool) -> Recipe:
        return self.gpu if on_gpu else self.cpu


# The Adapt-STformer authors' recipe (paper Sec. IV "Training"; ai4ce/Adapt-STFormer svpr_main.py and
# sbatch_files/train/*.sbatch): Adam lr 1e-5, batches of 4 tuples, 5 negatives, margin 0.1, L = 5,
# early stop after more than 5 epochs without a better Recall@5. SeqVLAD and STformer are trained with it there.
AUTHORS = Recipe(epochs=200)
# STformer in the same code base (get_models.py, arch "stformer"): Adam without weight decay and its own
# learning rates, 1e-4 for the spatial branch and the NetVLAD aggregation, 1e-3 for the temporal branch
# (`--lr` is not read for it); cct_stformer_train.sbatch: --nEpochs 100, --patience 5.
STFORMER = replace(AUTHORS, epochs=100, lr=1e-4, group_lrs={"spatial": 1e-4, "temporal": 1e-3, "aggregation": 1e-4})
# seqNet's (oravus/seqNet main.py defaults): SGD lr 1e-4, momentum 0.9, weight decay 1e-3, halved every
# 50 epochs, 200 epochs, batches of 16 triplets of 12 images (datasets.py QueryDatasetFromStruct: nNeg=10),
# no early stopping, TripletMarginLoss(margin=0.1**0.5), evaluated after each epoch's training only.
SEQNET = Recipe(optimizer="sgd", lr=1e-4, weight_decay=1e-3, lr_step=50, epochs=200, batch_size=16, negatives=10,
                patience=0, sqrt_margin_in_loss=True, kmeans_init=False, start_is_candidate=False)
# OptiCorNet's "Implementation details": SGD lr 1e-4, momentum 0.9, weight decay 1e-3, halved every 50
# epochs, 200 epochs, batches of 32 quadruplets, "each tuple composed of L = 12 images" (10 negatives, as
# seqNet's, whose training it follows), checkpoints "saved at each evaluation step" and the best on
# validation kept (the start is not one of them, as in seqNet's main.py).
OPTICORNET = Recipe(optimizer="sgd", lr=1e-4, weight_decay=1e-3, lr_step=50, epochs=200, batch_size=32, negatives=10,
                    loss="quadruplet", patience=0, kmeans_init=False, start_is_candidate=False)
# CPU: the same losses, mining and batch sizes on a small budget, with a learning rate raised so a
# few epochs move the weights (the authors' lr 1e-5 needs their hundreds of epochs).
CPU_ADAM = replace(AUTHORS, lr=3e-4, epochs=3, queries_per_epoch=12)
CPU_NOTE = "lr 3e-4 and 3 epochs of 12 queries (authors: lr 1e-5, up to 200 epochs of every query)"

REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    REGISTRY[spec.name] = spec
    return spec


for _spec in (
    ModelSpec("adapt_stformer", AdaptSTformer, "cct384", AUTHORS, replace(CPU_ADAM, epochs=5, queries_per_epoch=24),
              "Adapt-STformer paper Sec. IV; ai4ce/Adapt-STFormer cct_adapt_stformer_train.sbatch",
              "lr 3e-4 and 5 epochs of 24 queries (authors: lr 1e-5, up to 200 epochs of every query)",
              paper_parameters=13.9e6),
    ModelSpec("seqvlad", SeqVLAD, "cct384", replace(AUTHORS, epochs=100), CPU_ADAM,
              "ai4ce/Adapt-STFormer cct_seqvlad_train.sbatch (--nEpochs 100; Mereu et al.'s recipe)",
              "lr 3e-4 and 3 epochs of 12 queries (authors: lr 1e-5, up to 100 epochs of every query)",
              paper_parameters=13.3e6),
    ModelSpec("stformer", STformer, "cct384", STFORMER,
              replace(CPU_ADAM, epochs=4, queries_per_epoch=16, model_kwargs={"blocks": 1, "token_pool": 4}),
              "ai4ce/Adapt-STFormer cct_stformer_train.sbatch (--nEpochs 100 --weightDecay 0) and get_models.py "
              "(Adam, lr 1e-4 spatial and aggregation, 1e-3 temporal)",
              "1 spatial + 1 temporal block (published: 4 + 4) on 4 x 4 token means (a 6 x 6 grid: one space-time "
              "window), lr 3e-4 for every part, "
              "4 epochs of 16 queries (authors: lr 1e-4 spatial and aggregation, 1e-3 temporal, up to 100 epochs "
              "of every query; their rates on this budget reached test R@5 0.640 on oxford_easy, 3e-4 0.764): the "
              "full model takes about 10 s per sequence on 2 CPU cores",
              fixed_length=True, cct_blocks=0, paper_parameters=13.5e6),
    ModelSpec("seqnet", SeqNet, "vgg16_netvlad", SEQNET, replace(SEQNET, lr=1e-2, epochs=3, queries_per_epoch=48),
              "oravus/seqNet main.py defaults", "lr 1e-2, 3 epochs of 48 queries (seqNet: lr 1e-4, 200 epochs)",
              paper_parameters=83.9e6),
    ModelSpec("jist", JIST, "resnet18_gem", AUTHORS, replace(CPU_ADAM, epochs=10, queries_per_epoch=48),
              "JIST trained as the Adapt-STformer code base trains its baselines (svpr_main.py)",
              "lr 3e-4 and 10 epochs of 48 queries (authors: lr 1e-5, up to 200 epochs of every query); its head "
              "on 16-D frame descriptors takes seconds an epoch",
              paper_parameters=11.4e6),
    # CPU margin 2.0: chosen by route-fold cross-validation on Oxford-easy's training split
    # (scripts/cross_validate.py; README, "OptiCorNet's margin"), the paper stating none.
    ModelSpec("opticornet", OptiCorNet, "vgg16_netvlad", OPTICORNET,
              replace(OPTICORNET, lr=1e-2, epochs=20, queries_per_epoch=96, margin=2.0),
              "OptiCorNet paper, Implementation Details",
              "lr 1e-2, 20 epochs of 96 queries, margin 2.0 chosen on training folds (paper: lr 1e-4, 200 epochs, "
              "margin not stated; GPU default 0.1, seqNet's)",
              fixed_length=True),
    # ablations of the Adapt-STformer paper (Tables III and IV), trained as Adapt-STformer
    ModelSpec("adapt_transformer_temporal", partial(AdaptSTformer, temporal="transformer"), "cct384", AUTHORS,
              CPU_ADAM, "Adapt-STformer paper Table III (--use_temporal_encoder)", CPU_NOTE, default_table=False),
    ModelSpec("adapt_seqgem_only", partial(AdaptSTformer, temporal="seqgem"), "cct384", AUTHORS, CPU_ADAM,
              "Adapt-STformer paper Table III (--no_recurrent_dte)", CPU_NOTE, default_table=False),
    ModelSpec("adapt_dense_k576", partial(AdaptSTformer, spatial="dense"), "cct384", AUTHORS, CPU_ADAM,
              "Adapt-STformer paper Table IV (--spatial_ablation)", CPU_NOTE, default_table=False),
):
    register(_spec)

# Views of the registry, for readers that need one field of every model
MODELS = {name: spec.build for name, spec in REGISTRY.items()}
MODEL_BACKBONE = {name: spec.backbone for name, spec in REGISTRY.items()}
FIXED_LENGTH = {name for name, spec in REGISTRY.items() if spec.fixed_length}
CCT_BLOCKS_BEFORE_HEAD = {name: spec.cct_blocks for name, spec in REGISTRY.items() if spec.backbone == "cct384"}
PAPER_PARAMETERS = {name: spec.paper_parameters for name, spec in REGISTRY.items() if spec.paper_parameters}
TABLE_MODELS = [name for name, spec in REGISTRY.items() if spec.default_table]


def model_spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def build_model(name: str, **kwargs):
    return model_spec(name).build(**kwargs)


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

"""Training of the sequence models on cached CCT384 tokens, as the Adapt-STformer authors train
(ai4ce/Adapt-STFormer `svpr_main.py`, `train.py`, `datasets.py`, `get_models.py`, themselves seqNet's
recipe): the NetVLAD layers start from k-means centres of training tokens; every epoch the
descriptors of all training sequences are cached; per query the nearest non-trivial positive, and
negatives resampled from the candidates plus the query's `negCache` of past hard negatives, of which
only margin-violating ones are kept; batches of such tuples; summed triplet loss (margin 0.1;
seqNet's sqrt(0.1)) divided by the number of negatives; the weights with the best validation
Recall@5 are kept, the starting weights among them where the authors' code evaluates them
(svpr_main.py evaluates before each epoch's training; seqNet's main.py, and so SeqNet and
OptiCorNet, only after: `Recipe.start_is_candidate`); early stop when `not_improved > patience`. Each
model's optimiser, schedule, batch size, loss and budget come from its registry entry
(`seqvpr.models.REGISTRY`, `TrainConfig.for_model`): Adam lr 1e-5 and batches of 4 for the
Adapt-STformer code base's models, seqNet's SGD with StepLR for SeqNet, OptiCorNet's SGD with its
quadruplet loss; on a CPU a stated smaller budget.

The cached tokens are those after the frozen CCT blocks (`seqvpr.embed.cct`): the trainable CCT
blocks after the cut (`tail`, none with a frozen backbone) run per frame before the head. Heads
whose published frame backbone is not CCT384 (`seqvpr.models.MODEL_BACKBONE`: JIST's ResNet-18 +
GeM, SeqNet's and OptiCorNet's VGG16 + NetVLAD) read either that backbone's frame descriptors
(`published_features`: `seqvpr.embed.frame_descriptors` puts them in the split in place of the
tokens, and the head is built at its published width) or what the token cache has: each frame's
final CCT tokens pooled into a frame descriptor that keeps the token map's layout
(`GridWhitening`: means over a 2 x 2 grid of the map, PCA-whitened to POOLED_DIM on the training
split, as the published VGG16 + NetVLAD descriptor is WPCA-whitened), with the head built for that
dimension. Plain mean-pooling of the seeded random CCT's tokens leaves the synthetic world's
Oxford-easy test split at chance (R@5 0.348 against a random 0.404), the grid means whitened to
16-D retrieve it at 0.865 without a head (README, "What the synthetic world lets a model learn").
"""
import copy
import io
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqvpr.atomic import atomic_write_bytes
from seqvpr.data import ShardFolder, collect, join_rows, sequence_windows, take_rows
from seqvpr.embed.cct import CCTTail
from seqvpr.embed.embed import pick_device
from seqvpr.metrics import nearest, recall_at_k
from seqvpr.models import FIXED_LENGTH, MODEL_BACKBONE, Recipe, build_model, model_spec
from seqvpr.models.layers import NetVLAD
from seqvpr.models.opticornet import quadruplet_loss

KMEANS_DESCRIPTORS = 50_000  # the authors' descriptors_num, 100 random tokens per image
KMEANS_PER_IMAGE = 100


@dataclass
class SplitData:
    """One split of a benchmark, in struct-file order (the split table's `order`). Tokens are read
    from the shards when indexed (`seqvpr.data.FrameArray`, see `load_split_data`) or held in memory."""

    db_tokens: np.ndarray  # (Ndb, n, D) float16, after the frozen blocks; or (Ndb, D) published frame descriptors
    q_tokens: np.ndarray  # (Nq, n, D) float16; or (Nq, D)
    db_bounds: np.ndarray  # (Ndb, 2) [start, end) runs
    q_bounds: np.ndarray
    positives: list  # per query: db indices within the radius (and heading) rule
    nontrivial_positives: list
    negatives: np.ndarray  # (Nq, K) negative candidates (outside the negative radius), -1 padded
    frame_ids: list = field(default_factory=list)  # database frames, then queries


def reads_pooled_tokens(name: str, published_features: bool = False) -> bool:
    """Whether model `name` reads pooled CCT tokens (GridWhitening) in place of its published frame descriptor."""
    return MODEL_BACKBONE[name] != "cct384" and not published_features


POOLED_GRID = 2  # GridWhitening: means over a POOLED_GRID x POOLED_GRID grid of the token map
POOLED_DIM = 16  # ... whitened to this many dimensions (the heads' input width); see GridWhitening


class GridWhitening(nn.Module):
    """A frame descriptor from a token map that keeps its layout: (N, n, D) tokens on a square
    sqrt(n) x sqrt(n) map -> means over a `grid` x `grid` grid of it (N, grid^2 D), centred and
    PCA-whitened to `dim` (fitted on training frames by `fit`, as the WPCA that ends the published
    VGG16 + NetVLAD descriptor), L2-normalised: (N, dim) float32. Its mean and projection are
    buffers (saved in checkpoints, never trained); sized at `fit` or when a checkpoint is loaded.
    With no more training frames than `dim` (a tiny split), the dimensions past the centred frames'
    rank stay zero."""

    def __init__(self, dim: int = POOLED_DIM, grid: int = POOLED_GRID):
        super().__init__()
        self.dim, self.grid = dim, grid
        self.register_buffer("mean", torch.zeros(0))
        self.register_buffer("projection", torch.zeros(0, dim))

    def grid_means(self, tokens: torch.Tensor) -> torch.Tensor:
        n, side = tokens.shape[1], round(tokens.shape[1] ** 0.5)
        if side * side != n or side % self.grid:
            raise ValueError(f"{n} tokens are not a square map divisible into a {self.grid} x {self.grid} grid")
        cell = side // self.grid
        return tokens.reshape(len(tokens), self.grid, cell, self.grid, cell, -1).mean((2, 4)).flatten(1)

    def fit(self, grid_means: Iterable[np.ndarray]) -> int:
        """Fit the whitening on batches of (M, grid^2 D) grid means of training frames, streamed: it
        keeps their count, sum and scatter (grid^2 D squared float64: 18 MB at 1,536-D, whatever the
        split's size), shifted by the first batch's mean so the centring loses no precision, then
        takes the eigenvectors of the centred scatter (the right singular vectors of the centred
        frames, as an SVD of them would give). Each eigenvector's largest entry is made positive, so
        the fit does not depend on the eigensolver's signs. Returns the frames used; ValueError when
        there are none."""
        count, shift, total, scatter = 0, None, None, None
        for batch in grid_means:
            x = np.asarray(batch, dtype=np.float64)
            if not len(x):
                continue
            if shift is None:
                shift = x.mean(0)
                total, scatter = np.zeros_like(shift), np.zeros((len(shift), len(shift)))
            x = x - shift
            count, total, scatter = count + len(x), total + x.sum(0), scatter + x.T @ x
        if not count:
            raise ValueError("GridWhitening.fit: no training frames")
        offset = total / count
        eigenvalues, eigenvectors = np.linalg.eigh(scatter - count * np.outer(offset, offset))
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
        kept = int(min(self.dim, np.sum(eigenvalues > max(eigenvalues[0], 0.0) * 1e-10)))
        signs = np.sign(eigenvectors[np.abs(eigenvectors).argmax(0), np.arange(eigenvectors.shape[1])])
        projection = np.zeros((len(shift), self.dim))
        projection[:, :kept] = eigenvectors[:, :kept] * signs[:kept] / np.sqrt(eigenvalues[:kept])
        self.mean = torch.from_numpy((shift + offset).astype(np.float32))
        self.projection = torch.from_numpy(projection.astype(np.float32))
        return count

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if not len(self.mean):
            raise RuntimeError("GridWhitening used before fit (or loading a checkpoint)")
        return F.normalize((self.grid_means(tokens) - self.mean) @ self.projection, dim=-1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("mean", "projection"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class SequenceModel(nn.Module):
    """The trainable CCT blocks after the cut (per frame), optionally a pooled frame descriptor
    (`GridWhitening`, for heads standing in for another frame backbone), then the head."""

    def __init__(self, head: nn.Module, tail: CCTTail | None = None, pooling: GridWhitening | None = None):
        super().__init__()
        self.head = head
        self.tail = tail
        self.pooling = pooling

    @property
    def pooled(self) -> bool:
        return self.pooling is not None

    def final_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, n, D) cached tokens -> final CCT tokens (N, n, D), through the trainable blocks if any."""
        return tokens if self.tail is None else self.tail(tokens)

    def frames(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, n, D) cached tokens -> what the head reads per frame: final CCT tokens (N, n, D), or
        with `pooling` the frame descriptors (N, POOLED_DIM)."""
        tokens = self.final_tokens(tokens)
        return self.pooling(tokens) if self.pooled else tokens

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L, n, D) cached tokens -> (B, dim) descriptors."""
        if self.tail is None and not self.pooled:
            return self.head(tokens)
        return self.head(self.frames(tokens.flatten(0, 1)).unflatten(0, tokens.shape[:2]))


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def token_batches(tokens: np.ndarray, batch_size: int, device=None):
    """(<= batch_size, n, D) float32 tensors on `device` of consecutive frames of `tokens` (array or FrameArray)."""
    for i in range(0, len(tokens), batch_size):
        yield torch.from_numpy(np.asarray(tokens[i:i + batch_size], dtype=np.float32)).to(device)


def sequences(tokens: np.ndarray, windows: np.ndarray, rows, device=None) -> torch.Tensor:
    """(B, L, ...) float32 tensor of the frames of windows[rows], read from `tokens` (array or FrameArray)."""
    return torch.from_numpy(np.asarray(tokens[windows[rows]], dtype=np.float32)).to(device)


@torch.no_grad()
def frame_features(model: SequenceModel, tokens: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Every frame's features (`SequenceModel.frames`) computed once, so sequences that share frames
    do not recompute them: the cached tokens themselves with a frozen backbone and a token head.
    Read `batch_size` frames at a time; kept in memory up to `seqvpr.data.DESCRIPTOR_BUDGET` bytes,
    beyond in a temporary file (`seqvpr.data.collect`)."""
    if model.tail is None and not model.pooled:
        return tokens
    model.eval()
    out = collect(model.frames(batch).cpu().numpy().astype(np.float32 if model.pooled else np.float16)
                  for batch in token_batches(tokens, batch_size, _device(model)))
    return tokens if out is None else out


@torch.no_grad()
def describe(model: SequenceModel, tokens: np.ndarray, windows: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Sequence descriptors (N, dim) float32 of every frame's window, `batch_size` sequences at a
    time, in memory or beyond `seqvpr.data.DESCRIPTOR_BUDGET` bytes in a temporary file (a FrameArray)."""
    model.eval()
    used = np.unique(windows)  # only the frames these windows read go through the trainable blocks
    frames, windows, device = frame_features(model, take_rows(tokens, used)), np.searchsorted(used, windows), _device(model)
    out = collect(model.head(sequences(frames, windows, slice(i, i + batch_size), device)).cpu().numpy()
                  for i in range(0, len(windows), batch_size))
    return np.zeros((0, 1), np.float32) if out is None else out


def evaluate_recall(model, data: SplitData, length: int, ks=(1, 5, 10, 20)) -> dict[int, float]:
    db = describe(model, data.db_tokens, sequence_windows(data.db_bounds, length))
    q = describe(model, data.q_tokens, sequence_windows(data.q_bounds, length))
    return recall_at_k(nearest(db, q, max(ks)), data.positives, ks)


@dataclass(frozen=True)
class TrainConfig(Recipe):
    """A model's training run: its recipe (`seqvpr.models.Recipe`; `for_model` takes the registry's
    CPU or GPU defaults) plus the model, its constructor arguments, the seed and the device. The
    dataclass defaults are the Adapt-STformer authors' recipe."""

    model: str = "adapt_stformer"
    seed: int = 0
    device: str = "auto"

    @classmethod
    def for_model(cls, model: str, on_gpu: bool, **overrides) -> "TrainConfig":
        """The registry's recipe of `model` (the authors' on a GPU, its CPU budget otherwise), with
        `overrides` (None values ignored) on top."""
        recipe = asdict(model_spec(model).recipe(on_gpu))
        return cls(model=model, **{**recipe, **{k: v for k, v in overrides.items() if v is not None}})


@dataclass
class TrainResult:
    state_dict: dict
    best_recall5: float
    initial_recall: dict
    start_state_dict: dict  # the weights the first epoch starts from: seeded init, NetVLAD on k-means centres
    kmeans_layers: int = 0  # NetVLAD layers initialised on k-means centres (0: the start is the seeded init)
    best_epoch: int = 0  # 0: no epoch beat the starting weights, which are kept (start_is_candidate only)
    history: list = field(default_factory=list)  # per epoch: {"epoch", "loss", "recall", "tuples", "skipped"}
    losses: list = field(default_factory=list)  # per step (batch)


def mine_tuple(q_desc: np.ndarray, db_desc: np.ndarray, nontrivial: np.ndarray, candidates: np.ndarray,
               neg_cache: np.ndarray, negatives: int, sample: int, margin: float, rng: np.random.Generator):
    """(positive, negatives) of one query as the reference `QueryDatasetFromStruct.__getitem__`, or
    None when it has no non-trivial positive or no negative violates the margin.

    Positive: the non-trivial positive nearest in descriptor space. Negatives: `sample` candidates
    drawn with replacement, joined with the query's cached hard negatives; of their 10 x `negatives`
    nearest, those closer than d(q, p) + sqrt(margin) (Euclidean, as the reference), at most
    `negatives` of them."""
    candidates = candidates[candidates >= 0]
    if len(nontrivial) == 0 or len(candidates) == 0:
        return None
    d_pos = np.linalg.norm(db_desc[nontrivial] - q_desc, axis=1)
    positive = int(nontrivial[np.argmin(d_pos)])
    pool = np.unique(np.concatenate([neg_cache, rng.choice(candidates, sample)]).astype(np.int64))
    d_neg = np.linalg.norm(db_desc[pool] - q_desc, axis=1)
    nearest_first = np.argsort(d_neg, kind="stable")[: negatives * 10]
    violating = nearest_first[d_neg[nearest_first] < d_pos.min() + margin ** 0.5]
    if len(violating) == 0:
        return None
    return positive, pool[violating[:negatives]]


def batch_loss(model: SequenceModel, cfg: TrainConfig, data: SplitData, tuples: list, q_windows, db_windows):
    """The reference's batch loss over the queries, positives and negatives of a batch of tuples; summed
    triplet losses divided by the number of negatives, with margin or, seqNet, sqrt(margin)
    (`Recipe.sqrt_margin_in_loss`); OptiCorNet: its quadruplet loss per tuple."""
    device = _device(model)
    if cfg.loss == "quadruplet":  # Eqs. 7-9 read only the two nearest mined negatives (mined nearest first)
        tuples = [(qi, p, negs[:2]) for qi, p, negs in tuples]
    queries = [qi for qi, _, _ in tuples]
    db_rows = [p for _, p, _ in tuples] + [n for _, _, negs in tuples for n in negs]
    q = model(sequences(data.q_tokens, q_windows, queries, device))
    others = model(sequences(data.db_tokens, db_windows, db_rows, device))
    positives, negatives = others[: len(tuples)], others[len(tuples):]
    if cfg.loss == "quadruplet":  # OptiCorNet's Eqs. 7-9 per tuple with its two nearest mined negatives
        return quadruplet_loss(q, positives, negatives[0::2], negatives[1::2], margin=cfg.margin)
    owner = torch.tensor([i for i, (_, _, negs) in enumerate(tuples) for _ in negs], device=device)
    margin = cfg.margin ** 0.5 if cfg.sqrt_margin_in_loss else cfg.margin
    return F.triplet_margin_loss(q[owner], positives[owner], negatives, margin=margin, reduction="sum") / len(owner)


def head_kwargs(name: str, seq_len: int, model_kwargs: dict | None = None, published_features: bool = False) -> dict:
    """The head's constructor arguments: `seq_len` for fixed-length models, and for heads reading
    pooled CCT tokens an input (and, SeqNet, output) dimension of the CCT width, unless given;
    heads reading their published frame descriptors keep their published widths."""
    kwargs = dict(model_kwargs or {})
    if name in FIXED_LENGTH:
        kwargs["seq_len"] = seq_len
    if not reads_pooled_tokens(name, published_features):
        return kwargs
    kwargs.setdefault("dim", POOLED_DIM)
    if name == "seqnet":
        kwargs.setdefault("out_dim", kwargs["dim"])  # seqNet maps descriptors to their own width
    elif name == "jist":  # the frames are fixed features: CosPlace's last layer trains in the head
        kwargs.setdefault("frame_fc", True)
    return kwargs


def build_sequence_model(name: str, seq_len: int, model_kwargs: dict | None = None, tail: CCTTail | None = None,
                         seed: int = 0, published_features: bool = False) -> SequenceModel:
    """A head with seeded initial weights (the same for training and for the untrained rows).
    published_features: the head reads its published backbone's frame descriptors (no CCT tail)."""
    torch.manual_seed(seed)
    kwargs = head_kwargs(name, seq_len, model_kwargs, published_features)
    pooling = GridWhitening(kwargs["dim"]) if reads_pooled_tokens(name, published_features) else None
    return SequenceModel(build_model(name, **kwargs), copy.deepcopy(tail), pooling)


@torch.no_grad()
def fit_pooling(model: SequenceModel, data: SplitData, batch_size: int = 16) -> int:
    """Fit the model's GridWhitening (if any) on every frame of a training split (its database and
    query frames, through the trainable CCT blocks as they start), `batch_size` frames at a time,
    streamed (memory flat in the split's size); returns the frames used (0 without pooling).
    Training and the untrained rows fit it the same way."""
    if not model.pooled:
        return 0
    model.eval()

    used = model.pooling.fit(model.pooling.grid_means(model.final_tokens(batch)).cpu().numpy()
                             for tokens in (data.db_tokens, data.q_tokens)
                             for batch in token_batches(tokens, batch_size, _device(model)))
    model.pooling.to(_device(model))
    return used


@torch.no_grad()
def initialise_vlad(model: SequenceModel, data: SplitData, rng: np.random.Generator, seed: int = 0) -> int:
    """k-means initialisation of every NetVLAD on token-level features (SeqVLAD, STformer,
    Adapt-STformer and its ablations), on 100 random final tokens of up to 500 random training
    frames, as `modified_initialize_seqvlad_layer`. Returns how many layers it initialised."""
    layers = [m for m in model.head.modules() if isinstance(m, NetVLAD) and m.dim == data.db_tokens.shape[-1]]
    if not layers or model.pooled:
        return 0
    total = len(data.db_tokens) + len(data.q_tokens)
    picked = np.sort(rng.choice(total, min(total, KMEANS_DESCRIPTORS // KMEANS_PER_IMAGE), replace=False))
    tokens = frame_features(model, join_rows(data.db_tokens, data.q_tokens, picked))
    per_frame = min(KMEANS_PER_IMAGE, tokens.shape[1])
    descriptors = np.concatenate([t[rng.choice(len(t), per_frame, replace=False)]
                                  for start in range(0, len(tokens), 16)  # 16 frames' float32 tokens at a time
                                  for t in np.asarray(tokens[start:start + 16], dtype=np.float32)])
    for layer in layers:
        layer.init_from_descriptors(descriptors, seed=seed)
    return len(layers)


def parameter_groups(cfg: TrainConfig, model: nn.Module) -> list[dict]:
    """The trainable parameters of `model` as optimiser groups: one per entry of `cfg.group_lrs`
    (the parameters of `model.head.<name>` at that learning rate), then every other trainable
    parameter at `cfg.lr`; empty groups are left out. Raises ValueError for a name the head lacks."""
    groups, taken = [], set()
    for name, lr in cfg.group_lrs.items():
        part = getattr(model.head, name, None)
        if not isinstance(part, nn.Module):
            raise ValueError(f"{cfg.model}: group_lrs names {name!r}, which its head has no part called")
        params = [p for p in part.parameters() if p.requires_grad]
        taken.update(map(id, params))
        if params:
            groups.append({"params": params, "lr": lr})
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    return groups + ([{"params": rest, "lr": cfg.lr}] if rest else [])


def make_optimiser(cfg: TrainConfig, model: nn.Module):
    """The recipe's optimiser over `model`'s trainable parameters (`parameter_groups`) and its
    learning-rate schedule: Adam (weight decay as Adam's L2 term, as torch.optim.Adam), or SGD with
    momentum and weight decay halved (`lr_gamma`) every `lr_step` epochs (seqNet's
    `optim.lr_scheduler.StepLR`); the scheduler is None without a step."""
    groups = parameter_groups(cfg, model)
    if cfg.optimizer == "adam":
        optimiser = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "sgd":
        optimiser = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; expected 'adam' or 'sgd'")
    scheduler = torch.optim.lr_scheduler.StepLR(optimiser, cfg.lr_step, cfg.lr_gamma) if cfg.lr_step > 0 else None
    return optimiser, scheduler


def train(cfg: TrainConfig, train_data: SplitData, val_data: SplitData, tail: CCTTail | None = None, log=print,
          published_features: bool = False) -> TrainResult:
    """tail: the CCT blocks after the embedding cut with their starting weights (None: frozen backbone).
    published_features: the splits hold the model's published frame descriptors in place of tokens.
    Raises ValueError, before any work, when no validation query has a positive (no epoch could be chosen)."""
    if not any(len(p) for p in val_data.positives):
        raise ValueError(f"the validation split has no query with a positive ({len(val_data.positives)} queries): Recall@5 "
                         "is undefined, so no epoch could be kept; check its radius and frame_separation")
    rng = np.random.default_rng(cfg.seed)
    device = pick_device(cfg.device)
    model = build_sequence_model(cfg.model, cfg.seq_len, cfg.model_kwargs, tail, cfg.seed, published_features).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    log(f"{cfg.model}: {sum(p.numel() for p in trainable):,} trainable parameters "
        f"({sum(p.numel() for p in model.tail.parameters() if p.requires_grad) if model.tail else 0:,} in CCT blocks after the cut)")
    pooled_frames = fit_pooling(model, train_data)
    if pooled_frames:
        log(f"{cfg.model}: frame descriptor whitening fitted on {pooled_frames} training frames")
    kmeans_layers = initialise_vlad(model, train_data, rng, cfg.seed) if cfg.kmeans_init else 0
    log(f"{cfg.model}: k-means initialised {kmeans_layers} NetVLAD layer(s)")
    optimiser, scheduler = make_optimiser(cfg, model)
    q_windows = sequence_windows(train_data.q_bounds, cfg.seq_len)
    db_windows = sequence_windows(train_data.db_bounds, cfg.seq_len)
    trainable_queries = np.array([qi for qi, pos in enumerate(train_data.nontrivial_positives) if len(pos)], dtype=np.int64)
    neg_cache = [np.zeros(0, dtype=np.int64) for _ in range(len(q_windows))]
    initial = evaluate_recall(model, val_data, cfg.seq_len)
    best, stale = (initial[5] if cfg.start_is_candidate else -1.0), 0  # -1: the first trained epoch is kept
    start = copy.deepcopy(model.state_dict())
    result = TrainResult(state_dict=start, best_recall5=initial[5], initial_recall=initial, start_state_dict=start,
                         kmeans_layers=kmeans_layers)
    log(f"{cfg.model}: before training val R@5 {initial[5]:.3f} ({len(trainable_queries)} training queries with a "
        "non-trivial positive)" + ("" if cfg.start_is_candidate else "; only trained epochs are kept, as its authors' code"))
    for epoch in range(1, cfg.epochs + 1):
        order = rng.permutation(trainable_queries)
        if cfg.queries_per_epoch:
            order = order[: cfg.queries_per_epoch]
        # the reference's per-epoch feature cache: every database sequence, and this epoch's queries
        db_desc = describe(model, train_data.db_tokens, db_windows)
        q_desc, q_row = describe(model, train_data.q_tokens, q_windows[order]), {qi: k for k, qi in enumerate(order.tolist())}
        epoch_losses, used, skipped = [], 0, 0
        model.train()
        for start in range(0, len(order), cfg.batch_size):
            tuples = []
            for qi in order[start: start + cfg.batch_size]:
                mined = mine_tuple(q_desc[q_row[qi]], db_desc, train_data.nontrivial_positives[qi], train_data.negatives[qi],
                                   neg_cache[qi], cfg.negatives, cfg.negative_sample, cfg.margin, rng)
                if mined is None or (cfg.loss == "quadruplet" and len(mined[1]) < 2):
                    skipped += 1
                    continue
                neg_cache[qi] = mined[1]
                tuples.append((int(qi), *mined))
            if not tuples:
                continue
            loss = batch_loss(model, cfg, train_data, tuples, q_windows, db_windows)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            epoch_losses.append(loss.item())
            used += len(tuples)
        if scheduler is not None:
            scheduler.step()
        recall = evaluate_recall(model, val_data, cfg.seq_len)
        mean_loss = float(np.mean(epoch_losses)) if epoch_losses else float("nan")
        result.losses += epoch_losses
        result.history.append({"epoch": epoch, "loss": mean_loss, "recall": recall, "tuples": used, "skipped": skipped})
        log(f"{cfg.model}: epoch {epoch} loss {mean_loss:.4f} over {used} tuples ({skipped} queries without a "
            f"margin-violating negative) val R@5 {recall[5]:.3f}")
        if recall[5] > best:
            best, stale = recall[5], 0
            result.state_dict, result.best_recall5, result.best_epoch = copy.deepcopy(model.state_dict()), best, epoch
        else:
            stale += 1
            if cfg.patience and stale > cfg.patience:  # the references: `not_improved > patience`
                log(f"{cfg.model}: early stop after {epoch} epochs")
                break
    return result


def save_checkpoint(path, model_name: str, state_dict: dict, meta: dict, start_state_dict: dict | None = None) -> None:
    """meta must hold seq_len, model_kwargs and tail_blocks (CCT blocks trained after the cut), and
    may hold frame_descriptors ({"backbone", "weights"} of the published frame descriptors it read).
    start_state_dict: the weights training started from, kept so the results can show what the
    k-means initialisation alone gives."""
    buf = io.BytesIO()
    checkpoint = {"model": model_name, "state_dict": {k: v.cpu() for k, v in state_dict.items()}, "meta": meta}
    if start_state_dict is not None:
        checkpoint["start_state_dict"] = {k: v.cpu() for k, v in start_state_dict.items()}
    torch.save(checkpoint, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path, start: bool = False):
    """(model, meta) of a checkpoint; start: with the weights its training started from instead
    ((None, meta) when it has none)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    meta = checkpoint["meta"]
    weights = checkpoint.get("start_state_dict") if start else checkpoint["state_dict"]
    if weights is None:
        return None, meta
    tail = CCTTail(meta["tail_blocks"]) if meta["tail_blocks"] else None
    model = build_sequence_model(checkpoint["model"], meta["seq_len"], meta["model_kwargs"], tail,
                                 published_features=bool(meta.get("frame_descriptors")))
    model.load_state_dict(weights)
    return model.eval(), meta


def load_split_data(shard_dir) -> SplitData:
    """A split from its shard folder (`seqvpr.data.ShardFolder`): bounds, positives and the negative
    candidates in memory, token maps read from the shards when indexed (memory does not grow with
    the split)."""
    folder = ShardFolder(shard_dir)
    return SplitData(
        db_tokens=folder.tokens("db"), q_tokens=folder.tokens("query"), db_bounds=folder.bounds["db"],
        q_bounds=folder.bounds["query"], positives=folder.positives, nontrivial_positives=folder.nontrivial_positives,
        negatives=folder.negatives, frame_ids=folder.frame_ids["db"] + folder.frame_ids["query"],
    )

"""Evaluation of sequence models on a test split: Recall@K (the reference `getRecallAtN`) at several
sequence lengths (models trained at L = 5 evaluated at L = 1, 3, 5), optional PCA fitted on the
training split, and extraction cost, as in Table II. Every row says whether and how its model was
trained and which frame features it read."""
from dataclasses import dataclass

import numpy as np
import torch

from seqvpr.data import sequence_windows
from seqvpr.metrics import RECALL_AT, apply_pca, chance_recall, extraction_cost, fit_pca, nearest, queries_without_positives, recall_at_k
from seqvpr.models import FIXED_LENGTH, MODEL_BACKBONE
from seqvpr.models.opticornet import hierarchical_retrieval
from seqvpr.train import (POOLED_DIM, POOLED_GRID, SplitData, TrainConfig, build_sequence_model, describe,
                          fit_pooling, frame_features)

# The published frame descriptors of the heads whose backbone (MODEL_BACKBONE) is not CCT384
PUBLISHED_FEATURES = {"resnet18_gem": "ResNet-18 + GeM (CosPlace) 512-D", "vgg16_netvlad": "VGG16 + NetVLAD + WPCA 4096-D"}
UNTRAINED_SEED = 0  # the seed training starts from: an untrained row is its start before the k-means initialisation
UNTRAINED = "no: seeded random init"
# A row's weights, in table order: a best trained epoch that was not kept (its start was), a
# checkpoint's kept weights, training's start, the untrained model
ROW_WEIGHTS = ("trained", "kept", "start", "untrained")
START = "no: training's start (seeded init, NetVLAD on k-means centres of training tokens)"


@torch.no_grad()
def learned_frame_descriptors(model, tokens: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """OptiCorNet's S1 (`frame_descriptors`) of every frame, from the frame features its head reads."""
    features = frame_features(model, tokens)
    device = next(model.parameters()).device
    out = [model.head.frame_descriptors(torch.from_numpy(np.asarray(features[i:i + batch_size], dtype=np.float32)).to(device)).cpu().numpy()
           for i in range(0, len(features), batch_size)]
    return np.concatenate(out)


def _sequence_descriptors(model, data: SplitData, length: int) -> tuple[np.ndarray, np.ndarray]:
    return (describe(model, data.db_tokens, sequence_windows(data.db_bounds, length)),
            describe(model, data.q_tokens, sequence_windows(data.q_bounds, length)))


def evaluate_model(model, data: SplitData, length: int, pca_train: SplitData | None = None, pca_dim: int | None = None,
                   rerank: bool = False) -> dict:
    """Recall@K and cost of one model at one sequence length. PCA: fitted on the descriptors of
    every training sequence (database and queries), as the authors' `compute_pca`. rerank:
    OptiCorNet's hierarchical retrieval (its default shortlist by sequence descriptor, re-ranked
    by its learned frame descriptors S1 along the aligned windows, in bounded memory)."""
    db_windows, q_windows = sequence_windows(data.db_bounds, length), sequence_windows(data.q_bounds, length)
    db, q = _sequence_descriptors(model, data, length)  # arrays, or FrameArrays read from a file when large
    if pca_dim:  # in memory: the training split's descriptors, as the authors' compute_pca
        pca = fit_pca(np.concatenate(_sequence_descriptors(model, pca_train, length)), pca_dim)
        db, q = apply_pca(np.asarray(db), pca), apply_pca(np.asarray(q), pca)
    if rerank:  # OptiCorNet's descriptors are 512-D: in memory even for a real-size split
        ranked = hierarchical_retrieval(np.asarray(q), np.asarray(db), learned_frame_descriptors(model, data.q_tokens),
                                        learned_frame_descriptors(model, data.db_tokens), q_windows, db_windows,
                                        top=max(RECALL_AT))
    else:
        ranked = nearest(db, q, max(RECALL_AT))
    recall = recall_at_k(ranked, data.positives, RECALL_AT)
    sample = torch.from_numpy(data.q_tokens[q_windows[:1]].astype("float32"))
    return {"recall": {str(k): v for k, v in recall.items()}, **extraction_cost(model, sample, repeats=2),
            "descriptor_dim": int(db.shape[1])}


def training_note(meta: dict) -> str:
    """How a checkpoint was trained, saying so when no epoch improved on its starting weights.
    meta["weights"]: "start", the checkpoint's starting weights; "trained", its best trained epoch,
    saved where the start was kept; absent, the kept weights."""
    if meta.get("weights") == "start":
        return START
    start = meta["initial_val_recall"]["5"]
    if meta.get("weights") == "trained":
        return (f"yes: epoch {meta['best_trained_epoch']} of {meta['epochs_run']} on {meta['benchmark']} "
                f"({meta['val_split']} R@5 {start:.3f} -> {meta['best_trained_val_recall5']:.3f}), its best trained "
                "epoch; not kept, as its start scored higher")
    where = f"{meta['benchmark']} ({meta['val_split']} R@5 {start:.3f} -> {meta['best_val_recall5']:.3f})"
    if meta["best_epoch"] == 0:
        kept = "k-means init kept" if meta.get("kmeans_layers") else "seeded init kept"
        return f"no: {meta['epochs_run']} epochs on {where} never beat the start, {kept}"
    return f"yes: epoch {meta['best_epoch']} of {meta['epochs_run']} on {where}"


@dataclass
class PublishedFeatures:
    """A published frame backbone's descriptors (seqvpr.embed.frame_descriptors) of the test split and,
    for PCA, of the training split, in place of their tokens; `weights` is the backbone's identity."""

    weights: str
    data: SplitData
    pca_train: SplitData | None = None


def weights_label(weights: str) -> str:
    return weights if weights.startswith("random-init") else f"sha256:{weights[:12]}"


def features_note(name: str, tail_blocks: int, published_weights: str | None = None, model_kwargs: dict | None = None) -> str:
    """What the head read per frame, and how that differs from its paper (and the head's size where
    its budget sets one, `model_kwargs`)."""
    size = f"; head built with {model_kwargs} (published: default size)" if model_kwargs else ""
    if published_weights is not None:
        return f"{PUBLISHED_FEATURES[MODEL_BACKBONE[name]]}, the published backbone ({weights_label(published_weights)}){size}"
    cct = f"CCT384 final tokens, last {tail_blocks} blocks trained" if tail_blocks else "CCT384 final tokens, frozen"
    if MODEL_BACKBONE[name] != "cct384":
        dim = (model_kwargs or {}).get("dim", POOLED_DIM)
        extra = f"; CosPlace's last layer, Linear({dim}, {dim}) per frame, in the head" if name == "jist" else ""
        return (f"{cct}, {POOLED_GRID} x {POOLED_GRID} grid means whitened to {dim}-D on the training split "
                f"(published: {PUBLISHED_FEATURES[MODEL_BACKBONE[name]]}){extra}{size}")
    if name == "stformer":
        return f"{cct} (published: tokenizer output, before any CCT block){size}"
    return cct + size


def usable_lengths(name: str, model, seq_len: int, lengths: list[int]) -> list[int]:
    """Fixed-length models at their length only; SeqNet at lengths of at least its filter width."""
    if name in FIXED_LENGTH:
        return [seq_len]
    width = getattr(model.head, "width", 1)
    return [length for length in lengths if length >= width] or [seq_len]


def training_loss(meta: dict) -> dict | None:
    """The mean training loss of the first epoch and of the epoch whose weights a checkpoint row
    shows (its kept epoch, or its best trained epoch where meta["weights"] == "trained"), from the
    checkpoint's history; None for training's start or a kept start."""
    if meta.get("weights") == "start":
        return None
    epoch = meta["best_trained_epoch"] if meta.get("weights") == "trained" else meta["best_epoch"]
    losses = {h["epoch"]: h["loss"] for h in meta.get("history", [])}
    if not epoch or not np.isfinite([losses.get(1, np.nan), losses.get(epoch, np.nan)]).all():
        return None  # no trained epoch shown, or an epoch without a tuple to learn from (loss nan)
    return {"first": losses[1], "shown": losses[epoch], "epoch": epoch}


@dataclass
class _Candidate:
    """One model to evaluate: its weights' kind (ROW_WEIGHTS), the row's `trained` note, CCT blocks
    trained, published frame features read (None: tokens), head arguments and training loss."""

    name: str
    model: object
    seq_len: int
    weights: str
    note: str
    blocks: int
    features: "PublishedFeatures | None"
    kwargs: dict | None
    loss: dict | None = None


def evaluate_models(data: SplitData, names: list[str], trained: dict, lengths: list[int], pca_dim: int | None = None,
                    pca_train: SplitData | None = None, tail=None, log=print,
                    published: dict[str, PublishedFeatures] | None = None,
                    model_kwargs: dict[str, dict] | None = None, train_data: SplitData | None = None) -> list[dict]:
    """Rows for every trained model (any key -> (model, checkpoint meta), shown as meta["name"]) and every untrained model in
    `names` at each usable length. Untrained models start as training would: the seeded head and
    `tail`, the CCT blocks after the cut as the encoder has them, at the default training length.
    Fixed-length models (STformer, OptiCorNet) are evaluated at their length only. published:
    backbone name -> its frame descriptors, read by the heads of that backbone (built at their
    published widths, no CCT tail); the others read `data`'s tokens. train_data: the training split,
    on which the untrained heads that read pooled tokens fit their frame descriptor's whitening as
    training does (ValueError without it when such a head is evaluated)."""
    published, model_kwargs = published or {}, model_kwargs or {}
    tail_blocks = len(tail.blocks) if tail is not None else 0
    candidates = [_Candidate(meta["name"], model, meta["seq_len"], meta.get("weights", "kept"), training_note(meta),
                             meta["tail_blocks"], published[MODEL_BACKBONE[meta["name"]]] if meta.get("frame_descriptors") else None,
                             meta.get("model_kwargs"), training_loss(meta))
                  for model, meta in trained.values()]
    seq_len, fitted = TrainConfig.seq_len, {}  # fitted: the untrained pooled heads' whitening, per width
    for name in names:
        features = published.get(MODEL_BACKBONE[name])
        kwargs = model_kwargs.get(name, {})
        model = build_sequence_model(name, seq_len, kwargs, tail=None if features else tail, seed=UNTRAINED_SEED,
                                     published_features=features is not None).eval()
        if model.pooled:
            if train_data is None:
                raise ValueError(f"{name} reads pooled CCT tokens: its untrained row needs the training split "
                                 "(train_data) to fit the frame descriptor's whitening")
            if model.pooling.dim in fitted:  # the same fit (same tail, same frames): read the split once
                model.pooling.load_state_dict(fitted[model.pooling.dim])
            else:
                fit_pooling(model, train_data)
                fitted[model.pooling.dim] = model.pooling.state_dict()
        candidates.append(_Candidate(name, model, seq_len, "untrained", UNTRAINED, 0 if features else tail_blocks,
                                     features, kwargs))
    candidates.sort(key=lambda c: (names.index(c.name) if c.name in names else len(names), c.name, ROW_WEIGHTS.index(c.weights)))
    rows = []
    for c in candidates:
        split, train_split = (c.features.data, c.features.pca_train) if c.features else (data, pca_train)
        for length in usable_lengths(c.name, c.model, c.seq_len, lengths):
            for rerank in (False, True) if c.name == "opticornet" else (False,):
                shown = f"{c.name} + SeqSLAM re-rank" if rerank else c.name
                row = {"model": shown, "length": length, "weights": c.weights, "trained": c.note,
                       "features": features_note(c.name, c.blocks, c.features.weights if c.features else None, c.kwargs),
                       **({"training_loss": c.loss} if c.loss else {}),
                       **evaluate_model(c.model, split, length, train_split, pca_dim, rerank)}
                log(f"{shown} L={length}: R@1 {row['recall']['1']:.3f} R@5 {row['recall']['5']:.3f} (trained: {c.note})")
                rows.append(row)
    return rows


GAIN_LENGTH = 5  # the papers' sequence length, at which the results compare trained and untrained rows


def training_gain(rows: list[dict], length: int, chance: float | None = None) -> dict:
    """Per trained model: the R@5 at `length` (fixed-length models: their own length) of its trained
    row (its best trained epoch where the start was kept, else its checkpoint), that of the same
    model untrained and, where the results show it, that of training's start (plain rows only);
    with `chance` (a random ranking's R@5), its margin over the better of the untrained row and
    chance, and whether that margin is at least 0.10."""
    plain = [r for r in rows if not r["model"].endswith("re-rank")]
    at = {r["model"]: length if any(p["model"] == r["model"] and p["length"] == length for p in plain) else r["length"]
          for r in plain}
    by_weights = {(r["model"], r["weights"]): r for r in plain if r["length"] == at[r["model"]]}
    gains = {}
    for model in dict.fromkeys(m for m, w in by_weights if w in ("trained", "kept")):
        trained = by_weights.get((model, "trained")) or by_weights[model, "kept"]
        start = by_weights.get((model, "start")) or (by_weights.get((model, "kept")) if trained["weights"] == "trained" else None)
        untrained = by_weights.get((model, "untrained"))
        gain = {"length": trained["length"], "trained": trained["recall"]["5"],
                "untrained": untrained["recall"]["5"] if untrained else None,
                "start": start["recall"]["5"] if start else None, "note": trained["trained"],
                "training_loss": trained.get("training_loss")}
        if chance is not None:
            floor = max(chance, gain["untrained"] if gain["untrained"] is not None else chance)
            gain["random"] = chance
            gain["over_untrained_and_random"] = gain["trained"] - floor
            gain["beats_untrained_and_random_by_0.10"] = bool(gain["trained"] >= floor + 0.10)
        gains[model] = gain
    return gains


def results_markdown(benchmark: str, rows: list[dict], data: SplitData, notes: list[str] = ()) -> str:
    without = queries_without_positives(data.positives)
    lines = [f"### {benchmark}", "",
             f"Test split: {len(data.positives)} queries, {len(data.db_tokens)} database frames; {without} queries "
             "without a positive are left out of Recall@K (as seqNet's and the authors' getRecallAtN).",
             "A random ranking would score " + ", ".join(
                 f"R@{k} {v:.3f}" for k, v in chance_recall(data.positives, len(data.db_tokens)).items()) + ".",
             *notes, "",
             "| model | trained | features | L | R@1 | R@5 | R@10 | R@20 | mem (MB) | params | time/seq (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rec = r["recall"]
        lines.append(f"| {r['model']} | {r['trained']} | {r['features']} | {r['length']} | {rec['1']:.3f} | {rec['5']:.3f} "
                     f"| {rec['10']:.3f} | {rec['20']:.3f} | {r['peak_memory_mb']:.1f} | {r['parameters']:,} "
                     f"| {r['seconds_per_sequence']:.4f} |")
    gains = training_gain(rows, GAIN_LENGTH, chance_recall(data.positives, len(data.db_tokens))[5])
    if gains:
        lines += ["", f"What training gave, R@5 at L = {GAIN_LENGTH} (fixed-length models at their length): the "
                  "trained row against the same model untrained, its start and a random ranking.", "",
                  "| model | L | trained | start | untrained | random | trained - max(untrained, random) | at least 0.10 "
                  "| training loss, epoch 1 -> its epoch |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for model, g in gains.items():
            start = "-" if g["start"] is None else f"{g['start']:.3f}"
            untrained = "-" if g["untrained"] is None else f"{g['untrained']:.3f}"
            loss = g["training_loss"]
            loss = "-" if loss is None else f"{loss['first']:.4f} -> {loss['shown']:.4f} (epoch {loss['epoch']})"
            lines.append(f"| {model} | {g['length']} | {g['trained']:.3f} | {start} | {untrained} | {g['random']:.3f} "
                         f"| {g['over_untrained_and_random']:+.3f} | {'yes' if g['beats_untrained_and_random_by_0.10'] else 'no'} | {loss} |")
    return "\n".join(lines) + "\n"

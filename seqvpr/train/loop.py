"""The training loop (`train`): starting weights, per-epoch descriptor cache, mining, the recipe's
optimiser and schedule (`make_optimiser`), evaluation after each epoch and the choice of the kept
weights."""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from seqvpr.data import sequence_windows
from seqvpr.embed.cct import CCTTail
from seqvpr.embed.embed import pick_device
from seqvpr.train.config import TrainConfig, TrainResult
from seqvpr.train.mining import batch_loss, mine_tuple
from seqvpr.train.model import build_sequence_model, describe, evaluate_recall
from seqvpr.train.split_data import SplitData
from seqvpr.train.start import fit_pooling, initialise_vlad


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
    """Train `cfg.model` on `train_data`, choosing the kept weights by Recall@5 on `val_data`; the
    result also holds the starting weights and, where those are kept, the best trained epoch's.
    tail: the CCT blocks after the embedding cut with their starting weights (None: frozen backbone).
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
    start, best_trained = copy.deepcopy(model.state_dict()), None
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
        if recall[5] > result.best_trained_recall5:  # the best trained epoch, whether or not it beats the start
            result.best_trained_recall5, result.best_trained_epoch = recall[5], epoch
            best_trained = copy.deepcopy(model.state_dict())
        if recall[5] > best:
            best, stale = recall[5], 0
            result.state_dict, result.best_recall5, result.best_epoch = best_trained, best, epoch
        else:
            stale += 1
            if cfg.patience and stale > cfg.patience:  # the references: `not_improved > patience`
                log(f"{cfg.model}: early stop after {epoch} epochs")
                break
    if result.best_epoch == 0 and result.best_trained_epoch:
        result.trained_state_dict = best_trained
    return result

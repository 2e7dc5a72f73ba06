"""Training of the sequence models on precomputed CCT384 tokens (Adapt-STformer recipe):
triplet loss with margin 0.1; per query the best positive (nearest non-trivial positive in
descriptor space) and the 5 hardest negatives among cached GNSS-filtered candidates; Adam;
early stopping on validation Recall@5 with patience 5."""
import copy
import io
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from seqvpr.atomic import atomic_write_bytes
from seqvpr.metrics import nearest, recall_at_k
from seqvpr.models import build_model
from seqvpr.models.opticornet import quadruplet_loss
from seqvpr.seqbounds import centred_sequence


@dataclass
class SplitData:
    """One split of a benchmark, in struct-file order (the split table's `order`)."""

    db_tokens: np.ndarray  # (Ndb, n, D) float16
    q_tokens: np.ndarray  # (Nq, n, D) float16
    db_bounds: np.ndarray  # (Ndb, 2) [start, end) runs
    q_bounds: np.ndarray
    positives: list  # per query: db indices within the radius (and heading) rule
    nontrivial_positives: list
    negatives: np.ndarray  # (Nq, K) cached negative candidates, -1 padded


def sequence_windows(bounds: np.ndarray, length: int) -> np.ndarray:
    """(N, L) frame indices of the sequence centred on each frame, never crossing its run;
    runs shorter than L repeat their edge frames."""
    windows = []
    for i, (start, end) in enumerate(bounds):
        window = centred_sequence(i, length, int(start), int(end))
        if window is None:
            window = np.clip(np.arange(i - length // 2, i - length // 2 + length), start, end - 1)
        windows.append(window)
    return np.array(windows, dtype=np.int64).reshape(len(bounds), length)


def sequences(tokens: np.ndarray, windows: np.ndarray, rows) -> torch.Tensor:
    return torch.from_numpy(np.asarray(tokens[windows[rows]], dtype=np.float32))


@torch.no_grad()
def describe(model, tokens: np.ndarray, windows: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Sequence descriptors of every frame's window."""
    model.eval()
    out = [model(sequences(tokens, windows, slice(i, i + batch_size))).numpy()
           for i in range(0, len(windows), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


def evaluate_recall(model, data: SplitData, length: int, ks=(1, 5, 10, 20)) -> dict[int, float]:
    db = describe(model, data.db_tokens, sequence_windows(data.db_bounds, length))
    q = describe(model, data.q_tokens, sequence_windows(data.q_bounds, length))
    return recall_at_k(nearest(db, q, max(ks)), data.positives, ks)


@dataclass
class TrainConfig:
    model: str = "adapt_stformer"
    model_kwargs: dict = field(default_factory=dict)
    seq_len: int = 5
    epochs: int = 3
    lr: float = 1e-5
    margin: float = 0.1
    negatives: int = 5
    queries_per_epoch: int = 64
    patience: int = 5
    seed: int = 0


@dataclass
class TrainResult:
    state_dict: dict
    best_recall5: float
    initial_recall: dict
    history: list = field(default_factory=list)  # per epoch: {"epoch", "loss", "recall"}
    losses: list = field(default_factory=list)  # per step


def _step_loss(model, cfg: TrainConfig, data: SplitData, qi: int, db_desc: np.ndarray, q_windows, db_windows):
    """Triplet (or OptiCorNet's quadruplet) loss of one query, or None if it has no usable pair."""
    pos = np.asarray(data.nontrivial_positives[qi]) if len(data.nontrivial_positives[qi]) else np.asarray(data.positives[qi])
    negs = data.negatives[qi][data.negatives[qi] >= 0]
    if len(pos) == 0 or len(negs) < cfg.negatives:
        return None
    q_desc = describe(model, data.q_tokens, q_windows[[qi]])[0]
    best_pos = pos[np.argmin(((db_desc[pos] - q_desc) ** 2).sum(1))]
    hardest = negs[np.argsort(((db_desc[negs] - q_desc) ** 2).sum(1), kind="stable")[: cfg.negatives]]
    model.train()
    anchor = model(sequences(data.q_tokens, q_windows, [qi]))
    others = model(sequences(data.db_tokens, db_windows, np.concatenate([[best_pos], hardest])))
    positive, negatives = others[:1], others[1:]
    if cfg.model == "opticornet":
        return quadruplet_loss(anchor, positive, negatives[:1], negatives[1:2], margin1=cfg.margin)
    return F.triplet_margin_loss(anchor.expand_as(negatives), positive.expand_as(negatives), negatives, margin=cfg.margin)


def train(cfg: TrainConfig, train_data: SplitData, val_data: SplitData, log=print) -> TrainResult:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build_model(cfg.model, **cfg.model_kwargs, **({"seq_len": cfg.seq_len} if cfg.model == "stformer" else {}))
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    q_windows = sequence_windows(train_data.q_bounds, cfg.seq_len)
    db_windows = sequence_windows(train_data.db_bounds, cfg.seq_len)
    initial = evaluate_recall(model, val_data, cfg.seq_len)
    best, best_state, stale = initial[5], copy.deepcopy(model.state_dict()), 0
    result = TrainResult(state_dict=best_state, best_recall5=best, initial_recall=initial)
    log(f"{cfg.model}: untrained val R@5 {best:.3f}")
    for epoch in range(1, cfg.epochs + 1):
        db_desc = describe(model, train_data.db_tokens, db_windows)  # cached for mining, once per epoch
        order = rng.permutation(len(q_windows))[: cfg.queries_per_epoch]
        epoch_losses = []
        for qi in order:
            loss = _step_loss(model, cfg, train_data, int(qi), db_desc, q_windows, db_windows)
            if loss is None:
                continue
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            epoch_losses.append(loss.item())
        recall = evaluate_recall(model, val_data, cfg.seq_len)
        mean_loss = float(np.mean(epoch_losses)) if epoch_losses else float("nan")
        result.losses += epoch_losses
        result.history.append({"epoch": epoch, "loss": mean_loss, "recall": recall})
        log(f"{cfg.model}: epoch {epoch} loss {mean_loss:.4f} val R@5 {recall[5]:.3f}")
        if recall[5] > best:
            best, stale = recall[5], 0
            result.state_dict, result.best_recall5 = copy.deepcopy(model.state_dict()), best
        else:
            stale += 1
            if stale >= cfg.patience:
                log(f"{cfg.model}: early stop after {epoch} epochs")
                break
    return result


def save_checkpoint(path, model_name: str, state_dict: dict, meta: dict) -> None:
    buf = io.BytesIO()
    torch.save({"model": model_name, "state_dict": state_dict, "meta": meta}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path):
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    kwargs = {"seq_len": checkpoint["meta"]["seq_len"]} if checkpoint["model"] == "stformer" else {}
    model = build_model(checkpoint["model"], **kwargs)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint["meta"]


def load_split_data(shard_dir, negatives_file) -> SplitData:
    """A split's arrays from its WebDataset shards and the split's cached negative candidates."""
    from seqvpr.shards import read_split_shards

    rows, tokens = read_split_shards(shard_dir)
    roles = np.array([r["role"] for r in rows])
    db, q = np.flatnonzero(roles == "db"), np.flatnonzero(roles == "query")
    bounds = np.array([[r["seq_start"], r["seq_end"]] for r in rows], dtype=np.int64).reshape(-1, 2)
    return SplitData(
        db_tokens=tokens[db], q_tokens=tokens[q], db_bounds=bounds[db], q_bounds=bounds[q],
        positives=[np.asarray(rows[i]["positives"], dtype=np.int64) for i in q],
        nontrivial_positives=[np.asarray(rows[i]["nontrivial_positives"], dtype=np.int64) for i in q],
        negatives=np.load(negatives_file),
    )

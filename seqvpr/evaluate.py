"""Evaluation of sequence models on a test split: Recall@K at several sequence lengths (models
trained at L = 5 evaluated at L = 1, 3, 5), optional PCA, and extraction cost, as in Table II."""
import numpy as np
import torch

from seqvpr.metrics import RECALL_AT, apply_pca, extraction_cost, fit_pca, nearest, recall_at_k
from seqvpr.models import LENGTH_AGNOSTIC, build_model
from seqvpr.models.opticornet import hierarchical_retrieval
from seqvpr.train import SplitData, describe, sequence_windows


def _frame_descriptors(tokens) -> np.ndarray:
    mean = np.asarray(tokens, dtype=np.float32).mean(axis=1)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def evaluate_model(model, data: SplitData, length: int, pca_dim: int | None = None, rerank: bool = False) -> dict:
    """Recall@K and cost of one model at one sequence length. rerank: OptiCorNet's hierarchical
    retrieval (shortlist by sequence descriptor, SeqSLAM re-ranking with frame descriptors)."""
    db_windows, q_windows = sequence_windows(data.db_bounds, length), sequence_windows(data.q_bounds, length)
    db = describe(model, data.db_tokens, db_windows)
    q = describe(model, data.q_tokens, q_windows)
    if pca_dim:
        pca = fit_pca(db, pca_dim)
        db, q = apply_pca(db, pca), apply_pca(q, pca)
    if rerank:
        ranked = hierarchical_retrieval(q, db, _frame_descriptors(data.q_tokens), _frame_descriptors(data.db_tokens),
                                        q_windows, db_windows, shortlist=max(RECALL_AT), top=max(RECALL_AT))
    else:
        ranked = nearest(db, q, max(RECALL_AT))
    recall = recall_at_k(ranked, data.positives, RECALL_AT)
    sample = torch.from_numpy(data.q_tokens[sequence_windows(data.q_bounds, length)[:1]].astype("float32"))
    return {"recall": {str(k): v for k, v in recall.items()}, **extraction_cost(model, sample, repeats=2),
            "descriptor_dim": int(db.shape[1])}


def evaluate_models(data: SplitData, names: list[str], trained: dict, lengths: list[int], pca_dim: int | None = None,
                    log=print) -> list[dict]:
    """Rows for every trained model and every untrained model in `names` at each usable length.

    Fixed-length models (STformer) are evaluated at their training length only."""
    torch.manual_seed(0)
    candidates = [(label, model, seq_len) for label, (model, seq_len) in trained.items()]
    candidates += [(f"{name} (untrained)", build_model(name).eval(), 5) for name in names]
    rows = []
    for label, model, seq_len in candidates:
        name = label.split(" ")[0]
        for length in (lengths if name in LENGTH_AGNOSTIC else [seq_len]):
            for rerank in (False, True) if name == "opticornet" else (False,):
                shown = f"{label} + SeqSLAM re-rank" if rerank else label
                row = {"model": shown, "length": length, **evaluate_model(model, data, length, pca_dim, rerank)}
                log(f"{shown} L={length}: R@1 {row['recall']['1']:.3f} R@5 {row['recall']['5']:.3f}")
                rows.append(row)
    return rows


def results_markdown(benchmark: str, rows: list[dict]) -> str:
    lines = [f"### {benchmark}", "",
             "| model | L | R@1 | R@5 | R@10 | R@20 | mem (MB) | params | time/seq (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rec = r["recall"]
        lines.append(f"| {r['model']} | {r['length']} | {rec['1']:.3f} | {rec['5']:.3f} | {rec['10']:.3f} | {rec['20']:.3f} "
                     f"| {r['peak_memory_mb']:.1f} | {r['parameters']:,} | {r['seconds_per_sequence']:.4f} |")
    return "\n".join(lines) + "\n"

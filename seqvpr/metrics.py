"""Retrieval metrics: Recall@K with caller-supplied positives (the reference `getRecallAtN`), kNN
with faiss, PCA fitted on training descriptors, and the cost of extracting a sequence descriptor
(time, peak memory)."""
import time
from typing import Sequence

import faiss
import numpy as np
import torch

RECALL_AT = (1, 5, 10, 20)


def nearest(db: np.ndarray, queries: np.ndarray, k: int, chunk_bytes: int = 64 << 20) -> np.ndarray:
    """Indices (Nq, k) of the k nearest database descriptors (exact L2, faiss). Descriptors that
    are not numpy arrays (`seqvpr.data.FrameArray`, read from a file) are searched in slices of about
    `chunk_bytes`, database slices a multiple of faiss's 1024-row block, merged with faiss's ResultHeap."""
    if not (isinstance(db, np.ndarray) and isinstance(queries, np.ndarray)):
        return _nearest_in_slices(db, queries, min(k, len(db)), chunk_bytes)
    db = np.ascontiguousarray(db, dtype=np.float32)
    index = faiss.IndexFlatL2(db.shape[1])
    index.add(db)
    _, found = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(db)))
    return found


def _nearest_in_slices(db, queries, k: int, chunk_bytes: int) -> np.ndarray:
    row_bytes = 4 * int(db.shape[1])
    db_rows = max(1, chunk_bytes // row_bytes // 1024) * 1024
    q_rows = max(1, chunk_bytes // row_bytes)
    found = np.empty((len(queries), k), dtype=np.int64)
    for q0 in range(0, len(queries), q_rows):
        q = np.ascontiguousarray(queries[q0:q0 + q_rows], dtype=np.float32)
        heap = faiss.ResultHeap(len(q), k)
        for d0 in range(0, len(db), db_rows):
            d = np.ascontiguousarray(db[d0:d0 + db_rows], dtype=np.float32)
            distances, ids = faiss.knn(q, d, min(k, len(d)))
            heap.add_result(distances, ids + d0)
        heap.finalize()
        found[q0:q0 + len(q)] = heap.I
    return found


def recall_at_k(ranked: np.ndarray, positives: Sequence[np.ndarray], ks: Sequence[int] = RECALL_AT) -> dict[int, float]:
    """Fraction of queries with a positive among their top K, as seqNet's and Adapt-STformer's
    `getRecallAtN` (oravus/seqNet `test.py`, ai4ce/Adapt-STFormer `svpr/utils/utils.py`): queries
    without any positive are left out of the denominator (`queries_without_positives` counts them)."""
    if len(ranked) != len(positives):
        raise ValueError(f"{len(ranked)} rankings for {len(positives)} queries")
    scored = [(row, np.asarray(pos)) for row, pos in zip(ranked, positives) if len(pos)]
    hits = np.array([[np.isin(row[:k], pos).any() for k in ks] for row, pos in scored], dtype=bool).reshape(-1, len(ks))
    return {k: float(hits[:, ki].mean()) if len(scored) else float("nan") for ki, k in enumerate(ks)}


def chance_recall(positives: Sequence[np.ndarray], database_size: int, ks: Sequence[int] = RECALL_AT) -> dict[int, float]:
    """Recall@K of a uniformly random ranking, over the queries `recall_at_k` scores: a query with
    p of N database items positive misses all of them in its top K with probability
    C(N - p, K) / C(N, K). On a small split this is the floor a model has to beat to mean anything
    (50 frames with 3 positives each: R@5 0.28)."""
    counts = [len(np.unique(pos)) for pos in positives if len(pos)]
    out = {}
    for k in ks:
        top = np.arange(min(k, database_size))
        miss = [np.prod((database_size - p - top) / (database_size - top)) if p <= database_size - len(top) else 0.0
                for p in counts]
        out[k] = float(1 - np.mean(miss)) if counts else float("nan")
    return out


def queries_without_positives(positives: Sequence[np.ndarray]) -> int:
    return sum(1 for pos in positives if len(pos) == 0)


def fit_pca(train_descriptors: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA (mean, components D x dim) fitted on training descriptors, without whitening, as the
    authors' `compute_pca` (ai4ce/Adapt-STFormer `svpr/utils/pca.py`: sklearn PCA on the train set)."""
    if not 0 < dim <= min(train_descriptors.shape):
        raise ValueError(f"PCA to {dim} dimensions needs at least {dim} training descriptors of at least "
                         f"{dim} dimensions, got {train_descriptors.shape}")
    mean = train_descriptors.mean(0)
    _, _, vt = np.linalg.svd(train_descriptors - mean, full_matrices=False)
    return mean, vt[:dim].T


def apply_pca(x: np.ndarray, pca: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """sklearn's `PCA.transform`: centred projection, not re-normalised (as the authors' test.py)."""
    mean, components = pca
    return ((x - mean) @ components).astype(np.float32)


def extraction_cost(model: torch.nn.Module, sequence: torch.Tensor, repeats: int = 3) -> dict:
    """Seconds per sequence and peak tensor memory (MB) of one forward pass: the CUDA allocator's
    peak on the GPU, the profiler's running sum of tensor allocations and frees on the CPU."""
    model.eval()
    with torch.inference_mode():
        model(sequence)  # warm-up
        if sequence.is_cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(repeats):
            model(sequence)
        if sequence.is_cuda:
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / repeats / len(sequence)
        if sequence.is_cuda:
            peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak = _cpu_peak_mb(model, sequence)
    return {"seconds_per_sequence": seconds, "peak_memory_mb": peak,
            "parameters": sum(p.numel() for p in model.parameters())}


def _cpu_peak_mb(model, sequence) -> float:
    """Peak bytes held by tensors during a CPU forward pass, via the profiler's memory accounting."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(sequence)
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak / 2**20

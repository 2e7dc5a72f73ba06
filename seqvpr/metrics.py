"""Retrieval metrics: Recall@K with caller-supplied positives, kNN with faiss, PCA, and the cost
of extracting a sequence descriptor (time, peak memory)."""
import time
from typing import Sequence

import faiss
import numpy as np
import torch

RECALL_AT = (1, 5, 10, 20)


def nearest(db: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Indices (Nq, k) of the k nearest database descriptors (exact L2, faiss)."""
    db = np.ascontiguousarray(db, dtype=np.float32)
    index = faiss.IndexFlatL2(db.shape[1])
    index.add(db)
    _, found = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(db)))
    return found


def recall_at_k(ranked: np.ndarray, positives: Sequence[np.ndarray], ks: Sequence[int] = RECALL_AT) -> dict[int, float]:
    """Fraction of queries with at least one positive among their top K. Queries without any
    positive count as failures (the split asset reports them)."""
    if len(ranked) != len(positives):
        raise ValueError(f"{len(ranked)} rankings for {len(positives)} queries")
    hits = np.zeros((len(ranked), len(ks)), dtype=bool)
    for qi, (row, pos) in enumerate(zip(ranked, positives)):
        found = np.isin(row, np.asarray(pos))
        for ki, k in enumerate(ks):
            hits[qi, ki] = found[:k].any()
    return {k: float(hits[:, ki].mean()) if len(ranked) else 0.0 for ki, k in enumerate(ks)}


def fit_pca(db: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA fitted on the database (mean, components D x dim), whitening-free as in seqNet's PCA."""
    mean = db.mean(0)
    dim = min(dim, *db.shape)
    _, _, vt = np.linalg.svd(db - mean, full_matrices=False)
    return mean, vt[:dim].T


def apply_pca(x: np.ndarray, pca: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    mean, components = pca
    y = (x - mean) @ components
    return y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)


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

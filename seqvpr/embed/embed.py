"""Batch inference over normalised frames with a content-addressed token cache.

Cache key: SHA-256 of the normalised frame file's bytes, inside a folder named by `model_id` (the
weights identity, layers kept, input size and normalisation). A frame embedded once with the same
weights and preprocessing is never embedded again, so a new frame separation only embeds the
frames it adds.
"""
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from seqvpr.atomic import atomic_path
from seqvpr.datasets.frames import load_frame
from seqvpr.embed.cct import IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD, build_cct384
from seqvpr.errors import DataError

PREPROCESSING = f"rgb{IMAGE_SIZE}-imagenet-norm"


def model_id(weights: str, num_layers: int) -> str:
    key = f"cct_14_7x2_384|{weights}|layers={num_layers}|{PREPROCESSING}"
    return "cct384-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cache_file(cache_dir: Path, digest: str) -> Path:
    return Path(cache_dir) / digest[:2] / f"{digest}.npy"


def load_tokens(cache_dir: Path, digest: str) -> np.ndarray:
    """(576, 384) float16 tokens of a cached frame."""
    path = cache_file(cache_dir, digest)
    if not path.exists():
        raise DataError(path, "embedding missing from the cache: materialise the embeddings first")
    return np.load(path)


def global_descriptor(tokens: np.ndarray) -> np.ndarray:
    """Pooled frame descriptor: L2-normalised mean of the tokens (float32)."""
    mean = np.asarray(tokens, dtype=np.float32).mean(axis=-2)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def to_batch(frames: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """RGB uint8 frames (384 x 384) -> ImageNet-normalised float tensor (B, 3, 384, 384)."""
    for frame in frames:
        if frame.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise ValueError(f"frames must be {IMAGE_SIZE}x{IMAGE_SIZE} RGB, got {frame.shape}")
    x = torch.from_numpy(np.stack(frames)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass
class EmbedStats:
    embedded: int
    cache_hits: int
    seconds: float

    @property
    def frames_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0


class FrameEmbedder:
    """CCT384 on the GPU when there is one (bf16 autocast), CPU otherwise."""

    def __init__(self, num_layers: int = 8, checkpoint: str | None = None, device: str = "auto", seed: int = 0):
        self.device = pick_device(device)
        model, self.weights = build_cct384(num_layers, checkpoint, seed)
        self.model = model.to(self.device)
        self.model_id = model_id(self.weights, num_layers)

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            tokens = self.model(batch)
        return tokens.float().cpu().numpy().astype(np.float16)

    def embed_files(self, paths: Sequence[Path], cache_dir: Path, batch_size: int = 8,
                    progress: Callable[[int, int], None] | None = None) -> tuple[list[str], EmbedStats]:
        """Embed every frame file not cached yet; returns each file's digest (cache key) and stats."""
        start = time.perf_counter()
        digests = [file_sha256(p) for p in paths]
        todo = sorted({d: p for d, p in zip(digests, paths) if not cache_file(cache_dir, d).exists()}.items())
        for i in range(0, len(todo), batch_size):
            chunk = todo[i:i + batch_size]
            tokens = self(to_batch([load_frame(p) for _, p in chunk], self.device))
            for (digest, _), frame_tokens in zip(chunk, tokens):
                with atomic_path(cache_file(cache_dir, digest)) as tmp:
                    with open(tmp, "wb") as fh:
                        np.save(fh, frame_tokens)
            if progress:
                progress(min(i + batch_size, len(todo)), len(todo))
        stats = EmbedStats(embedded=len(todo), cache_hits=len(set(digests)) - len(todo), seconds=time.perf_counter() - start)
        return digests, stats

"""Batch inference over normalised frames with a content-addressed token cache.

Cache key: SHA-256 of the normalised frame file's bytes, inside a folder named by `model_id` (the
weights identity, layers kept, embedding cut, input size and normalisation). A frame embedded once
with the same weights and preprocessing is never embedded again, so a new frame separation only
embeds the frames it adds.

An entry is two files: `<digest>.desc.npy`, the pooled descriptor of the final token map (the
same meaning whatever the cut), written first, and `<digest>.npy`, the float16 tokens after the
frozen blocks, written last: an entry counts as cached only when both exist.
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
from seqvpr.embed.cct import IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD, build_cct384, frozen_blocks
from seqvpr.errors import DataError
from seqvpr.hashing import file_sha256

PREPROCESSING = f"rgb{IMAGE_SIZE}-imagenet-norm"


def model_id(weights: str, num_layers: int, freeze_te: int | None = None) -> str:
    """Cache namespace; freeze_te None (or num_layers - 1) is the frozen backbone, whose tokens
    are the final ones (the namespace it always had)."""
    freeze_te = num_layers - 1 if freeze_te is None else freeze_te
    cut = frozen_blocks(freeze_te, num_layers)
    key = f"cct_14_7x2_384|{weights}|layers={num_layers}|{PREPROCESSING}"
    if cut < num_layers:
        key += f"|freeze_te={freeze_te}"
    return "cct384-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def cache_file(cache_dir: Path, digest: str) -> Path:
    return Path(cache_dir) / digest[:2] / f"{digest}.npy"


def descriptor_file(cache_dir: Path, digest: str) -> Path:
    return Path(cache_dir) / digest[:2] / f"{digest}.desc.npy"


def is_cached(cache_dir: Path, digest: str) -> bool:
    return cache_file(cache_dir, digest).exists() and descriptor_file(cache_dir, digest).exists()


def _load(path: Path) -> np.ndarray:
    if not path.exists():
        raise DataError(path, "embedding missing from the cache: materialise the embeddings first")
    return np.load(path)


def load_tokens(cache_dir: Path, digest: str) -> np.ndarray:
    """(576, 384) float16 tokens of a cached frame, after the frozen blocks."""
    return _load(cache_file(cache_dir, digest))


def load_descriptor(cache_dir: Path, digest: str) -> np.ndarray:
    """(384,) float32 pooled descriptor of the frame's final token map."""
    return _load(descriptor_file(cache_dir, digest))


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
    return imagenet_batch(frames, device)


def imagenet_batch(frames: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """RGB uint8 frames of one size -> (B, 3, H, W) float tensor, torchvision's ToTensor + Normalize
    with the ImageNet mean and std (what CCT, CosPlace and Patch-NetVLAD are fed)."""
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
    """CCT384 on the GPU when there is one (bf16 autocast), CPU otherwise. freeze_te: the authors'
    cut (blocks 0..freeze_te frozen; default num_layers - 1, every block frozen)."""

    def __init__(self, num_layers: int = 8, checkpoint: str | None = None, device: str = "auto", seed: int = 0,
                 freeze_te: int | None = None):
        self.device = pick_device(device)
        self.freeze_te = num_layers - 1 if freeze_te is None else freeze_te
        self.cut = frozen_blocks(self.freeze_te, num_layers)
        model, self.weights = build_cct384(num_layers, checkpoint, seed)
        self.model = model.to(self.device)
        self.model_id = model_id(self.weights, num_layers, self.freeze_te)

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """float16 tokens after the frozen blocks, and float32 pooled descriptors of the final tokens."""
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            at_cut, final = self.model.forward_cut(batch, self.cut)
        final = final.float().cpu().numpy().astype(np.float16)
        return at_cut.float().cpu().numpy().astype(np.float16), np.stack([global_descriptor(f) for f in final])

    def embed_files(self, paths: Sequence[Path], cache_dir: Path, batch_size: int = 8,
                    progress: Callable[[int, int], None] | None = None) -> tuple[list[str], EmbedStats]:
        """Embed every frame file not cached yet; returns each file's digest (cache key) and stats."""
        start = time.perf_counter()
        digests = [file_sha256(p) for p in paths]
        todo = sorted({d: p for d, p in zip(digests, paths) if not is_cached(cache_dir, d)}.items())
        for i in range(0, len(todo), batch_size):
            chunk = todo[i:i + batch_size]
            tokens, descriptors = self(to_batch([load_frame(p) for _, p in chunk], self.device))
            for (digest, _), frame_tokens, descriptor in zip(chunk, tokens, descriptors):
                for path, array in ((descriptor_file(cache_dir, digest), descriptor), (cache_file(cache_dir, digest), frame_tokens)):
                    with atomic_path(path) as tmp:
                        with open(tmp, "wb") as fh:
                            np.save(fh, array)
            if progress:
                progress(min(i + batch_size, len(todo)), len(todo))
        stats = EmbedStats(embedded=len(todo), cache_hits=len(set(digests)) - len(todo), seconds=time.perf_counter() - start)
        return digests, stats

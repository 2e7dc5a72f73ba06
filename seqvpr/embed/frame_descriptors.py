"""Per-frame descriptors of a benchmark split by a baseline's published frame backbone
(`seqvpr.models.backbones`: CosPlace ResNet-18 + GeM for JIST, Patch-NetVLAD VGG16 + NetVLAD + WPCA
for SeqNet and OptiCorNet), so those heads can read what their papers feed them instead of pooled
CCT tokens.

Frames are the split's normalised frames in the shards' sample order (database rows, then queries,
each by `order`: what `seqvpr.train.load_split_data` reads), fed as the published code feeds them
(torchvision ToTensor + Normalize with the ImageNet mean and std) at the pipeline's frame size.

Per split, in `Layout.frame_descriptors(benchmark, backbone)`: `<split>.npy`, (N, D) float32, and
`<split>.json`, the record of what made it: backbone, weights identity (the checkpoint's SHA-256 or
`random-init-<seed>`), preprocessing, frame ids and the SHA-256 of the frame files. Descriptors are
reused only while that record matches, so other weights or frames are never read as these. The
record is removed before the array is replaced and written after it, so an interrupted write
leaves no record.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from seqvpr.atomic import atomic_open, atomic_remove, atomic_write_text
from seqvpr.datasets.frames import load_frame
from seqvpr.embed.cct import weights_identity
from seqvpr.embed.embed import imagenet_batch, pick_device
from seqvpr.errors import DataError
from seqvpr.hashing import file_sha256
from seqvpr.models.backbones import build_backbone
from seqvpr.shards import read_split_rows
from seqvpr.train import SplitData

PREPROCESSING = "rgb-frame-size-imagenet-norm"


@dataclasses.dataclass(frozen=True)
class SplitFrames:
    """A split's frames in the order training reads them."""

    frame_ids: list[str]
    paths: list[Path]
    frames_sha256: str  # of the frame files' SHA-256s in order: hashed once, shared by every backbone


def split_frames(shard_dir: Path, data_root: Path) -> SplitFrames:
    """Frame ids and frame files of a split, from its shard rows."""
    rows = read_split_rows(shard_dir)
    paths = [Path(data_root) / r["image_path"] for r in rows]
    digest = hashlib.sha256("".join(file_sha256(p) for p in paths).encode()).hexdigest()
    return SplitFrames([r["frame_id"] for r in rows], paths, digest)


def _record(backbone: str, weights: str, frames: SplitFrames) -> dict:
    return {"backbone": backbone, "weights": weights, "preprocessing": PREPROCESSING,
            "frame_ids": frames.frame_ids, "frames_sha256": frames.frames_sha256}


def _paths(folder: Path, split: str) -> tuple[Path, Path]:
    return Path(folder) / f"{split}.npy", Path(folder) / f"{split}.json"


@torch.inference_mode()
def describe_frames(model: torch.nn.Module, paths: list[Path], device: torch.device, batch_size: int = 16,
                    progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(N, D) float32 descriptors of the frame files, `batch_size` frames at a time."""
    out = []
    for start in range(0, len(paths), batch_size):
        batch = imagenet_batch([load_frame(p) for p in paths[start:start + batch_size]], device)
        out.append(model(batch).float().cpu().numpy())
        if progress:
            progress(min(start + batch_size, len(paths)), len(paths))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def write_frame_descriptors(folder: Path, splits: dict[str, SplitFrames], backbone: str, checkpoint: str | None = None,
                            seed: int = 0, device: str = "auto", batch_size: int = 16,
                            progress: Callable[[str, int, int], None] | None = None) -> dict[str, dict]:
    """Descriptors of every split whose record does not match; the backbone is built only if one is
    stale. Returns per split {"frames", "dim", "computed"} and the weights identity under "weights"."""
    weights = weights_identity(checkpoint, seed)
    model, torch_device, summary = None, pick_device(device), {}
    for split, frames in splits.items():
        array_path, record_path = _paths(folder, split)
        record = _record(backbone, weights, frames)
        fresh = record_path.exists() and array_path.exists() and json.loads(record_path.read_text()) == record
        if fresh:
            descriptors = np.load(array_path, mmap_mode="r")
        else:
            if model is None:
                model = build_backbone(backbone, checkpoint, seed)[0].to(torch_device)
            descriptors = describe_frames(model, frames.paths, torch_device, batch_size,
                                          (lambda done, total, s=split: progress(s, done, total)) if progress else None)
            atomic_remove(record_path)
            with atomic_open(array_path) as fh:
                np.save(fh, descriptors)
            atomic_write_text(record_path, json.dumps(record, indent=1))
        summary[split] = {"frames": len(frames.frame_ids), "dim": int(descriptors.shape[1]), "computed": not fresh}
    return {"weights": weights, "splits": summary}


def load_frame_descriptors(folder: Path, split: str, backbone: str, weights: str, frame_ids: list[str]) -> np.ndarray:
    """The split's descriptors, only if they were made by `backbone` with `weights` for exactly these frames."""
    array_path, record_path = _paths(folder, split)
    if not record_path.exists() or not array_path.exists():
        raise DataError(record_path, f"no {backbone} frame descriptors: materialise the frame descriptors first")
    record = json.loads(record_path.read_text())
    if (record.get("backbone"), record.get("weights")) != (backbone, weights):
        raise DataError(record_path, f"descriptors of {record.get('backbone')} with weights {record.get('weights')}, "
                                     f"not {backbone} with {weights}: materialise the frame descriptors again")
    if record.get("frame_ids") != list(frame_ids):
        raise DataError(record_path, "descriptors of other frames than the split's shards: materialise the frame "
                                     "descriptors again")
    descriptors = np.load(array_path)
    if descriptors.shape[0] != len(frame_ids):
        raise DataError(array_path, f"{descriptors.shape[0]} descriptors for {len(frame_ids)} frames")
    return descriptors


def with_frame_descriptors(data: SplitData, folder: Path, split: str, backbone: str, weights: str) -> SplitData:
    """`data` with its frames' published descriptors in place of the CCT tokens."""
    descriptors = load_frame_descriptors(folder, split, backbone, weights, data.frame_ids)
    n_db = len(data.db_bounds)
    return dataclasses.replace(data, db_tokens=descriptors[:n_db], q_tokens=descriptors[n_db:])

"""Reproducible WebDataset shards of a benchmark split (layout: schemas/shard.py)."""
import hashlib
import io
import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from schemas.shard import DESCRIPTOR_FILES, MANIFEST, SHARD_PATTERN, WIDS_INDEX
from seqvpr.atomic import atomic_dir


class _HashingFile:
    """Write-only file that hashes what passes through, so a shard is never read back to hash it."""

    def __init__(self, path: Path):
        self.file = open(path, "wb")
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.file.write(data)

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        self.file.close()


@dataclass(frozen=True)
class Sample:
    key: str
    tokens: np.ndarray
    descriptor: np.ndarray
    row: dict


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def write_split_shards(out_dir: Path, benchmark: str, split: str, samples: Iterable[Sample],
                       max_count: int = 256, max_bytes: int = 1 << 30,
                       progress: Callable[[int], None] | None = None) -> dict:
    """Write the split's shards, manifest, wids index and descriptor arrays; returns the manifest.

    The whole folder is built under a temporary name and swapped in at the end, so a killed run
    leaves no shard that looks complete and a re-run starts clean.
    """
    out_dir = Path(out_dir)
    for stale in out_dir.parent.glob(f".{out_dir.name}.*.partial") if out_dir.parent.exists() else []:
        shutil.rmtree(stale, ignore_errors=True)
    shards, descriptors = [], {"db": [], "query": []}
    keys: set[str] = set()
    with atomic_dir(out_dir) as tmp:
        tar, sink, count, size, total = None, None, 0, 0, 0

        def close():
            if tar is not None:
                tar.close()
                sink.close()
                shards[-1].update(samples=count, bytes=sink.size, sha256=sink.sha256.hexdigest())

        for sample in samples:
            if "." in sample.key or sample.key in keys:
                raise ValueError(f"sample key {sample.key!r} is not a unique dot-free key")
            keys.add(sample.key)
            members = [
                (f"{sample.key}.tokens.npy", _npy_bytes(sample.tokens.astype(np.float16))),
                (f"{sample.key}.desc.npy", _npy_bytes(sample.descriptor.astype(np.float32))),
                (f"{sample.key}.json", json.dumps(sample.row, sort_keys=True, default=_json_default).encode()),
            ]
            sample_bytes = sum(len(d) for _, d in members)
            if tar is None or count >= max_count or (count and size + sample_bytes > max_bytes):
                close()
                shards.append({"name": SHARD_PATTERN.format(split=split, index=len(shards))})
                sink = _HashingFile(tmp / shards[-1]["name"])
                tar = tarfile.open(fileobj=sink, mode="w", format=tarfile.USTAR_FORMAT)
                count, size = 0, 0
            for name, data in members:
                _add(tar, name, data)
            count, size, total = count + 1, size + sample_bytes, total + 1
            descriptors[sample.row["role"]].append(sample.descriptor.astype(np.float32))
            if progress:
                progress(total)
        close()
        for role, name in DESCRIPTOR_FILES.items():
            np.save(tmp / name, np.stack(descriptors[role]) if descriptors[role] else np.zeros((0, 384), np.float32))
        manifest = {"benchmark": benchmark, "split": split, "samples": total, "shards": shards}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        index = {"__kind__": "wids-shard-index-v1", "wids_version": 1, "name": f"{benchmark}-{split}",
                 "shardlist": [{"url": s["name"], "nsamples": s["samples"]} for s in shards]}
        (tmp / WIDS_INDEX).write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    return manifest


def verify_manifest(out_dir: Path) -> list[str]:
    """Problems found when re-hashing the shards against the manifest (empty when all match)."""
    out_dir = Path(out_dir)
    manifest = json.loads((out_dir / MANIFEST).read_text())
    problems = []
    for shard in manifest["shards"]:
        path = out_dir / shard["name"]
        if not path.exists():
            problems.append(f"{path}: missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != shard["sha256"]:
            problems.append(f"{path}: sha256 differs from the manifest")
    return problems


def read_split_shards(out_dir: Path) -> tuple[list[dict], np.ndarray]:
    """All samples of a split folder in shard order: the JSON rows and the stacked float16 tokens."""
    out_dir = Path(out_dir)
    manifest = json.loads((out_dir / MANIFEST).read_text())
    rows, tokens = [], []
    for shard in manifest["shards"]:
        with tarfile.open(out_dir / shard["name"]) as tar:
            for member in tar.getmembers():
                data = tar.extractfile(member).read()
                if member.name.endswith(".json"):
                    rows.append(json.loads(data))
                elif member.name.endswith(".tokens.npy"):
                    tokens.append(np.load(io.BytesIO(data)))
    return rows, np.stack(tokens) if tokens else np.zeros((0, 576, 384), np.float16)

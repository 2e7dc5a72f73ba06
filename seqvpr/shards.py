"""Reproducible WebDataset shards of a benchmark split (layout: schemas/shard.py)."""
import hashlib
import io
import json
import queue
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from schemas.shard import DESCRIPTOR_FILES, MANIFEST, SHARD_PATTERN, WIDS_INDEX
from seqvpr.atomic import atomic_dir, remove_stale_dirs
from seqvpr.hashing import file_sha256


class _ShardWriter:
    """Writes one USTAR shard byte for byte as `tarfile` does (the header blocks of `TarInfo.tobuf`,
    the data, NUL padding to 512-byte blocks, two zero blocks, NUL padding to a 10240-byte record)
    while a second thread hashes the same buffers. File writes and hashlib both release the GIL on
    large buffers, so the cost is the slower of the two rather than their sum, and the shard is
    never read back to hash it. Members are written from their buffers without copying."""

    _PENDING = 64  # buffers queued for hashing at most, so a slow hash cannot hold a whole shard

    def __init__(self, path: Path):
        self.file = open(path, "wb")
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._pending: queue.Queue = queue.Queue(self._PENDING)
        self._hasher = threading.Thread(target=self._hash_pending, daemon=True)
        self._hasher.start()

    def _hash_pending(self) -> None:
        while (data := self._pending.get()) is not None:
            self.sha256.update(data)

    def _write(self, data) -> None:
        self._pending.put(data)
        self.size += len(data)
        self.file.write(data)

    def add(self, name: str, parts: list) -> None:
        """One member from byte buffers (bytes or C-contiguous uint8 memoryviews) that no one mutates."""
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = sum(len(p) for p in parts), 0, 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self._write(info.tobuf(tarfile.USTAR_FORMAT, tarfile.ENCODING, "surrogateescape"))
        for part in parts:
            self._write(part)
        if info.size % tarfile.BLOCKSIZE:
            self._write(tarfile.NUL * (tarfile.BLOCKSIZE - info.size % tarfile.BLOCKSIZE))

    def close(self) -> str:
        """Finish the archive as `TarFile.close` does; returns the shard's SHA-256."""
        self._write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
        if self.size % tarfile.RECORDSIZE:
            self._write(tarfile.NUL * (tarfile.RECORDSIZE - self.size % tarfile.RECORDSIZE))
        self.abort()
        return self.sha256.hexdigest()

    def abort(self) -> None:
        """Stop the hashing thread and close the file (also after a failure)."""
        if self._hasher.is_alive():
            self._pending.put(None)
            self._hasher.join()
        self.file.close()


@dataclass(frozen=True)
class Sample:
    key: str
    tokens: np.ndarray
    descriptor: np.ndarray
    row: dict


def _npy_parts(array: np.ndarray) -> list:
    """The bytes `np.save` writes for `array`, as its header and a view of the array's own buffer."""
    array = np.ascontiguousarray(array)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    return [header.getvalue(), memoryview(array).cast("B")]


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
    remove_stale_dirs(out_dir)
    shards, descriptors = [], {"db": [], "query": []}
    keys: set[str] = set()
    with atomic_dir(out_dir) as tmp:
        writer, count, size, total = None, 0, 0, 0
        try:
            for sample in samples:
                if "." in sample.key or sample.key in keys:
                    raise ValueError(f"sample key {sample.key!r} is not a unique dot-free key")
                keys.add(sample.key)
                # astype copies, so the hashing thread reads buffers that the caller cannot change
                members = [
                    (f"{sample.key}.tokens.npy", _npy_parts(sample.tokens.astype(np.float16))),
                    (f"{sample.key}.desc.npy", _npy_parts(sample.descriptor.astype(np.float32))),
                    (f"{sample.key}.json", [json.dumps(sample.row, sort_keys=True, default=_json_default).encode()]),
                ]
                sample_bytes = sum(len(p) for _, parts in members for p in parts)
                if writer is None or count >= max_count or (count and size + sample_bytes > max_bytes):
                    if writer is not None:
                        shards[-1].update(samples=count, sha256=writer.close(), bytes=writer.size)
                    shards.append({"name": SHARD_PATTERN.format(split=split, index=len(shards))})
                    writer = _ShardWriter(tmp / shards[-1]["name"])
                    count, size = 0, 0
                for name, parts in members:
                    writer.add(name, parts)
                count, size, total = count + 1, size + sample_bytes, total + 1
                descriptors[sample.row["role"]].append(sample.descriptor.astype(np.float32))
                if progress:
                    progress(total)
            if writer is not None:
                shards[-1].update(samples=count, sha256=writer.close(), bytes=writer.size)
        finally:
            if writer is not None:
                writer.abort()
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
        elif file_sha256(path) != shard["sha256"]:
            problems.append(f"{path}: sha256 differs from the manifest")
    return problems


def _members(out_dir: Path, suffixes: tuple[str, ...]):
    """(name, bytes) of the split folder's shard members ending with one of `suffixes`, in shard order."""
    out_dir = Path(out_dir)
    manifest = json.loads((out_dir / MANIFEST).read_text())
    for shard in manifest["shards"]:
        with tarfile.open(out_dir / shard["name"]) as tar:
            for member in tar.getmembers():
                if member.name.endswith(suffixes):
                    yield member.name, tar.extractfile(member).read()


def read_split_shards(out_dir: Path) -> tuple[list[dict], np.ndarray]:
    """All samples of a split folder in shard order: the JSON rows and the stacked float16 tokens."""
    rows, tokens = [], []
    for name, data in _members(out_dir, (".json", ".tokens.npy")):
        if name.endswith(".json"):
            rows.append(json.loads(data))
        else:
            tokens.append(np.load(io.BytesIO(data)))
    return rows, np.stack(tokens) if tokens else np.zeros((0, 576, 384), np.float16)


def read_split_rows(out_dir: Path) -> list[dict]:
    """The JSON rows of a split folder in shard order (the sample order training reads), without the tokens."""
    return [json.loads(data) for _, data in _members(out_dir, (".json",))]

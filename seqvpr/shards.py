"""Reproducible WebDataset shards of a benchmark split (layout: schemas/shard.py)."""
import hashlib
import io
import json
import queue
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from schemas.shard import DESCRIPTOR_FILES, FORMAT_VERSION, MANIFEST, MEMBERS, NEGATIVES_FILE, SHARD_PATTERN, WIDS_INDEX, WINDOW
from seqvpr.atomic import atomic_dir, remove_stale_dirs
from seqvpr.embed.cct import IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD, frozen_blocks
from seqvpr.embed.embed import PREPROCESSING, model_id
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


def shard_capacity(total: int | None, max_count: int, min_shards: int) -> int:
    """Samples per shard: at most `max_count`, and few enough that a split of `total` samples
    fills at least `min_shards` shards (WebDataset hands whole shards to DataLoader workers, so a
    split needs at least as many shards as workers)."""
    if total is None or min_shards <= 1:
        return max_count
    return max(1, min(max_count, -(-total // min_shards)))


def encoder_record(weights: str, num_layers: int, freeze_te: int | None) -> dict:
    """The manifest's "encoder": what made the tokens (seqvpr.embed: CCT384 `cct_14_7x2_384`).
    weights: checkpoint SHA-256 or `random-init-<seed>` (seqvpr.embed.cct.weights_identity);
    freeze_te: the embedding cut, tokens are those after blocks 0..freeze_te (None: every block frozen)."""
    cut = num_layers - 1 if freeze_te is None else freeze_te
    return {"model_id": model_id(weights, num_layers, freeze_te), "architecture": "cct_14_7x2_384",
            "weights": weights, "num_layers": num_layers, "freeze_te": cut,
            "tokens": f"after CCT blocks 0..{frozen_blocks(cut, num_layers) - 1} of {num_layers}",
            "input_size": [IMAGE_SIZE, IMAGE_SIZE], "preprocessing": PREPROCESSING,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def _side_file(folder: Path, name: str, array: np.ndarray) -> dict:
    np.save(folder / name, array, allow_pickle=False)
    return {"file": name, "sha256": file_sha256(folder / name), "shape": list(array.shape), "dtype": str(array.dtype)}


def write_split_shards(out_dir: Path, benchmark: str, split: str, samples: Iterable[Sample],
                       max_count: int = 256, max_bytes: int = 1 << 30, *, total: int | None = None,
                       min_shards: int = 1, provenance: dict | None = None, negatives: np.ndarray | None = None,
                       progress: Callable[[int], None] | None = None) -> dict:
    """Write the split's shards, manifest, wids index and side arrays; returns the manifest.

    A shard closes at `max_count` samples or before it would pass `max_bytes` (its first sample
    always fits); with `total` (the split's sample count) and `min_shards`, shards hold at most
    ceil(total / min_shards) samples. provenance: "encoder" (`encoder_record`), "split_settings",
    "code_version", copied into the manifest (a reader refuses a folder without "encoder").
    negatives: (Nq, K) int64 negative candidates in database order (-1 padded), written as
    `negatives.npy` and listed in the manifest with its SHA-256.

    The whole folder is built under a temporary name and swapped in at the end, so a killed run
    leaves no shard that looks complete and a re-run starts clean.
    """
    out_dir = Path(out_dir)
    remove_stale_dirs(out_dir)
    capacity = shard_capacity(total, max_count, min_shards)
    shards, descriptors = [], {"db": [], "query": []}
    keys: set[str] = set()
    with atomic_dir(out_dir) as tmp:
        writer, count, size, total_written = None, 0, 0, 0
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
                if writer is None or count >= capacity or (count and size + sample_bytes > max_bytes):
                    if writer is not None:
                        shards[-1].update(samples=count, sha256=writer.close(), bytes=writer.size)
                    shards.append({"name": SHARD_PATTERN.format(split=split, index=len(shards))})
                    writer = _ShardWriter(tmp / shards[-1]["name"])
                    count, size = 0, 0
                for name, parts in members:
                    writer.add(name, parts)
                count, size, total_written = count + 1, size + sample_bytes, total_written + 1
                descriptors[sample.row["role"]].append(sample.descriptor.astype(np.float32))
                if progress:
                    progress(total_written)
            if writer is not None:
                shards[-1].update(samples=count, sha256=writer.close(), bytes=writer.size)
        finally:
            if writer is not None:
                writer.abort()
        side = {role: _side_file(tmp, name, np.stack(descriptors[role]) if descriptors[role] else np.zeros((0, 384), np.float32))
                for role, name in DESCRIPTOR_FILES.items()}
        manifest = {"format_version": FORMAT_VERSION, "benchmark": benchmark, "split": split,
                    "samples": total_written, "counts": {role: len(d) for role, d in descriptors.items()},
                    "members": MEMBERS, "window": WINDOW, "descriptors": side, "shards": shards,
                    "negatives": None if negatives is None else _side_file(tmp, NEGATIVES_FILE, np.asarray(negatives, np.int64)),
                    **(provenance or {})}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        index = {"__kind__": "wids-shard-index-v1", "wids_version": 1, "name": f"{benchmark}-{split}",
                 "shardlist": [{"url": s["name"], "nsamples": s["samples"], "filesize": s["bytes"]} for s in shards]}
        (tmp / WIDS_INDEX).write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    return manifest


def verify_manifest(out_dir: Path) -> list[str]:
    """Problems found when re-hashing the shards and side files against the manifest (empty when all match)."""
    out_dir = Path(out_dir)
    manifest = json.loads((out_dir / MANIFEST).read_text())
    listed = [(s["name"], s["sha256"]) for s in manifest["shards"]]
    listed += [(f["file"], f["sha256"]) for f in [*manifest.get("descriptors", {}).values(), manifest.get("negatives")] if f]
    problems = []
    for name, sha256 in listed:
        path = out_dir / name
        if not path.exists():
            problems.append(f"{path}: missing")
        elif file_sha256(path) != sha256:
            problems.append(f"{path}: sha256 differs from the manifest")
    return problems


def scan_shards(out_dir: Path, shards: list[dict]) -> Iterator[tuple[int, tarfile.TarInfo, object]]:
    """(shard number, member header, value) of every member of the folder's shards in order; value:
    the bytes of a JSON member, (shape, dtype, data offset in the shard) of a `tokens.npy` member
    (its npy header parsed, the array not read: uncompressed tar, `TarInfo.offset_data` is where a
    member's bytes start), else None."""
    for number, shard in enumerate(shards):
        with tarfile.open(Path(out_dir) / shard["name"]) as tar:
            for member in tar:
                value = None
                if member.name.endswith(".json"):
                    value = tar.extractfile(member).read()
                elif member.name.endswith(".tokens.npy"):
                    handle = tar.extractfile(member)
                    version = np.lib.format.read_magic(handle)
                    shape, _, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                       else np.lib.format.read_array_header_2_0)(handle)
                    value = (shape, dtype, member.offset_data + handle.tell())
                yield number, member, value


def read_split_rows(out_dir: Path) -> list[dict]:
    """The JSON rows of a split folder in shard order (the sample order training reads), without the tokens."""
    manifest = json.loads((Path(out_dir) / MANIFEST).read_text())
    return [json.loads(data) for _, member, data in scan_shards(out_dir, manifest["shards"]) if member.name.endswith(".json")]

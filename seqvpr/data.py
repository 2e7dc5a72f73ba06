"""Reading a split's shard folder (layout: schemas/shard.py) for training and evaluation, in bounded
memory: token maps are read from the shards when asked for, never the whole split.

- `ShardFolder(path)`: the manifest (provenance: encoder, split settings, code version), per role
  (`"db"`, `"query"`) the frame ids, sequence bounds and token maps as a `FrameArray`, the queries'
  positives and the negative candidates (`negatives.npy`).
- `SequenceDataset(folder, role, length)`: a PyTorch map-style dataset of every row's centred
  sequence of `length` frames, (L, 576, 384) float16, with the query's positives and negative
  candidates; safe in DataLoader workers. backend "pread" reads the members' bytes at their offsets
  in the shards; "wids" reads samples through `wids.ShardListDataset` and `index.wids.json`.
- `FrameArray`: a read-only array of rows stored in files (shard members or a temporary file),
  indexed like a numpy array (ints, slices, integer arrays of any shape) and read on demand.
- `collect(batches)`: rows computed batch by batch kept in memory up to a budget, else in a temporary
  file (`FrameArray`), so descriptor caches of a whole split do not grow memory.

Sequences follow seqNet's convention (`seqvpr.seqbounds.centred_sequence`): L // 2 frames before the
row, shifted to stay inside its run; runs shorter than L repeat their edge frames.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
import torch.utils.data

from schemas.shard import MANIFEST, WIDS_INDEX
from seqvpr.errors import DataError
from seqvpr.seqbounds import centred_sequence
from seqvpr.shards import scan_shards

ROLES = ("db", "query")
DESCRIPTOR_BUDGET = 64 << 20  # bytes of computed rows `collect` keeps in memory before it spills to a file


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


class FrameArray:
    """Read-only (N, *row_shape) array whose row i is `row_shape` `dtype` values at byte `offsets[i]`
    of file `files[file_index[i]]`. Indexing reads the rows asked for (os.preadv into the result) and
    returns a numpy array; `take` and `join` make new views without reading. File descriptors are
    opened per process, so copies in forked or spawned DataLoader workers read independently.
    `keep`: an object that must live as long as the files (a temporary directory)."""

    def __init__(self, files, file_index: np.ndarray, offsets: np.ndarray, row_shape: tuple, dtype, keep=None):
        self.files = tuple(str(f) for f in files)
        self.file_index = np.asarray(file_index, dtype=np.int64)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.row_shape, self.dtype, self._keep = tuple(row_shape), np.dtype(dtype), keep
        self._fds, self._pid = {}, None

    @property
    def shape(self) -> tuple:
        return (len(self.offsets), *self.row_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.row_shape)

    def __len__(self) -> int:
        return len(self.offsets)

    def _fd(self, number: int) -> int:
        if self._pid != os.getpid():  # a forked worker: the parent's descriptors are not ours to share
            self._fds, self._pid = {}, os.getpid()
        if number not in self._fds:
            self._fds[number] = os.open(self.files[number], os.O_RDONLY)
        return self._fds[number]

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self[np.asarray([index])][0]
        rows = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index, dtype=np.int64)
        rows = np.where(rows < 0, rows + len(self), rows)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row {rows.max() if rows.max() >= len(self) else rows.min()} out of range for {len(self)} rows")
        out = np.empty((*rows.shape, *self.row_shape), self.dtype)
        flat = out.reshape(rows.size, -1).view(np.uint8)
        for k, i in enumerate(rows.ravel()):
            got = os.preadv(self._fd(self.file_index[i]), [flat[k]], int(self.offsets[i]))
            if got != flat.shape[1]:
                raise DataError(self.files[self.file_index[i]], f"{got} bytes at offset {self.offsets[i]}, expected {flat.shape[1]}")
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype)

    def take(self, rows) -> FrameArray:
        """The rows `rows` (1-D) as a new FrameArray, without reading them."""
        rows = np.asarray(rows, dtype=np.int64)
        return FrameArray(self.files, self.file_index[rows], self.offsets[rows], self.row_shape, self.dtype, self._keep)

    @staticmethod
    def join(parts: list[FrameArray]) -> FrameArray:
        """The rows of `parts` one after the other (same row shape and dtype), without reading them."""
        files, index = [], []
        for part in parts:
            files += [f for f in part.files if f not in files]
            renumber = np.array([files.index(f) for f in part.files], dtype=np.int64)
            index.append(renumber[part.file_index])
        first = parts[0]
        return FrameArray(files, np.concatenate(index), np.concatenate([p.offsets for p in parts]), first.row_shape,
                          first.dtype, [p._keep for p in parts])

    def __getstate__(self):
        return {**self.__dict__, "_fds": {}, "_pid": None}

    def __del__(self):
        if self._pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)


def take_rows(array, rows):
    """array[rows] for numpy arrays; a view without reading for a FrameArray."""
    return array.take(rows) if isinstance(array, FrameArray) else array[rows]


def join_rows(first, second, rows: np.ndarray):
    """Rows `rows` (sorted) of first and second stacked: a view for FrameArrays, else a numpy array."""
    rows = np.asarray(rows, dtype=np.int64)
    split = np.searchsorted(rows, len(first))
    if isinstance(first, FrameArray) and isinstance(second, FrameArray):
        return FrameArray.join([first.take(rows[:split]), second.take(rows[split:] - len(first))])
    return np.concatenate([first[rows[:split]], second[rows[split:] - len(first)]])


def collect(batches: Iterable[np.ndarray], budget: int | None = None):
    """Rows computed batch by batch, stacked: a numpy array while they take at most `budget` bytes
    (default `DESCRIPTOR_BUDGET`), else a FrameArray over a temporary file (removed when the array
    is freed). Either holds the same values. None when there is no batch."""
    budget = DESCRIPTOR_BUDGET if budget is None else budget
    held, size, out, spill = [], 0, None, None
    for batch in batches:
        batch = np.ascontiguousarray(batch)
        if out is None:
            size += batch.nbytes
            held.append(batch)
            if size <= budget:
                continue
            spill = tempfile.TemporaryDirectory(prefix="seqvpr-rows-")
            out = open(Path(spill.name) / "rows.bin", "wb")
            batches_to_write, held = held, []
        else:
            batches_to_write = [batch]
        for part in batches_to_write:
            out.write(memoryview(part).cast("B"))
            held.append((len(part), part.shape[1:], part.dtype))
    if out is None:
        return np.concatenate(held) if held else None
    out.close()
    count = sum(n for n, _, _ in held)
    row_shape, dtype = held[0][1], held[0][2]
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
    return FrameArray([out.name], np.zeros(count, np.int64), np.arange(count, dtype=np.int64) * row_bytes, row_shape, dtype, spill)


def read_manifest(folder: Path) -> dict:
    """The folder's manifest; DataError when it is missing or predates the provenance record."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise DataError(path, "no shard manifest: materialise the shards first")
    manifest = json.loads(path.read_text())
    if "encoder" not in manifest:
        raise DataError(path, "no \"encoder\" record (shards written before the manifest carried provenance): rebuild the shards")
    return manifest


class ShardFolder:
    """One split's shard folder. Reads the manifest and the samples' JSON rows and tar headers once
    (not the token maps). Per role (`"db"`, `"query"`), in `order`:
    frame_ids[role]: list[str]; bounds[role]: (N, 2) int64 [start, end) runs; tokens(role): FrameArray
    (N, 576, 384) float16 (the shape the shards hold); for queries, positives / nontrivial_positives:
    lists of int64 arrays of database `order`s; negatives: (Nq, K) int64 candidates, -1 padded
    ((Nq, 0) when the folder has none). DataError (naming the file) on a folder without provenance
    or with samples out of the layout's order."""

    def __init__(self, path):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        shards = self.manifest["shards"]
        rows, locations, formats = [], {}, set()
        for number, member, value in scan_shards(self.path, shards):
            if member.name.endswith(".json"):
                rows.append(json.loads(value))
            elif member.name.endswith(".tokens.npy"):
                shape, dtype, offset = value
                locations[member.name.split(".", 1)[0]] = (number, offset)
                formats.add((shape, dtype.str))
        if len(formats) > 1:
            raise DataError(self.path / shards[0]["name"], f"token maps of different shapes or dtypes: {sorted(formats)}")
        roles = [r["role"] for r in rows]
        if roles != sorted(roles, key=ROLES.index) or any(
                r["order"] != n for role in ROLES for n, r in enumerate(x for x in rows if x["role"] == role)):
            raise DataError(self.path / MANIFEST, "samples are not in split-table order (db rows, then queries, each by order)")
        shape, dtype = formats.pop() if formats else ((576, 384), "<f2")
        self.frame_ids, self.bounds, self._tokens = {}, {}, {}
        files = [self.path / s["name"] for s in shards]
        for role in ROLES:
            part = [r for r in rows if r["role"] == role]
            self.frame_ids[role] = [r["frame_id"] for r in part]
            self.bounds[role] = np.array([[r["seq_start"], r["seq_end"]] for r in part], dtype=np.int64).reshape(-1, 2)
            where = np.array([locations[r["frame_id"]] for r in part], dtype=np.int64).reshape(-1, 2)
            self._tokens[role] = FrameArray(files, where[:, 0], where[:, 1], shape, dtype)
        queries = [r for r in rows if r["role"] == "query"]
        self.positives = [np.asarray(r["positives"], dtype=np.int64) for r in queries]
        self.nontrivial_positives = [np.asarray(r["nontrivial_positives"], dtype=np.int64) for r in queries]
        record = self.manifest.get("negatives")
        self.negatives = (np.load(self.path / record["file"], mmap_mode="r") if record
                          else np.zeros((len(queries), 0), np.int64))

    def tokens(self, role: str) -> FrameArray:
        return self._tokens[role]

    def windows(self, role: str, length: int) -> np.ndarray:
        """(N, length) int64 frame indices (order space) of every row's centred sequence."""
        return sequence_windows(self.bounds[role], length)

    def sample_number(self, role: str, rows: np.ndarray) -> np.ndarray:
        """Sample numbers (index in shard order, what `index.wids.json` counts) of rows of a role."""
        return np.asarray(rows) + (self.manifest["counts"]["db"] if role == "query" else 0)


class SequenceDataset(torch.utils.data.Dataset):
    """Every row of one role as a sequence of `length` frames. Item i: {"tokens": (L, 576, 384)
    float16, "frames": (L,) int64 order indices, "index": i, "frame_id": str} and, for queries,
    "positives" / "nontrivial_positives" (database orders) and "negatives" (candidates, -1 padded).
    backend "pread" (default): the members' bytes at their offsets in the shards; "wids": samples
    through `wids.ShardListDataset` over `index.wids.json` (memory-mapped shards, read in place).
    Use `collate` as a DataLoader's collate_fn (tokens stacked, the rest as lists)."""

    def __init__(self, folder, role: str = "query", length: int = 5, backend: str = "pread"):
        if role not in ROLES or backend not in ("pread", "wids"):
            raise ValueError(f"role must be one of {ROLES} and backend 'pread' or 'wids', got {role!r}, {backend!r}")
        self.folder = folder if isinstance(folder, ShardFolder) else ShardFolder(folder)
        self.role, self.length, self.backend = role, length, backend
        self.windows = self.folder.windows(role, length)
        self._wids = None

    def __len__(self) -> int:
        return len(self.windows)

    def _frames(self, frames: np.ndarray) -> np.ndarray:
        if self.backend == "pread":
            return self.folder.tokens(self.role)[frames]
        if self._wids is None:  # opened in the process that reads (each DataLoader worker)
            import wids

            self._wids = wids.ShardListDataset(str(self.folder.path / WIDS_INDEX), localname=lambda url: url,
                                               transformations=[])
        return np.stack([np.load(self._wids[int(n)][".tokens.npy"]) for n in self.folder.sample_number(self.role, frames)])

    def __getitem__(self, index: int) -> dict:
        frames = self.windows[index]
        item = {"tokens": self._frames(frames), "frames": frames, "index": int(index),
                "frame_id": self.folder.frame_ids[self.role][index]}
        if self.role == "query":
            item.update(positives=self.folder.positives[index], nontrivial_positives=self.folder.nontrivial_positives[index],
                        negatives=np.asarray(self.folder.negatives[index]))
        return item

    def __getstate__(self):
        return {**self.__dict__, "_wids": None}

    @staticmethod
    def collate(items: list[dict]) -> dict:
        """Items of a batch: "tokens" and "frames" stacked into tensors (B, L, ...), the rest as lists."""
        out = {key: [item[key] for item in items] for key in items[0]}
        out["tokens"] = torch.from_numpy(np.stack(out["tokens"]))
        out["frames"] = torch.from_numpy(np.stack(out["frames"]))
        return out

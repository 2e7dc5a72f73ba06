"""The embedding cache's chunk files: their format, the index from frame digest to (chunk, row),
the reads of one frame's tokens or descriptor, and the writer that fills a chunk.

Storage: `<cache>/chunks/<name>.chunk`, each holding up to `CHUNK_FRAMES` frames as three `.npy`
arrays one after the other in one file (read them back with three `np.load` calls on one open file):
the frames' digests (n,) `S64` (hex), their float16 tokens after the frozen blocks (n, 576, 384),
and the float32 pooled descriptors of the final token maps (n, 384); the token array's npy header is
padded (spaces, as the format allows) so that its rows start at a multiple of 4096 bytes and go to
the file with O_DIRECT where the file system allows it (DIRECT_ALIGN). A chunk is written under a
temporary name, fsynced once and renamed (`seqvpr.atomic`), so a killed run leaves only whole
chunks under their final names. The index from digest to (chunk, row) is the digests at the head
of each chunk. A chunk's frames are the next `CHUNK_FRAMES` of the run's new frames in digest
order and its name is the hash of their digests, so a run resumed after a kill writes the same
chunks as an uninterrupted one.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import queue
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from seqvpr.atomic import atomic_path
from seqvpr.errors import DataError

CHUNK_FRAMES = 256  # 113 MB of float16 tokens: one fsync per 256 frames
CHUNK_SUFFIX = ".chunk"
DIGEST_DTYPE = np.dtype("S64")
TOKEN_DTYPE = np.dtype("<f2")
DESCRIPTOR_DTYPE = np.dtype("<f4")


def chunk_folder(cache_dir: Path) -> Path:
    return Path(cache_dir) / "chunks"


@dataclass(frozen=True)
class _Chunk:
    path: Path
    rows: int
    token_shape: tuple
    tokens_offset: int  # byte offset of row 0 of the token array
    descriptor_shape: tuple
    descriptors_offset: int


def npy_header(fh) -> tuple[tuple, np.dtype]:
    """(shape, dtype) of the npy array whose header starts at the file's position, which it leaves at
    the array's data; ValueError for a Fortran-ordered array or a damaged header."""
    version = np.lib.format.read_magic(fh)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(fh)
    if fortran:
        raise ValueError("Fortran-ordered array")
    return shape, dtype


def _read_chunk_head(path: Path) -> tuple[_Chunk, np.ndarray]:
    """The chunk's layout and its digests (hex strings as S64)."""
    with open(path, "rb") as fh:
        try:
            shape, dtype = npy_header(fh)
            if dtype != DIGEST_DTYPE or len(shape) != 1:
                raise ValueError(f"digest array is {dtype} {shape}")
            digests = np.frombuffer(fh.read(shape[0] * DIGEST_DTYPE.itemsize), dtype=DIGEST_DTYPE)
            token_shape, dtype = npy_header(fh)
            if dtype != TOKEN_DTYPE or token_shape[:1] != shape:
                raise ValueError(f"token array is {dtype} {token_shape}")
            tokens_offset = fh.tell()
            fh.seek(int(np.prod(token_shape)) * TOKEN_DTYPE.itemsize, os.SEEK_CUR)
            desc_shape, dtype = npy_header(fh)
            if dtype != DESCRIPTOR_DTYPE or desc_shape[:1] != shape:
                raise ValueError(f"descriptor array is {dtype} {desc_shape}")
            descriptors_offset = fh.tell()
        except ValueError as error:
            raise DataError(path, f"not an embedding chunk ({error}): delete it and embed again") from None
        if descriptors_offset + int(np.prod(desc_shape)) * DESCRIPTOR_DTYPE.itemsize != os.fstat(fh.fileno()).st_size:
            raise DataError(path, "embedding chunk has the wrong size: delete it and embed again")
    return _Chunk(path, shape[0], tuple(token_shape[1:]), tokens_offset, tuple(desc_shape[1:]), descriptors_offset), digests


class _Index:
    """digest -> (chunk, row) of one cache folder, read from the chunks' heads; chunks written by
    another process since the last look are picked up on the next miss. A digest in two chunks
    (two processes embedded the same frame) resolves to the first chunk by name."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.chunks: dict[str, tuple[_Chunk, np.ndarray]] = {}
        self.rows: dict[str, tuple[_Chunk, int]] = {}
        self.lock = threading.Lock()

    def refresh(self) -> None:
        with self.lock:
            names = sorted(p.name for p in self.folder.glob(f"*{CHUNK_SUFFIX}") if not p.name.startswith(".")) \
                if self.folder.is_dir() else []
            if names == list(self.chunks):
                return
            self.chunks = {name: self.chunks.get(name) or _read_chunk_head(self.folder / name) for name in names}
            rows = {}
            for chunk, digests in reversed(list(self.chunks.values())):  # the first chunk by name wins
                rows.update((d.decode(), (chunk, row)) for row, d in enumerate(digests))
            self.rows = rows

    def find(self, digest: str) -> tuple[_Chunk, int] | None:
        if digest not in self.rows:
            self.refresh()
        return self.rows.get(digest)


_INDEXES: dict[Path, _Index] = {}
_INDEXES_LOCK = threading.Lock()


def _index(cache_dir: Path) -> _Index:
    folder = chunk_folder(cache_dir).resolve()
    with _INDEXES_LOCK:
        return _INDEXES.setdefault(folder, _Index(folder))


def cached_digests(cache_dir: Path) -> set[str]:
    """Every frame digest with an embedding in the cache."""
    index = _index(cache_dir)
    index.refresh()
    return set(index.rows)


def _read_row(cache_dir: Path, digest: str, tokens: bool) -> np.ndarray:
    index = _index(cache_dir)
    for _ in range(2):
        found = index.find(digest)
        if found is None:
            raise DataError(chunk_folder(cache_dir) / digest, "embedding missing from the cache: materialise the embeddings first")
        chunk, row = found
        shape, dtype, offset = ((chunk.token_shape, TOKEN_DTYPE, chunk.tokens_offset) if tokens
                                else (chunk.descriptor_shape, DESCRIPTOR_DTYPE, chunk.descriptors_offset))
        size = int(np.prod(shape)) * dtype.itemsize
        try:
            with open(chunk.path, "rb") as fh:
                data = os.pread(fh.fileno(), size, offset + row * size)
        except FileNotFoundError:  # the chunk was replaced or removed since the index was read
            index.chunks.clear()
            index.refresh()
            continue
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    raise DataError(chunk.path, "embedding chunk disappeared while reading")


def load_tokens(cache_dir: Path, digest: str) -> np.ndarray:
    """(576, 384) float16 tokens of a cached frame, after the frozen blocks; DataError if absent."""
    return _read_row(cache_dir, digest, tokens=True)


def load_descriptor(cache_dir: Path, digest: str) -> np.ndarray:
    """(384,) float32 pooled descriptor of the frame's final token map; DataError if absent."""
    return _read_row(cache_dir, digest, tokens=False)


def chunk_name(digests: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()[:32] + CHUNK_SUFFIX


class ChunkWriter(threading.Thread):
    """Appends batches, in order, to the chunks of `plan` (lists of digests): one atomic file and
    one fsync per chunk. put(tokens, descriptors) blocks when `depth` batches wait; finish() waits
    for the last chunk and re-raises the thread's error; abort() drops the chunk being written."""

    _STOP = object()

    def __init__(self, folder: Path, plan: list[list[str]], depth: int = 4):
        super().__init__(name="embedding-writer", daemon=True)
        self.folder, self.plan = folder, plan
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.busy = 0.0  # seconds spent writing and fsyncing (not waiting for batches)
        self.start()

    def put(self, tokens: np.ndarray, descriptors: np.ndarray, written: Callable[[], None] | None = None) -> None:
        """written(): called once the tokens are in the file (their buffer may be reused then)."""
        self._offer((tokens, descriptors, written))
        self._check()

    def finish(self) -> None:
        self.join()
        self._check()

    def abort(self) -> None:
        self._offer(self._STOP)
        self.join()

    def _offer(self, item) -> None:
        while self.is_alive():  # a writer that died stops taking items: never block on it
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def _next(self):
        self.busy += time.perf_counter() - self._since
        item = self.queue.get()
        self._since = time.perf_counter()
        if item is self._STOP:
            raise InterruptedError("embedding run stopped")
        return item

    def run(self) -> None:
        self._since = time.perf_counter()
        try:
            for digests in self.plan:
                self._write_chunk(digests)
            self.busy += time.perf_counter() - self._since
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            self.error = error
            while True:  # unblock a producer waiting on a full queue
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    break

    def _write_chunk(self, digests: list[str]) -> None:
        n, batch = len(digests), self._next()  # the chunk's file appears with its first batch
        with atomic_path(self.folder / chunk_name(digests)) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.array(digests, dtype=DIGEST_DTYPE), allow_pickle=False)
            header = {"descr": np.lib.format.dtype_to_descr(TOKEN_DTYPE), "fortran_order": False,
                      "shape": (n, *batch[0].shape[1:])}
            fh.write(_aligned_npy_header(fh.tell(), header))
            fh.flush()
            rows, descriptors, offset, direct = 0, [], fh.tell(), _open_direct(tmp)
            try:
                while True:
                    tokens, desc, written = batch
                    data = np.ascontiguousarray(tokens, dtype=TOKEN_DTYPE)
                    if direct is not None and not _write_direct(direct, data, offset):
                        os.close(direct)
                        direct = None
                    if direct is None:
                        _pwrite(fh.fileno(), memoryview(data).cast("B"), offset)
                    offset += data.nbytes
                    if written is not None:
                        written()
                    descriptors.append(np.asarray(desc, dtype=DESCRIPTOR_DTYPE))
                    rows += len(tokens)
                    if rows >= n:
                        break
                    batch = self._next()
            finally:
                if direct is not None:
                    os.close(direct)
            if rows != n:
                raise RuntimeError(f"chunk of {n} frames got {rows} rows")
            fh.seek(offset)
            np.save(fh, np.concatenate(descriptors), allow_pickle=False)


# Token rows start at a multiple of DIRECT_ALIGN in a chunk (the npy header before them is padded,
# as the format allows) and a row is 108 x 4096 bytes, so batches go to the file with O_DIRECT from
# page-aligned buffers: no copy into the page cache (a core's 0.15-0.45 ms a frame here).
DIRECT_ALIGN = 4096


def _aligned_npy_header(start: int, header: dict) -> bytes:
    """An npy 1.0 header for `header`, padded with spaces before its newline so that the array's
    data begins at a multiple of DIRECT_ALIGN when the header is written at byte `start`."""
    canonical = io.BytesIO()
    np.lib.format.write_array_header_1_0(canonical, header)
    text = canonical.getvalue()[10:].rstrip(b" \n")  # after magic, version and length: the dict
    size = 10 + len(text) + 1
    size += -(start + size) % DIRECT_ALIGN
    return np.lib.format.magic(1, 0) + struct.pack("<H", size - 10) + text.ljust(size - 11) + b"\n"


def _open_direct(path: Path) -> int | None:
    """A second descriptor of the chunk file that writes around the page cache (O_DIRECT); None where
    the file system refuses it (tmpfs, some network file systems): the writes are buffered then."""
    try:
        return os.open(path, os.O_WRONLY | os.O_DIRECT)
    except (AttributeError, OSError):
        return None


# what an O_DIRECT write answers where it cannot be done (alignment the device wants, memory the kernel
# cannot pin for it, e.g. a driver's mapping, a file system without it): the batch is written buffered
_NOT_DIRECT = {errno.EINVAL, errno.EFAULT, errno.EOPNOTSUPP, errno.ENOTSUP}


def _write_direct(fd: int, data: np.ndarray, offset: int) -> bool:
    """Write `data` at `offset` through an O_DIRECT descriptor; False (nothing trusted written) where
    its address, size or offset is not aligned or the write cannot be direct, to write it buffered."""
    if data.ctypes.data % DIRECT_ALIGN or data.nbytes % DIRECT_ALIGN or offset % DIRECT_ALIGN:
        return False
    try:
        _pwrite(fd, memoryview(data).cast("B"), offset)
    except OSError as error:
        if error.errno not in _NOT_DIRECT:
            raise
        return False
    return True


def _pwrite(fd: int, data: memoryview, offset: int) -> None:
    while data:
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done

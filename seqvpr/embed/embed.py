"""Batch inference over normalised frames with a content-addressed token cache.

Cache key: SHA-256 of the normalised frame file's bytes, inside a folder named by `model_id` (the
weights identity, layers kept, embedding cut, input size and normalisation). A frame embedded once
with the same weights and preprocessing is never embedded again, so a new frame separation only
embeds the frames it adds.

Storage: chunk files of up to `CHUNK_FRAMES` frames each, written once and renamed into place
(`seqvpr.embed.chunks`, which also reads them back).

Pipeline (`FrameEmbedder.embed_files`): files are hashed on a thread pool; DataLoader worker
processes read and decode each batch's frames straight into a ring of batch slots in shared memory
(pinned on CUDA) and send back only the batch number, so the main process neither unpickles nor
copies frames; a slot is copied to the device in one upload on an upload stream, normalised,
embedded (bf16 autocast on CUDA by default) and pooled there; tokens and descriptors come back in
their stored dtypes, one copy each per batch on a download stream, while the next batch runs; a
writer thread (two, taking chunks in turn, so one fsyncs while the other writes) appends each batch's
tokens to the chunk file in one write. On a CPU (no streams) the same steps cost the main process
as little as they can: workers read each frame straight into its slot row (read_frame(out=)), the
batch is normalised by table lookup (normalise_on_cpu, normalise()'s values bit for bit), the tokens
are rounded to float16 into reused host buffers while they are pooled (pooled_descriptors), and the
writer hands each buffer back once written. EmbedStats.timings says where the time went (TIMINGS),
with the CPU time of this process and of the decoding workers.
"""
import functools
import hashlib
import mmap
import os
import queue
import resource
import time
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from seqvpr.datasets.frames import load_frame, os_problem
from seqvpr.embed.cct import (EMBED_DIM, IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD, TOKENS, build_cct384,
                             frozen_blocks)
from seqvpr.embed.chunks import CHUNK_FRAMES, TOKEN_DTYPE, ChunkWriter, cached_digests, chunk_folder, npy_header
from seqvpr.errors import DataError
from seqvpr.hashing import file_sha256
from seqvpr.housekeeping import forkserver_context, leave_with

PREPROCESSING = f"rgb{IMAGE_SIZE}-imagenet-norm"
WRITERS = 2  # writer threads, taking chunks in turn
NULL_WEIGHTS = "null-model"


def model_id(weights: str, num_layers: int, freeze_te: int | None = None) -> str:
    """Cache namespace; freeze_te None (or num_layers - 1) is the frozen backbone, whose tokens
    are the final ones (the namespace it always had)."""
    freeze_te = num_layers - 1 if freeze_te is None else freeze_te
    cut = frozen_blocks(freeze_te, num_layers)
    key = f"cct_14_7x2_384|{weights}|layers={num_layers}|{PREPROCESSING}"
    if cut < num_layers:
        key += f"|freeze_te={freeze_te}"
    return "cct384-" + hashlib.sha256(key.encode()).hexdigest()[:16]


class _HostTokens:
    """The CPU path's float16 token buffers, (batch, 576, 384) each: take() hands out a free one (a
    new one only when every buffer is still queued for a writer, so memory is what is in flight,
    as with fresh arrays) and the writer gives it back once written. A fresh 0.44 MB a frame each
    batch costs a CPU page faults worth more than the conversion into it."""

    def __init__(self, batch_size: int):
        self.batch_size, self.free = batch_size, queue.SimpleQueue()

    def take(self, n: int) -> tuple[torch.Tensor, Callable[[], None]]:
        try:
            buffer = self.free.get_nowait()
        except queue.Empty:  # page-aligned (an anonymous mapping), for the writers' O_DIRECT writes
            memory = mmap.mmap(-1, self.batch_size * TOKENS * EMBED_DIM * TOKEN_DTYPE.itemsize)
            buffer = torch.frombuffer(memory, dtype=torch.float16).view(self.batch_size, TOKENS, EMBED_DIM)
        return buffer[:n], lambda: self.free.put(buffer)


# ---------------------------------------------------------------- models and batches


def global_descriptor(tokens: np.ndarray) -> np.ndarray:
    """Pooled frame descriptor: L2-normalised mean of the tokens (float32)."""
    mean = np.asarray(tokens, dtype=np.float32).mean(axis=-2)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


POOL_STEP = 64  # tokens rounded and summed a step on a CPU: 64 x 384 values, under torch's 32,768-value grain


def pooled_descriptors(final: torch.Tensor, rounded: torch.Tensor | None = None) -> torch.Tensor:
    """global_descriptor on the device: (B, n, D) final tokens, rounded to float16 as the cache
    keeps them, -> (B, D) float32 (the mean accumulates in float32). On a CPU each frame is rounded
    and summed in steps of POOL_STEP tokens through a small buffer, into `rounded` ((B, n, D)
    float16) when given, so the tokens are rounded for the cache in the same pass: a fifth of the
    CPU time of widening inside one reduction, and no step is big enough to wake torch's other
    threads (on a loaded 2-core machine frame-sized steps cost 5-10 ms of CPU a frame in waits)."""
    if final.device.type != "cpu":
        mean = torch.mean(final.to(torch.float16), dim=-2, dtype=torch.float32)
        return mean / mean.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    steps = -(-final.shape[-2] // POOL_STEP)
    wide, sums = torch.empty(POOL_STEP, final.shape[-1]), torch.empty(steps, final.shape[-1])
    mean = torch.empty(final.shape[0], final.shape[-1])
    for i, (frame, out) in enumerate(zip(final, mean)):
        into = rounded[i].split(POOL_STEP) if rounded is not None else [None] * steps
        for step, tokens, half in zip(sums, frame.split(POOL_STEP), into):
            half = tokens.to(torch.float16) if half is None else half.copy_(tokens)
            torch.sum(wide[:len(half)].copy_(half), dim=0, out=step)
        torch.sum(sums, dim=0, out=out)
    mean /= final.shape[-2]
    return mean / mean.norm(dim=-1, keepdim=True).clamp_min(1e-12)


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
    return normalise(torch.from_numpy(np.stack(frames)).to(device))


def normalise(images: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB on any device -> (B, 3, H, W) float32 ImageNet-normalised, there:
    (x / 255 - mean) / std (on a CPU the embedding stage computes the same values with
    normalise_on_cpu, into a reused buffer)."""
    out = torch.empty(images.permute(0, 3, 1, 2).shape, device=images.device)
    out.copy_(images.permute(0, 3, 1, 2))
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return out.div_(255.0).sub_(mean).div_(std)


@functools.cache
def _normalise_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """normalise()'s own float32 value of each uint8 level, one (256, 1) table per channel."""
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 256, 1).expand(1, 1, 256, 3)
    table = normalise(levels)[0, :, 0, :]
    return tuple(table[c].numpy().reshape(256, 1).copy() for c in range(3))


def normalise_on_cpu(frames: np.ndarray, out: torch.Tensor) -> torch.Tensor:
    """normalise() for a CPU, bit for bit the same values at a third to a half of its CPU time:
    (B, H, W, 3) uint8 RGB (numpy) -> `out`, a contiguous (B, 3, H, W) float32 tensor. Each frame is
    split into its three planes (cv2.split, into one reused buffer) and each plane looked up in a
    256-entry table of normalise()'s own results (cv2.LUT): every value is read once and written
    once, where normalise() makes four passes over the float32 batch, the first a strided one."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (B, H, W, 3) uint8, got {frames.dtype} {frames.shape}")
    if out.dtype != torch.float32 or tuple(out.shape) != (frames.shape[0], 3, *frames.shape[1:3]) or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous float32 (B, 3, H, W) tensor for {frames.shape}, got {out.dtype} {tuple(out.shape)}")
    tables, planes, target = _normalise_tables(), list(np.empty((3, *frames.shape[1:3]), np.uint8)), out.numpy()
    for frame, channels in zip(frames, target):
        for plane, table, channel in zip(cv2.split(frame, planes), tables, channels):
            cv2.LUT(plane, table, dst=channel)
    return out


class NullCCT(nn.Module):
    """A stand-in for CCT384 that costs nothing: `forward_cut` returns float32 token maps of the real
    shape (B, 576, 384), a seeded fixed map plus a per-frame offset read from a few pixels, so the
    embedding pipeline around it (reading, decoding, copies, pooling, cache writes) can be measured
    alone, and a cache can be filled with tokens of the real size quickly."""

    def __init__(self, num_layers: int, seed: int = 0):
        super().__init__()
        self.num_layers = num_layers
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("base", torch.randn(1, TOKENS, EMBED_DIM, generator=generator))
        self._out: torch.Tensor | None = None

    def forward_cut(self, images: torch.Tensor, cut: int):
        """The token map is one buffer reused from call to call (a model's output is consumed before
        the next batch runs): a fresh 0.9 MB a frame would cost a CPU more than everything else here."""
        offset = images[:, :, ::64, ::64].float().mean(dim=(1, 2, 3)).view(-1, 1, 1)
        shape = (len(images), *self.base.shape[1:])
        if self._out is None or self._out.shape != shape or self._out.device != self.base.device:
            self._out = torch.empty(shape, device=self.base.device)
        tokens = torch.add(self.base, offset, out=self._out)
        return tokens, tokens


def read_frame(path: Path, out: np.ndarray | None = None) -> np.ndarray:
    """A normalised frame as RGB uint8 (H, W, 3): an image as the frames stage writes it (TIFF, or PNG
    as it did before; `load_frame`), or an uncompressed `.npy` array of that shape (benchmarks compare them).
    out: a uint8 (H, W, 3) array (a batch slot's row) the frame is read straight into when it has
    that shape, saving a new array and a copy a frame; returned as read otherwise. DataError
    naming the file when it is missing, unreadable or not a frame."""
    if Path(path).suffix != ".npy":
        return load_frame(path, out)
    try:
        with open(path, "rb") as fh:
            try:
                shape, dtype = npy_header(fh)
            except ValueError as error:
                raise DataError(path, f"not a frame array ({error})") from None
            if out is None or shape != out.shape or dtype != out.dtype:
                out = np.empty(shape, dtype)
            if fh.readinto(memoryview(out).cast("B")) != out.nbytes:
                raise DataError(path, "frame array is truncated")
    except FileNotFoundError:
        raise DataError(path, "normalised frame missing") from None
    except OSError as error:
        raise DataError(path, f"cannot read normalised frame: {os_problem(error)}") from error
    return out


class _FrameBatches(torch.utils.data.Dataset):
    """Batch k -> its frames read and decoded straight into slot k % len(slots) of `slots`, a
    (slots, B, 384, 384, 3) uint8 tensor in shared memory (pinned on CUDA) that the main process
    uploads from: what crosses the process boundary is (k, None), or (k, (path, problem)) for a bad
    file so the main process raises the DataError (exceptions lose their type across processes).
    No per-frame pickling, no fresh shared-memory segment per batch, no pinning copy."""

    def __init__(self, paths: Sequence[Path], batches: list[list[int]], slots: torch.Tensor):
        self.paths, self.batches, self.slots = list(paths), batches, slots
        self.client = os.getpid()

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int):
        return k, self._fill(k), self._cpu()

    def _fill(self, k: int):
        slot = self.slots[k % len(self.slots)].numpy()
        for j, i in enumerate(self.batches[k]):
            try:
                frame = read_frame(self.paths[i], slot[j])
            except DataError as error:
                return error.path, error.problem
            if frame.shape != (IMAGE_SIZE, IMAGE_SIZE, 3) or frame.dtype != np.uint8:
                return str(self.paths[i]), (f"frame is {frame.dtype} {frame.shape}, the embedding needs "
                                            f"uint8 {IMAGE_SIZE}x{IMAGE_SIZE}x3: normalise the frames again")
            if frame is not slot[j] and not np.shares_memory(frame, slot[j]):
                slot[j] = frame
        return None

    @staticmethod
    def _cpu() -> tuple[int, float] | None:
        """(worker id, the worker process's CPU seconds so far); None in the main process."""
        info = torch.utils.data.get_worker_info()
        return None if info is None else (info.id, time.process_time())


def _as_is(item):
    return item


def _shared_slots(count: int, batch_size: int) -> torch.Tensor:
    """(count, batch_size, 384, 384, 3) uint8 in shared memory, allocated there (no copy)."""
    shape = (count, batch_size, IMAGE_SIZE, IMAGE_SIZE, 3)
    storage = torch.UntypedStorage._new_shared(int(np.prod(shape)))
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


def _worker_init(_):
    import cv2

    cv2.setNumThreads(1)  # one core per worker (cvtColor would start a thread per core in each)
    leave_with(torch.utils.data.get_worker_info().dataset.client)  # a forkserver's worker, not the client's child


WORKERS_FROM = 256  # new frames from which decoding workers pay for their start (seconds on a loaded CPU)


def default_workers(frames: int | None = None) -> int:
    """Decoding processes: every core but the one that drives the model (at least one); none for
    fewer than WORKERS_FROM new frames."""
    if frames is not None and frames < WORKERS_FROM:
        return 0
    return max(1, min((os.cpu_count() or 2) - 1, 32))


@dataclass
class EmbedStats:
    embedded: int
    cache_hits: int
    seconds: float
    chunks: int = 0
    workers: int = 0
    timings: dict = field(default_factory=dict)  # seconds, keys TIMINGS

    @property
    def frames_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0


PRECISIONS = ("auto", "fp32", "bf16")
# Where embed_files' wall time goes (seconds): hash (hashing, cache index, plan), start (loader and
# workers until the first batch), then per batch in the main thread: wait_batch (for the workers),
# launch (upload and enqueue the model; the model itself on a CPU), wait_device (for the tokens to
# come back), wait_writer (the writer's queue full); finish (last download and chunk); besides:
# writer_busy (the writer threads' seconds writing and fsyncing, summed over WRITERS), main_thread_cpu
# (the main thread's CPU time), process_cpu (this process's CPU time, every thread: hashing pool,
# writers, torch's threads), hash_cpu (its part before the batches: hashing, cache index, plan),
# workers_cpu (the decoding workers' CPU time, summed, as each reported it with its last batch; 0
# without workers, whose decoding is then in process_cpu).
TIMINGS = ("hash", "start", "wait_batch", "launch", "wait_device", "wait_writer", "finish", "writer_busy",
           "main_thread_cpu", "process_cpu", "hash_cpu", "workers_cpu")


def _process_cpu() -> float:
    """CPU seconds of this process, every thread (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class FrameEmbedder:
    """CCT384 on the GPU when there is one, CPU otherwise. freeze_te: the authors' cut (blocks
    0..freeze_te frozen; default num_layers - 1, every block frozen). precision: "bf16" autocast,
    "fp32", or "auto" (bf16 on CUDA, fp32 on a CPU); it is not part of the cache key. null_model:
    NullCCT in place of CCT384 (own cache namespace), for benchmarks and real-size cache fills."""

    def __init__(self, num_layers: int = 8, checkpoint: str | None = None, device: str = "auto", seed: int = 0,
                 freeze_te: int | None = None, precision: str = "auto", null_model: bool = False):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.device = pick_device(device)
        self.freeze_te = num_layers - 1 if freeze_te is None else freeze_te
        self.cut = frozen_blocks(self.freeze_te, num_layers)
        if null_model:
            model, self.weights = NullCCT(num_layers, seed), f"{NULL_WEIGHTS}-{seed}"
        else:
            model, self.weights = build_cct384(num_layers, checkpoint, seed)
        self.model = model.to(self.device)
        self.model_id = model_id(self.weights, num_layers, self.freeze_te)
        self.precision = ("bf16" if self.device.type == "cuda" else "fp32") if precision == "auto" else precision
        # one stream each way, so batch i+1's upload and batch i's download both overlap compute
        self._streams = (torch.cuda.Stream(self.device), torch.cuda.Stream(self.device)) if self.device.type == "cuda" else None
        self._cpu_input: torch.Tensor | None = None
        self._slots: torch.Tensor | None = None
        self._unpin_slots: Callable[[], object] = lambda: None

    @torch.inference_mode()
    def embed_batch(self, images: torch.Tensor, tokens_out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 384, 384, 3) uint8 RGB on the device -> float16 tokens after the frozen blocks
        (B, 576, 384) and float32 pooled descriptors of the final tokens (B, 384), on the device.
        tokens_out: a (B, 576, 384) float16 tensor there to write the tokens into (the CPU path's
        reused host buffers) instead of a new one."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            x = normalise_on_cpu(images.numpy(), self._input_buffer(images.permute(0, 3, 1, 2).shape)) \
                if images.device.type == "cpu" else normalise(images)
            at_cut, final = self.model.forward_cut(x, self.cut)
        if images.device.type == "cpu" and final is at_cut:  # rounded for the cache while pooled
            tokens = torch.empty(at_cut.shape, dtype=torch.float16) if tokens_out is None else tokens_out
            return tokens, pooled_descriptors(at_cut, rounded=tokens)
        tokens = at_cut.to(torch.float16) if tokens_out is None else tokens_out.copy_(at_cut)
        return tokens, pooled_descriptors(tokens if final is at_cut else final)

    def _input_buffer(self, shape) -> torch.Tensor:
        """On a CPU, one float32 input batch reused from batch to batch (the model has read it before
        the next batch is normalised): a fresh one costs page faults of 1.7 MB a frame (on CUDA the
        caching allocator reuses memory already)."""
        if self._cpu_input is None or self._cpu_input.shape != shape:
            self._cpu_input = torch.empty(shape)
        return self._cpu_input

    def __call__(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 frames (384 x 384) -> float16 tokens (B, 576, 384) and float32 descriptors (B, 384)."""
        to_batch(frames, torch.device("cpu"))  # validates the shapes
        tokens, descriptors = self.embed_batch(torch.from_numpy(np.stack(frames)).to(self.device))
        return tokens.cpu().numpy(), descriptors.cpu().numpy()

    @torch.inference_mode()
    def _launch(self, frames: torch.Tensor, host_tokens: _HostTokens):
        """Start one batch: copy in, embed, copy out; returns what `_collect` waits for. On a CPU the
        tokens go straight into a reused host buffer, which the writer gives back once written."""
        if self._streams is None:
            tokens, give_back = host_tokens.take(len(frames))
            return self.embed_batch(frames, tokens), None, give_back
        upload, download = self._streams
        main = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(upload):
            images = frames.to(self.device, non_blocking=True)
        main.wait_stream(upload)
        images.record_stream(main)
        tokens, descriptors = self.embed_batch(images)
        download.wait_stream(main)
        with torch.cuda.stream(download):
            host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True)
                    for t in (tokens, descriptors)]
            for t in (tokens, descriptors):
                t.record_stream(download)
            done = torch.cuda.Event()
            done.record(download)
        return host, done, None

    @staticmethod
    def _collect(launched) -> tuple[np.ndarray, np.ndarray, Callable[[], None] | None]:
        (tokens, descriptors), done, give_back = launched
        if done is not None:
            done.synchronize()
        return tokens.numpy(), descriptors.numpy(), give_back

    def embed_files(self, paths: Sequence[Path], cache_dir: Path, batch_size: int = 8,
                    progress: Callable[[int, int], None] | None = None, workers: int | None = None,
                    chunk_frames: int = CHUNK_FRAMES) -> tuple[list[str], EmbedStats]:
        """Embed every frame file not cached yet; returns each file's digest (cache key) and stats.
        workers: decoding processes (None: default_workers(new frames); 0: decode in this process).
        progress(done, total) is called after each batch with the new frames embedded so far."""
        if batch_size < 1 or chunk_frames < 1:
            raise ValueError(f"batch_size and chunk_frames must be >= 1, got {batch_size} and {chunk_frames}")
        start, process_cpu = time.perf_counter(), _process_cpu()
        with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
            digests = list(pool.map(file_sha256, paths))
        cached = cached_digests(cache_dir)
        todo = sorted({d: p for d, p in zip(digests, paths) if d not in cached}.items())
        workers = default_workers(len(todo)) if workers is None else workers
        plan = [[d for d, _ in todo[i:i + chunk_frames]] for i in range(0, len(todo), chunk_frames)]
        # batches never straddle a chunk: a resumed run embeds exactly the batches of a clean one
        batches, chunk_of = [], []
        for c, (first, chunk) in enumerate(zip(range(0, len(todo), chunk_frames), plan)):
            for b in range(0, len(chunk), batch_size):
                batches.append(list(range(first + b, first + min(b + batch_size, len(chunk)))))
                chunk_of.append(c)
        timings = dict.fromkeys(TIMINGS, 0.0)
        timings["hash"], timings["hash_cpu"] = time.perf_counter() - start, _process_cpu() - process_cpu
        main_cpu = time.thread_time()
        if todo:
            self._run(todo, plan, batches, chunk_of, chunk_folder(cache_dir), workers, progress, timings)
        timings["main_thread_cpu"] = time.thread_time() - main_cpu
        timings["process_cpu"] = _process_cpu() - process_cpu
        stats = EmbedStats(embedded=len(todo), cache_hits=len(set(digests)) - len(todo),
                           seconds=time.perf_counter() - start, chunks=len(plan), workers=workers, timings=timings)
        return digests, stats

    def _run(self, todo, plan, batches, chunk_of, folder: Path, workers: int, progress, timings: dict) -> None:
        prefetch = 2 if workers else None
        # a slot is rewritten only after its batch's upload is done: workers fill at most
        # prefetch x workers batches ahead of the one in hand, and the one before it may be uploading
        slots = self._batch_slots((prefetch or 0) * workers + 2, max(map(len, batches)))
        loader = torch.utils.data.DataLoader(
            _FrameBatches([p for _, p in todo], batches, slots), batch_size=None, num_workers=workers,
            collate_fn=_as_is, worker_init_fn=_worker_init if workers else None, prefetch_factor=prefetch,
            multiprocessing_context=forkserver_context([__name__]) if workers else None)
        # chunk c goes to writer c % WRITERS: one writes (and fsyncs) a chunk while the next fills
        writers = [ChunkWriter(folder, plan[i::WRITERS]) for i in range(WRITERS)]
        host_tokens = _HostTokens(max(map(len, batches)))
        done, pending, clock, worker_cpu = 0, None, time.perf_counter, {}
        try:
            batches_in = iter(loader)
            t = clock()
            for k, error, cpu in batches_in:
                timings["wait_batch" if k else "start"] += clock() - t
                if error:
                    raise DataError(*error)
                if cpu is not None:
                    worker_cpu[cpu[0]] = cpu[1]
                n = len(batches[k])
                t = clock()
                launched = self._launch(slots[k % len(slots)][:n], host_tokens), writers[chunk_of[k] % WRITERS]
                timings["launch"] += clock() - t
                if pending is not None:
                    self._hand_over(*pending, timings)
                pending = launched
                done += n
                if progress:
                    progress(done, len(todo))
                t = clock()
            t = clock()
            if pending is not None:
                self._hand_over(*pending, timings)
            for writer in writers:
                writer.finish()
            timings["finish"] += clock() - t
        except BaseException:
            for writer in writers:
                writer.abort()
            raise
        finally:
            timings["writer_busy"] += sum(writer.busy for writer in writers)
            timings["workers_cpu"] += sum(worker_cpu.values())
            if self._streams is not None:
                torch.cuda.synchronize(self.device)  # no upload still reads a slot

    def _batch_slots(self, count: int, batch_size: int) -> torch.Tensor:
        """At least `count` shared batch slots of `batch_size` frames, kept from call to call (pinning
        hundreds of MB costs a noticeable part of a second); pinned on CUDA."""
        slots = self._slots
        if slots is None or len(slots) < count or slots.shape[1] < batch_size:
            self._unpin_slots()
            slots = self._slots = _shared_slots(count, batch_size)
            if self._streams is not None:
                try:  # 1: cudaHostRegisterPortable; unregistered before the memory goes (with the embedder)
                    torch.cuda.check_error(torch.cuda.cudart().cudaHostRegister(slots.data_ptr(), slots.numel(), 1))
                    self._unpin_slots = weakref.finalize(self, torch.cuda.cudart().cudaHostUnregister, slots.data_ptr())
                    self._unpin_slots.atexit = False  # the process's end frees it anyway
                except (RuntimeError, AttributeError) as error:
                    warnings.warn(f"pinning {slots.numel() >> 20} MB of batch slots failed ({error}): "
                                  "uploads go through a staging copy", stacklevel=2)
        return slots

    def _hand_over(self, launched, writer: ChunkWriter, timings: dict) -> None:
        t = time.perf_counter()
        tokens, descriptors, give_back = self._collect(launched)
        t1 = time.perf_counter()
        writer.put(tokens, descriptors, give_back)
        timings["wait_device"] += t1 - t
        timings["wait_writer"] += time.perf_counter() - t1

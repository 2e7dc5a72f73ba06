"""Embedding and shard writing vs their bare equivalents, side by side on the same data.

    python benchmarks/bench_embed_shards.py stage [--frames 32] [--batch 8] [--device auto] [--precisions auto] [--rounds 1]
    python benchmarks/bench_embed_shards.py null  [--frames 256] [--batch 32] [--workers 1,2] [--formats tif,png,npy] [--rounds 3]
    python benchmarks/bench_embed_shards.py decode [--frames 128]
    python benchmarks/bench_embed_shards.py shards [--samples 400] [--rounds 7]
    options of every mode: --jsonl FILE (append one JSON object per measurement), --processes N

stage: FrameEmbedder.embed_files (hashing, decoding in worker processes, device copies, pooling,
chunked cache writes) vs a bare loop of `model(x)` over the same frames already decoded,
normalised and on the device, alternating bare / stage / bare; the ratio is to the mean of the
two bare runs. null: the same pipeline with NullCCT (a model that returns tensors of the real
shapes at no cost): the ceiling of everything but the model, per worker count and frame format
(`tif`: what the frames stage writes, uncompressed TIFF; `png`: PNG at compression level 1, the
store before; `npy`: uncompressed uint8 arrays, no decoding at all), with the
CPU time per frame of the main process (all its threads; of it, the hashing pass) and of the
decoding workers, each run and the medians of the rounds.
stage and null also record `time_shares`: where the stage's wall time went (time_shares()). decode: one
core's frames/s to read a frame in each candidate lossless format. shards: write_split_shards
(npy encoding, fixed headers, hashing, manifest, atomic folder) vs writing the same member bytes
with plain `tarfile`.

Frames: views rendered by the synthetic Nordland world (seqvpr.synthetic), resized to 384 px as
the frames stage does, and written with save_frame; beyond the rendered ones each frame is a
rendered view with a seeded 8 x 8 patch changed, so every file has its own digest.
"""
import argparse
import io
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

RENDERED_PER_STRETCH = 8  # 4 seasons x 3 stretches x 8 = 96 rendered views


def _render_season(args) -> list[np.ndarray]:
    from seqvpr.datasets.frames import load_frame, resize_for_model
    from seqvpr.synthetic import generate

    root, season = args
    generate("nordland", Path(root) / season, seed=0, frames=RENDERED_PER_STRETCH, seasons=season)
    return [resize_for_model(load_frame(p), 384) for p in sorted((Path(root) / season / season).glob("*.png"))]


def _write_frame(args) -> None:
    from seqvpr.datasets.frames import save_frame

    base, index, path = args
    frame = base.copy()
    rng = np.random.default_rng(index)
    y, x = rng.integers(0, 384 - 8, size=2)
    frame[y:y + 8, x:x + 8] = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    if path.suffix == ".npy":
        np.save(path, frame, allow_pickle=False)
    elif path.suffix == ".png":  # the frame store before it became TIFF
        import cv2

        path.write_bytes(cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])[1])
    else:
        save_frame(frame, path)


def synthetic_frames(folder: Path, count: int, fmt: str, processes: int) -> list[Path]:
    """`count` distinct 384 px frames in `folder` as .tif (save_frame), .png (level 1) or .npy."""
    folder.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("forkserver")
    with context.Pool(processes) as pool:
        if not hasattr(synthetic_frames, "views"):
            with tempfile.TemporaryDirectory() as raw:
                seasons = ("spring", "summer", "fall", "winter")
                synthetic_frames.views = [v for views in pool.map(_render_season, [(raw, s) for s in seasons]) for v in views]
        views = synthetic_frames.views
        paths = [folder / f"{i:06d}.{fmt}" for i in range(count)]
        pool.map(_write_frame, [(views[i % len(views)], i, p) for i, p in enumerate(paths)], chunksize=16)
    return paths


def _record(args, row: dict) -> None:
    print(json.dumps(row), flush=True)
    if args.jsonl:
        with open(args.jsonl, "a") as fh:
            fh.write(json.dumps(row) + "\n")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def bare_frames_per_second(embedder, x: torch.Tensor, batch: int) -> float:
    """A bare loop of `model(x)` over normalised frames already on the device."""
    bf16 = embedder.precision == "bf16"
    with torch.inference_mode(), torch.autocast(embedder.device.type, dtype=torch.bfloat16, enabled=bf16):
        embedder.model(x[:batch])  # warm-up
        _sync(embedder.device)
        start = time.perf_counter()
        for i in range(0, len(x), batch):
            embedder.model(x[i:i + batch])
        _sync(embedder.device)
    return len(x) / (time.perf_counter() - start)


def time_shares(stats) -> dict:
    """Where embed_files' wall time went, as fractions of it (EmbedStats.timings; seqvpr.embed.embed.TIMINGS):
    the main thread's phases and waits, `main_other` its remaining work (per-batch bookkeeping),
    `writer_busy` the writer thread's writing and fsyncing, `main_thread_cpu` the main thread's CPU."""
    t, wall = stats.timings, stats.seconds
    phases = ("hash", "start", "wait_batch", "launch", "wait_device", "wait_writer", "finish")
    shares = {k: round(t[k] / wall, 3) for k in phases}
    shares["main_other"] = round(max(0.0, wall - sum(t[k] for k in phases)) / wall, 3)
    shares["writer_busy"] = round(t["writer_busy"] / wall, 3)
    shares["main_thread_cpu"] = round(t["main_thread_cpu"] / wall, 3)
    return shares


def bench_stage(args, tmp: Path) -> None:
    from seqvpr.embed.embed import FrameEmbedder, default_workers, normalise, read_frame

    workers = args.workers[0] if args.workers else default_workers()
    for fmt in args.formats:
        paths = synthetic_frames(tmp / f"frames-{fmt}", args.frames, fmt, args.processes)
        size = statistics.mean(p.stat().st_size for p in paths) / 1e3
        with ThreadPoolExecutor(args.processes) as pool:  # OpenCV decodes without the GIL
            decoded = torch.from_numpy(np.stack(list(pool.map(read_frame, paths))))
        for precision in args.precisions:
            embedder = FrameEmbedder(device=args.device, precision=precision)
            x = normalise(decoded.to(embedder.device))
            embedder.embed_files(paths[:args.batch * 2], _fresh(tmp / "warm"), args.batch, workers=workers)
            bare = [bare_frames_per_second(embedder, x, args.batch)]
            for cache_root in args.cache_roots:
                for _ in range(args.rounds):  # stage, then bare again: each stage run between two bare ones
                    cache = _fresh(Path(cache_root) / "bench-cache")
                    _sync(embedder.device)
                    _, stats = embedder.embed_files(paths, cache, args.batch, workers=workers)
                    shutil.rmtree(cache)
                    bare.append(bare_frames_per_second(embedder, x, args.batch))
                    reference = statistics.mean(bare[-2:])
                    _record(args, {"mode": "stage", "device": str(embedder.device), "precision": embedder.precision,
                                   "format": fmt, "frame_kb": round(size), "frames": len(paths), "batch": args.batch,
                                   "workers": workers, "cache": cache_root, "bare_fps": round(reference, 1),
                                   "stage_fps": round(stats.frames_per_second, 1),
                                   "ratio": round(stats.frames_per_second / reference, 3),
                                   "time_shares": time_shares(stats)})
            del x, embedder
            if args.device != "cpu":
                torch.cuda.empty_cache()
        del decoded


def bench_null(args, tmp: Path) -> None:
    """Rounds alternate the worker counts (and cache roots); one row per run, then per (format,
    workers, cache) the medians over the rounds. CPU per frame: the main process (every thread:
    hashing pool, torch, writers; getrusage) and the decoding workers (their own process_time, as
    each reports it with its batches); per_core_fps = 1000 / (their sum): the frames/s one core
    would give if it did all of it."""
    from seqvpr.embed.embed import FrameEmbedder

    embedder = FrameEmbedder(device=args.device, null_model=True)
    for fmt in args.formats:
        paths = synthetic_frames(tmp / f"frames-{fmt}", args.frames, fmt, args.processes)
        # warm-up with the most workers: the batch slots it allocates (and pins on CUDA) serve every count
        embedder.embed_files(paths[:args.batch * 2], _fresh(tmp / "warm"), args.batch, workers=max(args.workers))
        runs = {}
        for _ in range(args.rounds):
            for workers in args.workers:
                for cache_root in args.cache_roots:
                    cache = _fresh(Path(cache_root) / "bench-cache")
                    _, stats = embedder.embed_files(paths, cache, args.batch, workers=workers)
                    shutil.rmtree(cache)
                    ms = {k: 1e3 * stats.timings[k] / len(paths) for k in ("process_cpu", "hash_cpu", "workers_cpu")}
                    row = {"fps": stats.frames_per_second, "main_process_cpu_ms_per_frame": ms["process_cpu"],
                           "hash_cpu_ms_per_frame": ms["hash_cpu"], "workers_cpu_ms_per_frame": ms["workers_cpu"],
                           "per_core_fps": 1e3 / (ms["process_cpu"] + ms["workers_cpu"])}
                    shares = time_shares(stats)
                    runs.setdefault((workers, cache_root), []).append((row, shares))
                    _record(args, {"mode": "null-run", "device": str(embedder.device), "format": fmt, "frames": len(paths),
                                   "batch": args.batch, "workers": workers, "cache": cache_root,
                                   **{k: round(v, 3) for k, v in row.items()}, "time_shares": shares})
        for (workers, cache_root), rows in runs.items():
            _record(args, {"mode": "null", "device": str(embedder.device), "format": fmt, "frames": len(paths),
                           "batch": args.batch, "workers": workers, "cache": cache_root, "rounds": len(rows),
                           **{k: round(statistics.median(r[k] for r, _ in rows), 3) for k in rows[0][0]},
                           "time_shares": {k: round(statistics.median(t[k] for _, t in rows), 3) for k in rows[0][1]}})


def bench_decode(args, tmp: Path) -> None:
    """One core, frames/s to get RGB uint8 from each lossless format's bytes in memory."""
    import cv2
    import pyarrow as pa

    cv2.setNumThreads(1)
    from seqvpr.datasets.frames import load_frame

    paths = synthetic_frames(tmp / "frames-png", args.frames, "png", args.processes)
    frames = [load_frame(p) for p in paths]
    stored = synthetic_frames(tmp / "frames-tif", args.frames, "tif", args.processes)
    zstd = pa.Codec("zstd", compression_level=1)

    def sub_filter(f):  # PNG's Sub filter: each byte minus its left neighbour's
        return np.diff(f, axis=1, prepend=np.zeros((f.shape[0], 1, 3), np.uint8))

    image = lambda b: cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    formats = {
        "tif (save_frame, uncompressed)": ([p.read_bytes() for p in stored], image),
        "png (level 1, the store before)": ([p.read_bytes() for p in paths], image),
        "npy (uncompressed)": ([f.tobytes() for f in frames], lambda b: np.frombuffer(b, np.uint8).reshape(384, 384, 3).copy()),
        "zstd-1 of raw": ([zstd.compress(f.tobytes(), asbytes=True) for f in frames],
                          lambda b: np.frombuffer(zstd.decompress(b, 442368, asbytes=True), np.uint8).reshape(384, 384, 3)),
        "zstd-1 of Sub-filtered": ([zstd.compress(sub_filter(f).tobytes(), asbytes=True) for f in frames],
                                   lambda b: np.cumsum(np.frombuffer(zstd.decompress(b, 442368, asbytes=True), np.uint8)
                                                       .reshape(384, 384, 3), axis=1, dtype=np.uint8)),
    }
    for name, (blobs, decode) in formats.items():
        assert np.array_equal(decode(blobs[0]), frames[0]), name
        start = time.process_time()
        for blob in blobs:
            decode(blob)
        _record(args, {"mode": "decode", "format": name, "kb": round(statistics.mean(map(len, blobs)) / 1e3),
                       "fps_one_core": round(len(blobs) / (time.process_time() - start), 1)})


def bench_shards(args, tmp: Path) -> None:
    from seqvpr.shards import Sample, write_split_shards

    rng = np.random.default_rng(1)
    data = [Sample(f"frame-{i:06d}", rng.normal(size=(576, 384)).astype(np.float16),
                   rng.normal(size=384).astype(np.float32), {"role": "db", "order": i}) for i in range(args.samples)]
    ours, plain = [], []
    for _ in range(args.rounds):  # alternate, compare medians: the page cache and a shared disk are noisy
        start = time.perf_counter()
        manifest = write_split_shards(tmp / "ours", "bench", "train", data, max_count=64)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        with tarfile.open(tmp / "plain.tar", "w") as tar:  # the same member bytes, nothing else
            for sample in data:
                for name, payload in (("tokens.npy", sample.tokens), ("desc.npy", sample.descriptor), ("json", sample.row)):
                    buf = io.BytesIO()
                    if name == "json":
                        buf.write(json.dumps(payload, sort_keys=True).encode())
                    else:
                        np.save(buf, payload)
                    info = tarfile.TarInfo(f"{sample.key}.{name}")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)
        plain.append(time.perf_counter() - start)
    ours_s, plain_s = statistics.median(ours), statistics.median(plain)
    paired = sorted(p / o for p, o in zip(plain, ours))  # each round's two runs back to back
    mb = sum(s["bytes"] for s in manifest["shards"]) / 2**20
    _record(args, {"mode": "shards", "mb": round(mb), "ours_mb_s": round(mb / ours_s), "plain_mb_s": round(mb / plain_s),
                   "rounds": args.rounds, "ratio_median": round(statistics.median(paired), 2),
                   "ratio_range": [round(paired[0], 2), round(paired[-1], 2)]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["stage", "null", "decode", "shards"])
    parser.add_argument("--frames", type=int, default=None, help="default: 32 (stage), 256 (null), 128 (decode)")
    parser.add_argument("--batch", type=int, default=None, help="default: 8 (stage), 32 (null)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precisions", default="auto", help="comma-separated of auto, fp32, bf16")
    parser.add_argument("--workers", default=None, help="comma-separated decoding worker counts (stage: the first)")
    parser.add_argument("--formats", default=None, help="comma-separated of tif, png, npy (default: tif for stage, all for null)")
    parser.add_argument("--cache-roots", default=None, help="comma-separated folders for the cache (default: a temporary one)")
    parser.add_argument("--processes", type=int, default=os.cpu_count(), help="processes that write the frames")
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=None, help="default: 7 (shards), 3 (null), 1 (stage)")
    parser.add_argument("--jsonl", default=None)
    args = parser.parse_args()
    args.frames = args.frames or {"stage": 32, "null": 256}.get(args.mode, 128)
    args.batch = args.batch or {"stage": 8}.get(args.mode, 32)
    args.rounds = args.rounds or {"shards": 7, "null": 3}.get(args.mode, 1)
    args.precisions = args.precisions.split(",")
    args.workers = [int(w) for w in args.workers.split(",")] if args.workers else ([1, 2] if args.mode == "null" else None)
    args.formats = args.formats.split(",") if args.formats else (["tif", "png", "npy"] if args.mode == "null" else ["tif"])
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
          f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())}, torch {torch.__version__}, numpy {np.__version__}, "
          f"device {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else ""), flush=True)
    # the frame writers and the embedding's decoding workers share one forkserver: load both there
    multiprocessing.set_forkserver_preload(["__main__", "seqvpr.embed.embed"])
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        args.cache_roots = args.cache_roots.split(",") if args.cache_roots else [tmp]
        {"stage": bench_stage, "null": bench_null, "decode": bench_decode, "shards": bench_shards}[args.mode](args, Path(tmp))


if __name__ == "__main__":
    main()

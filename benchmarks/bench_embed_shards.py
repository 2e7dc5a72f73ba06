"""Embedding and shard writing vs their bare equivalents, side by side on the same data.

    .venv/bin/python benchmarks/bench_embed_shards.py [--frames 32] [--batch 8] [--rounds 7] [--shards-only]

Embedding: our FrameEmbedder.embed_files (hashing, PNG decode, cache writes) vs a bare loop of
`model(x)` on the same pre-decoded batches. Shards: write_split_shards (npy encoding, fixed
headers, hashing, manifest, atomic folder) vs writing the same member bytes with plain `tarfile`.
"""
import argparse
import io
import json
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from seqvpr.datasets.frames import load_frame, save_frame
from seqvpr.embed.embed import FrameEmbedder, to_batch
from seqvpr.shards import Sample, write_split_shards


def bench_embedding(tmp: Path, frames: int, batch: int) -> None:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(frames):
        paths.append(tmp / f"{i}.png")
        save_frame(rng.integers(0, 255, (384, 384, 3), dtype=np.uint8), paths[-1])
    embedder = FrameEmbedder(device="auto")
    batches = [to_batch([load_frame(p) for p in paths[i:i + batch]], embedder.device) for i in range(0, frames, batch)]
    with torch.inference_mode():
        embedder.model(batches[0])  # warm-up
        start = time.perf_counter()
        for x in batches:
            embedder.model(x)
        bare = frames / (time.perf_counter() - start)
    _, stats = embedder.embed_files(paths, tmp / "cache", batch_size=batch)
    print(f"embedding on {embedder.device}: bare model(x) {bare:.2f} frames/s, ours {stats.frames_per_second:.2f} frames/s, "
          f"ratio {stats.frames_per_second / bare:.2f}")


def bench_shards(tmp: Path, samples: int, rounds: int) -> None:
    rng = np.random.default_rng(1)
    data = [Sample(f"frame-{i:06d}", rng.normal(size=(576, 384)).astype(np.float16),
                   rng.normal(size=384).astype(np.float32), {"role": "db", "order": i}) for i in range(samples)]
    ours, plain = [], []
    for _ in range(rounds):  # alternate, compare medians: the page cache and a shared disk are noisy
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
    print(f"shards: ours {mb / ours_s:.0f} MB/s, plain tarfile {mb / plain_s:.0f} MB/s (medians of {rounds} rounds, "
          f"{mb:.0f} MB); ratio per round: median {statistics.median(paired):.2f}, range {paired[0]:.2f}-{paired[-1]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--shards-only", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.shards_only:
            bench_embedding(Path(tmp), args.frames, args.batch)
        bench_shards(Path(tmp), args.samples, args.rounds)


if __name__ == "__main__":
    main()

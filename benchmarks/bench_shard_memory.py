"""Peak memory of training and evaluation read from the shards (issue 22 item 3), at two split sizes.

Writes, through `seqvpr.shards.write_split_shards`, a split of N frames (N/2 database, N/2 queries,
runs of 500 frames, positives within 1 place, 1000 negative candidates a query) whose token maps
are seeded random float16 of the real shape (576, 384): no CCT forward, the data path alone is
measured. Then, each in a fresh process (peak RSS from getrusage), trains SeqVLAD (the cheapest
CPU head with the 24,576-D NetVLAD descriptors of Adapt-STformer: the per-epoch descriptor cache
of every database sequence is as large as Adapt-STformer's) for one epoch of 12 queries with
validation on a fixed 500-frame split, and evaluates Recall@K on the N-frame split, at sequence
length L (`--length`, default 5; the descriptor caches do not depend on it, the work does).

    PYTHONPATH=$PWD python benchmarks/bench_shard_memory.py --sizes 2000 10000 --length 5 --scratch /tmp/bench_shard_memory
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RUN = 500


def write_split(folder: Path, frames: int, seed: int = 0) -> None:
    from seqvpr.shards import Sample, encoder_record, write_split_shards

    if (folder / "manifest.json").exists():
        return
    half = frames // 2
    rng = np.random.default_rng(seed)

    def samples():
        for role in ("db", "query"):
            for order in range(half):
                start = order - order % RUN
                positives = [p for p in (order - 1, order, order + 1) if 0 <= p < half] if role == "query" else []
                row = {"frame_id": f"{role}_{order:06d}", "role": role, "order": order, "seq_start": start,
                       "seq_end": min(start + RUN, half), "positives": positives, "nontrivial_positives": positives}
                tokens = rng.standard_normal((576, 384), dtype=np.float32).astype(np.float16)
                yield Sample(row["frame_id"], tokens, tokens[0].astype(np.float32), row)

    negatives = np.stack([(np.arange(1000) * 7 + q) % half for q in range(half)]).astype(np.int64)
    provenance = {"encoder": encoder_record("random-tokens-bench", 8, None), "split_settings": {}, "code_version": "bench"}
    write_split_shards(folder, "bench", "train", samples(), total=frames, min_shards=8, provenance=provenance,
                       negatives=negatives)


def stage(name: str, split: Path, val: Path, length: int) -> dict:
    """One stage in this process; returns its seconds and peak RSS."""
    import torch

    from seqvpr.evaluate import evaluate_model
    from seqvpr.train import TrainConfig, build_sequence_model, load_split_data, train

    torch.set_num_threads(2)
    start = time.perf_counter()
    data = load_split_data(split)
    if name == "train":
        cfg = TrainConfig(model="seqvlad", seq_len=length, epochs=1, queries_per_epoch=12)
        result = train(cfg, data, load_split_data(val), log=lambda *_: None)
        summary = {"loss": result.history[0]["loss"]}
    else:
        model = build_sequence_model("seqvlad", length).eval()
        summary = {"recall": evaluate_model(model, data, length)["recall"]}
    return {**summary, "seconds": time.perf_counter() - start,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/bench_shard_memory"))
    parser.add_argument("--length", type=int, default=5, help="sequence length L (the memory held does not depend on it)")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--split", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    val = args.scratch / "val-500"
    if args.stage:
        print(json.dumps(stage(args.stage, args.split, val, args.length)))
        return
    write_split(val, 500, seed=1)
    results = {}
    for frames in args.sizes:
        folder = args.scratch / f"split-{frames}"
        write_split(folder, frames)
        for name in ("train", "evaluate"):
            out = subprocess.run([sys.executable, __file__, "--stage", name, "--split", str(folder),
                                  "--scratch", str(args.scratch), "--length", str(args.length)], check=True, capture_output=True, text=True)
            results[(frames, name)] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{frames:>6} frames {name:<8} {results[(frames, name)]['seconds']:7.1f} s  "
                  f"peak RSS {results[(frames, name)]['peak_rss_mb']:7.0f} MB", flush=True)
    small, large = min(args.sizes), max(args.sizes)
    for name in ("train", "evaluate"):
        ratio = results[(large, name)]["peak_rss_mb"] / results[(small, name)]["peak_rss_mb"]
        print(f"{name}: peak RSS {large} / {small} frames = {ratio:.2f}")


if __name__ == "__main__":
    main()

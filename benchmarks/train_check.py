"""A short training on the synthetic Nordland world with the authors' cut, through the plain
seqvpr functions the pipeline's assets call (no Dagster, no shards): synthetic raw data ->
normalised frames -> split and pairs -> embeddings (FrameEmbedder) -> SplitData -> train().

    python3 benchmarks/train_check.py [--device cuda] [--freeze-te 1] [--epochs 2] [--frames 50]

Prints the time of each stage and the training history; exits non-zero if a stage fails.
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def _timed(label: str, times: dict):
    class _Clock:
        def __enter__(self):
            self.start = time.perf_counter()

        def __exit__(self, *exc):
            times[label] = time.perf_counter() - self.start
            print(f"{label}: {times[label]:.1f} s", flush=True)

    return _Clock()


def split_data(table, negatives: np.ndarray, split: str, cache: Path, digests: dict):
    """The split's SplitData as seqvpr.train.load_split_data builds it from the shards."""
    from seqvpr.embed.chunks import load_tokens
    from seqvpr.splits import role_rows
    from seqvpr.train import SplitData

    db, q = role_rows(table, split, "db"), role_rows(table, split, "query")

    def tokens(rows):
        return np.stack([load_tokens(cache, digests[p]) for p in rows["image_path"]])

    def bounds(rows):
        return rows[["seq_start", "seq_end"]].to_numpy(dtype=np.int64).reshape(-1, 2)

    return SplitData(db_tokens=tokens(db), q_tokens=tokens(q), db_bounds=bounds(db), q_bounds=bounds(q),
                     positives=[np.asarray(p, dtype=np.int64) for p in q["positives"]],
                     nontrivial_positives=[np.asarray(p, dtype=np.int64) for p in q["nontrivial_positives"]],
                     negatives=negatives, frame_ids=list(db["frame_id"]) + list(q["frame_id"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--freeze-te", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--frames", type=int, default=50, help="synthetic frames per Nordland val/test stretch and season (the training stretch gets 4x, at most 200)")
    parser.add_argument("--queries-per-epoch", type=int, default=0, help="0: every training query")
    parser.add_argument("--batch", type=int, default=64, help="embedding batch")
    args = parser.parse_args()

    from seqvpr.datasets.catalog import NORDLAND_SEASONS
    from seqvpr.datasets.frames import merge_tables, write_table
    from seqvpr.datasets.nordland import normalise_partition
    from seqvpr.embed.cct import build_cct_tail
    from seqvpr.embed.embed import FrameEmbedder
    from seqvpr.benchmarks import BENCHMARKS
    from seqvpr.splits import build_split
    from seqvpr.synthetic import generate
    from seqvpr.train import TrainConfig, train

    times = {}
    with tempfile.TemporaryDirectory(prefix="train-check-") as tmp:
        tmp = Path(tmp)
        with _timed("synthetic nordland", times):
            generate("nordland", tmp / "raw" / "nordland", seed=0, frames=args.frames)
        with _timed("normalise frames", times):
            tables = []
            for season in NORDLAND_SEASONS:
                result = normalise_partition(tmp / "raw" / "nordland", season, tmp / "data" / "frames" / season, tmp / "data")
                write_table(result.table, tmp / "tables" / f"{season}.parquet")
                tables.append(tmp / "tables" / f"{season}.parquet")
            frames = merge_tables(tables)
        with _timed("split and pairs", times):
            split = build_split(frames, BENCHMARKS["nordland"])
        used = sorted(set(split.table.column("image_path").to_pylist()))
        embedder = FrameEmbedder(device=args.device, freeze_te=args.freeze_te)
        with _timed(f"embed {len(used)} frames ({embedder.device}, {embedder.precision}, cut after {embedder.cut} blocks)", times):
            cache = tmp / "embeddings" / embedder.model_id
            digests, stats = embedder.embed_files([tmp / "data" / p for p in used], cache, batch_size=args.batch)
        print(f"embedding: {stats.frames_per_second:.0f} frames/s, {stats.workers} workers, {stats.chunks} chunk(s)")
        by_path = dict(zip(used, digests))
        splits = sorted(split.pairs)
        val = "val" if "val" in splits else "test"
        train_data = split_data(split.table, split.pairs["train"].negatives, "train", cache, by_path)
        val_data = split_data(split.table, split.pairs[val].negatives, val, cache, by_path)
        print(f"train: {len(train_data.db_tokens)} db / {len(train_data.q_tokens)} queries; {val}: "
              f"{len(val_data.db_tokens)} db / {len(val_data.q_tokens)} queries; tokens {train_data.db_tokens.shape[1:]}")
        tail = build_cct_tail(args.freeze_te, embedder.model.num_layers)
        cfg = TrainConfig(epochs=args.epochs, device=args.device, queries_per_epoch=args.queries_per_epoch)
        with _timed(f"train {cfg.model}, {cfg.epochs} epochs, freeze_te {args.freeze_te}", times):
            result = train(cfg, train_data, val_data, tail=tail, log=lambda line: print(line, flush=True))
    print(f"untrained val R@5 {result.initial_recall[5]:.3f}; best {result.best_recall5:.3f} at epoch {result.best_epoch}; "
          f"history {[(h['epoch'], round(h['loss'], 4), round(h['recall'][5], 3)) for h in result.history]}")
    print("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))


if __name__ == "__main__":
    main()

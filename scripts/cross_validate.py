"""Choose a training setting on the training split alone: route-fold cross-validation.

    .venv/bin/python scripts/cross_validate.py [--home HOME] --benchmark oxford_easy --model opticornet \\
        margin=0.1,0.5,1.0,2.0 epochs=10,20 [--seeds 0 1 2] [--folds 2] [--gpu]

Reads only the benchmark's training shards (`seqvpr run --select <benchmark>_shards` writes them),
cuts them into route folds (`seqvpr.train.folds.route_folds`), and for every combination of the
settings given (any `Recipe` field: `name=v1,v2,...`, values read as JSON) trains the model's CPU
budget (`--gpu`: the authors' recipe) on each fold and validates on every other fold, once per seed.
Prints, per setting, the mean Recall@5 and Recall@1 of the kept epochs and the per-run values, best
first (mean R@5, then mean R@1); the test split is never read.
"""
import argparse
import itertools
import json
import sys
import time

import torch

from seqvpr.layout import Layout
from seqvpr.train import TrainConfig, load_split_data, train
from seqvpr.train.folds import route_folds


def parse_grid(items: list[str]) -> dict[str, list]:
    """["margin=0.1,1.0", "epochs=20"] -> {"margin": [0.1, 1.0], "epochs": [20]}; ValueError otherwise."""
    grid = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not name or not values:
            raise ValueError(f"a setting is name=v1,v2,...; got {item!r}")
        grid[name] = [json.loads(v) for v in values.split(",")]
    return grid


def kept_recall(result) -> tuple[float, float]:
    """(R@5, R@1) of the weights the run kept (its start where no epoch beat it)."""
    recall = result.initial_recall if result.best_epoch == 0 else result.history[result.best_epoch - 1]["recall"]
    return recall[5], recall[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", help="the pipeline home (default: $SEQVPR_HOME, else the current folder)")
    parser.add_argument("--benchmark", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--gpu", action="store_true", help="the authors' recipe in place of the CPU budget")
    parser.add_argument("settings", nargs="*", help="name=v1,v2,... (Recipe fields)")
    args = parser.parse_args(argv)
    try:
        grid = parse_grid(args.settings)
    except ValueError as error:
        parser.error(str(error))
    shards = Layout.from_home(args.home).shards(args.benchmark, "train")
    if not shards.exists():
        print(f"{shards}: no training shards; run `seqvpr run --select {args.benchmark}_shards` on that home",
              file=sys.stderr)
        return 2
    try:
        folds = route_folds(load_split_data(shards), args.folds)
    except ValueError as error:
        print(f"{shards}: {error}", file=sys.stderr)
        return 2
    print(f"{args.benchmark} training split in {len(folds)} route folds: "
          + ", ".join(f"{len(f.db_bounds)} db / {len(f.q_bounds)} queries" for f in folds), flush=True)
    device = "cuda" if args.gpu else "cpu"
    if not args.gpu:
        torch.set_num_threads(1)
    rows = []
    for values in itertools.product(*grid.values()):
        setting = dict(zip(grid, values))
        runs = []
        for seed, (k, j) in itertools.product(args.seeds, itertools.permutations(range(len(folds)), 2)):
            cfg = TrainConfig.for_model(args.model, args.gpu, device=device, seed=seed, **setting)
            start = time.perf_counter()
            result = train(cfg, folds[k], folds[j], log=lambda *a: None)
            recall5, recall1 = kept_recall(result)
            runs.append((seed, k + 1, j + 1, result.best_epoch, recall5, recall1))
            print(f"{setting} seed {seed}, fold {k + 1} -> {j + 1}: epoch {result.best_epoch}, "
                  f"R@5 {recall5:.3f}, R@1 {recall1:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
        rows.append((sum(r[4] for r in runs) / len(runs), sum(r[5] for r in runs) / len(runs), setting, runs))
    rows.sort(key=lambda row: (-row[0], -row[1]))
    print(f"\n{args.model} on {args.benchmark}'s training folds, best first (seeds {args.seeds}):")
    print("| setting | mean R@5 | mean R@1 | runs (seed, fold -> fold: epoch, R@5, R@1) |\n|---|---|---|---|")
    for recall5, recall1, setting, runs in rows:
        detail = "; ".join(f"{s}, {k}->{j}: {e}, {r5:.3f}, {r1:.3f}" for s, k, j, e, r5, r1 in runs)
        print(f"| {setting} | {recall5:.3f} | {recall1:.3f} | {detail} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

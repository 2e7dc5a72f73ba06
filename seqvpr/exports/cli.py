"""`seqvpr export`: write the drop-in exports of materialised benchmarks without Dagster.

    seqvpr export [--home H] [--format seqnet adapt-stformer gsv] [--benchmark nordland ...]
                  [--raw-inputs] [--checkpoint P --num-layers 8 --seed 0]

The encoder options must be those the shards were built with (the FrameEncoder resource): they
name seqNet's descType.
"""
from __future__ import annotations

import argparse
import json

from seqvpr.errors import DataError
from seqvpr.exports import FORMATS, export, supported
from seqvpr.layout import Layout
from seqvpr.splits import BENCHMARKS


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seqvpr export", description="Write seqNet / Adapt-STformer / VPR-datasets exports.")
    p.add_argument("--home", default=None, help="pipeline home (default: $SEQVPR_HOME or the current folder)")
    p.add_argument("--format", nargs="+", choices=sorted(FORMATS), default=sorted(FORMATS), dest="formats")
    p.add_argument("--benchmark", nargs="+", choices=sorted(BENCHMARKS), default=None, dest="benchmarks",
                   help="default: every benchmark whose split table exists")
    p.add_argument("--raw-inputs", action="store_true",
                   help="also write Adapt-STformer's raw_384 input arrays (large: 1.7 MB per frame)")
    p.add_argument("--checkpoint", default="", help="CCT384 checkpoint the embeddings used (empty: seeded random)")
    p.add_argument("--num-layers", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    layout = Layout.from_home(args.home)
    benchmarks = args.benchmarks or [b for b in BENCHMARKS if layout.split_table(b).exists()]
    model_id = None
    if "seqnet" in args.formats:
        from seqvpr.embed.cct import weights_identity
        from seqvpr.embed.embed import model_id as encoder_model_id

        model_id = encoder_model_id(weights_identity(args.checkpoint or None, args.seed), args.num_layers)
    status = 0
    for benchmark in benchmarks:
        for consumer in args.formats:
            if not supported(consumer, benchmark):
                continue
            try:
                folder, info = export(layout, consumer, benchmark, model_id, args.raw_inputs)
            except DataError as error:
                print(f"{consumer}/{benchmark}: {error}")
                status = 1
                continue
            print(f"{consumer}/{benchmark}: {folder}")
            print(json.dumps(info["commands"], indent=1))
    return status

"""`seqvpr export`: write the drop-in exports of materialised benchmarks without Dagster.

    seqvpr export [--home H] [--format seqnet adapt-stformer gsv] [--benchmark nordland ...] [--raw-inputs]

It obeys the rules of `seqvpr run`: it holds the home's run lock (seqvpr.housekeeping.home_lock)
for its whole duration, waiting with a message while another run or export holds it, and sweeps
only the temporaries of dead runs; it replaces only export folders it writes. Every combination
asked for is either written or named with the reason it was not; the exit status is 0 only when
every export asked for (or, without --format/--benchmark, at least one) was written and none failed.

The encoder that names seqNet's descType is read from the shards' manifests, never from options:
--checkpoint/--seed/--num-layers (which earlier versions took) are refused with the reason, since
they could only disagree with the shards.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from seqvpr.benchmarks import BENCHMARKS
from seqvpr.errors import DataError
from seqvpr.exports import FORMATS, export, supported
from seqvpr.housekeeping import home_lock, sweep_temporaries
from seqvpr.layout import Layout


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seqvpr export", description="Write seqNet / Adapt-STformer / VPR-datasets exports.",
                                epilog="The encoder identity (seqNet's descType) is read from the shards' manifests.")
    p.add_argument("--home", default=None, help="pipeline home (default: $SEQVPR_HOME or the current folder)")
    p.add_argument("--format", nargs="+", choices=sorted(FORMATS), default=None, dest="formats",
                   help="default: every format")
    p.add_argument("--benchmark", nargs="+", choices=sorted(BENCHMARKS), default=None, dest="benchmarks",
                   help="default: every benchmark whose split table exists")
    p.add_argument("--raw-inputs", action="store_true",
                   help="also write Adapt-STformer's raw_384 input arrays (large: 1.7 MB per frame)")
    for gone in ENCODER_OPTIONS:  # earlier versions named the descriptors from these: refused with the reason
        p.add_argument(gone, dest=gone.strip("-").replace("-", "_"), default=None, help=argparse.SUPPRESS)
    return p


ENCODER_OPTIONS = ("--checkpoint", "--num-layers", "--seed")


def plan(layout: Layout, formats: list[str] | None, benchmarks: list[str] | None) -> tuple[list[tuple[str, str]], list[str]]:
    """(format, benchmark) pairs to write and a message for each pair asked for that cannot be.
    Pairs a consumer cannot express are named only when both were asked for explicitly."""
    todo, refused = [], []
    for benchmark in benchmarks or BENCHMARKS:
        consumers = [c for c in formats or sorted(FORMATS) if supported(c, benchmark)]
        if formats and benchmarks:
            for consumer in sorted(set(formats) - set(consumers)):
                able = [b for b in BENCHMARKS if supported(consumer, b)]
                refused.append(f"{consumer}/{benchmark}: {consumer} cannot express benchmark {benchmark} (it can: {', '.join(able)})")
        if not layout.split_table(benchmark).exists():
            if benchmarks and consumers:
                refused.append(f"{benchmark}: no split table {layout.split_table(benchmark)}: "
                               f"materialise it first (seqvpr run --select {benchmark}_split)")
            continue
        todo += [(consumer, benchmark) for consumer in consumers]
    return todo, refused


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    given = [o for o in ENCODER_OPTIONS if getattr(args, o.strip("-").replace("-", "_")) is not None]
    if given:
        p.error(f"{'/'.join(given)}: the encoder is read from the shards' manifests (manifest['encoder']['model_id']), "
                "so the descriptors are always named after the encoder that made them; to export another encoder's "
                "descriptors, rebuild the shards with it (seqvpr run --config with resources: encoder)")
    home = Path(args.home or Layout.from_home().data_root.parent)
    if not home.is_dir():
        print(f"{home}: {'not a folder' if home.exists() else 'no such folder'}: give the home of a `seqvpr run` with --home",
              file=sys.stderr)
        return 2
    layout = Layout.from_home(home)
    todo, refused = plan(layout, args.formats, args.benchmarks)
    for message in refused:
        print(f"not exported: {message}", file=sys.stderr)
    if not todo:
        print(f"nothing exported: {', '.join(args.formats or sorted(FORMATS))} x {', '.join(args.benchmarks or BENCHMARKS)} "
              f"gives no benchmark that has a split table under {layout.split_table('x').parent} and a format that can "
              "express it (materialise the splits with seqvpr run first)", file=sys.stderr)
        return 1
    status = 1 if refused else 0
    try:
        with home_lock(home, on_wait=lambda message: print(message, file=sys.stderr, flush=True)):
            sweep_temporaries(home)
            for consumer, benchmark in todo:
                status = max(status, _export_one(layout, consumer, benchmark, args.raw_inputs))
    except OSError as error:  # the lock file or a sweep in a home that cannot be written
        print(f"nothing more exported: {error}", file=sys.stderr)
        return 1
    return status


def _export_one(layout: Layout, consumer: str, benchmark: str, raw_inputs: bool) -> int:
    try:
        folder, info = export(layout, consumer, benchmark, raw_inputs)
    except (DataError, OSError) as error:
        print(f"not exported: {consumer}/{benchmark}: {error}", file=sys.stderr)
        return 1
    print(f"{consumer}/{benchmark}: {folder}")
    for key in ("cannot_load_because", "to_make_it_loadable", "path_warning", "sparse_note"):
        if info.get(key):
            print(f"  {key.replace('_', ' ')}: {info[key]}")
    print(json.dumps(info["commands"], indent=1))
    return 0

"""`python -m seqvpr.synthetic` (or `seqvpr synth`): write synthetic mini-worlds to a folder.

Each world goes to ``<out>/<dataset>``, its ground truth to ``<truth>/<dataset>`` (default
``<out>/truth``): nothing is written outside the folders given. A folder this command (or the
pipeline's raw stage) did not write, or one changed since, is never replaced: the command stops
naming it, with exit status 2."""
import argparse
import json
import sys
from pathlib import Path

from seqvpr.layout import DATASETS
from seqvpr.synthetic import write_world


def _number_or_text(value: str):
    """``12`` -> 12, ``0.5`` -> 0.5, anything else (``summer,winter``, ``left,centre``) as text."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _scale(items: list[str]) -> dict:
    scale = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--scale expects key=value, got {item!r}")
        scale[key] = _number_or_text(value)
    return scale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqvpr.synthetic", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("data/raw"), help="one sub-folder per dataset is written here")
    parser.add_argument("--truth", type=Path, default=None,
                        help="where the ground truth goes, one sub-folder per dataset (default: <out>/truth)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--scale", nargs="*", default=[], help="generator parameters, e.g. frames_per_traversal=100, seasons=summer,winter, cameras=left,centre")
    args = parser.parse_args(argv)
    try:
        for dataset in args.datasets:
            summary = write_world(dataset, args.out, args.truth or args.out / "truth", seed=args.seed, **_scale(args.scale))
            if summary is None:
                print(f"{dataset}: already generated at {args.out / dataset} with this seed and scale")
            else:
                print(json.dumps({dataset: summary}, default=str))
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

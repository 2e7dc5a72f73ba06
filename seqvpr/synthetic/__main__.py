"""`python -m seqvpr.synthetic` (or `seqvpr synth`): write synthetic mini-worlds to a folder."""
import argparse
import json
import sys
from pathlib import Path

from seqvpr.layout import DATASETS
from seqvpr.synthetic import generate


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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--scale", nargs="*", default=[], help="generator parameters, e.g. frames_per_traversal=100, seasons=summer,winter, cameras=left,centre")
    args = parser.parse_args(argv)
    try:
        for dataset in args.datasets:
            summary = generate(dataset, args.out / dataset, seed=args.seed, truth_root=args.out.parent / "truth" / dataset, **_scale(args.scale))
            print(json.dumps({dataset: summary}, default=str))
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""RobotCar normalisation (ours) vs a bare OpenCV loop on the same frames, side by side.

    .venv/bin/python benchmarks/bench_preprocess.py [--frames 150] [--workers 2]

Bare loop per frame: cv2.imread + cvtColor (Bayer) + remap (LUT) + resize + imwrite. Ours:
`seqvpr.datasets.robotcar.normalise_partition` (the same plus INS interpolation, validation,
atomic writes and the frame table). Workers: the run split in chunks normalised in parallel
processes, as Dagster runs partitions.
"""
import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2

from seqvpr.camera_model import CENTRE_MODEL, load_camera_model
from seqvpr.datasets.robotcar import normalise_partition
from seqvpr.synthetic import generate

RUN = "2015-03-17-11-08-44"


def bare_loop(raw: Path, out: Path, size: int) -> int:
    paths = sorted((raw / RUN / "stereo" / "centre").glob("*.png"))
    first = cv2.imread(str(paths[0]), cv2.IMREAD_UNCHANGED)
    model = load_camera_model(raw / "models", CENTRE_MODEL, *first.shape)
    out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        rgb = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BayerGR2RGB)
        rgb = cv2.remap(rgb, model.map_x, model.map_y, cv2.INTER_LINEAR)
        small = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(out / path.name), cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return len(paths)


def ours(raw: Path, out: Path, size: int) -> int:
    return normalise_partition(raw, RUN, out / "frames", out, size=size).table.num_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=960)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = tmp / "raw"
        generate("robotcar", raw, seed=0, truth_root=tmp / "truth", frames_per_traversal=args.frames,
                 width=args.width, height=args.height)
        results = {}
        for name, fn in (("bare OpenCV loop", bare_loop), ("ours", ours), ("bare OpenCV loop (again)", bare_loop)):
            start = time.perf_counter()
            n = fn(raw, tmp / name.replace(" ", "_"), args.size)
            results[name] = n / (time.perf_counter() - start)
            print(f"{name:28s} {results[name]:7.1f} frames/s ({n} frames {args.width}x{args.height} -> {args.size})")
        bare = (results["bare OpenCV loop"] + results["bare OpenCV loop (again)"]) / 2
        print(f"ratio ours / bare loop (one core): {results['ours'] / bare:.2f}")
        start = time.perf_counter()
        with ProcessPoolExecutor(2) as pool:
            list(pool.map(ours, [raw, raw], [tmp / "w0", tmp / "w1"], [args.size] * 2))
        two = (2 * args.frames) / (time.perf_counter() - start)
        print(f"ours with 2 worker processes: {two:.1f} frames/s, speed-up {two / results['ours']:.2f}x")


if __name__ == "__main__":
    main()

"""Time and memory of the pixel-free stages (frame table -> split + pairs + seqBounds -> struct
files) on synthetic worlds of 10k, 25k and 50k frames, built without images.

    .venv/bin/python benchmarks/bench_load.py [--sizes 10000 25000 50000] [--benchmark oxford_easy]

World. The benchmark's traversals (RobotCar runs / Nordland seasons) share one long route: a
smooth random loop (2-8 km of road per traversal at 10k-50k frames) with frames every ~0.8 m,
each traversal with its own GPS noise, so the 2 m frame separation, route sections and the 10 m
KD-tree pairs all do real work. Nordland uses frame numbers as places (1-frame rule).

Measurement. Every (size, stage) runs in a fresh subprocess that first loads the stage's input
from the previous stage's files, then resets the kernel's peak-RSS mark (``/proc/self/clear_refs``)
and runs the stage: "peak RSS" is the high-water mark during the stage minus the RSS before it
(what getrusage's ru_maxrss would show for the stage alone). A second subprocess repeats the stage
under tracemalloc for the peak of Python/NumPy allocations (Arrow's own pool is reported as
"arrow peak"); its wall time is not used, tracing slows pandas down.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STAGES = ("frame_table", "split", "struct_files")
FRAME_SPACING_M = 0.8
GPS_NOISE_M = 1.5


def route(length_m: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Points every FRAME_SPACING_M along a smooth closed-ish random route, and their headings."""
    rng = np.random.default_rng(seed)
    n = int(length_m / FRAME_SPACING_M)
    turn = np.cumsum(rng.normal(0, 0.004, n)) + np.linspace(0, 2 * np.pi, n)
    steps = np.stack([np.sin(turn), np.cos(turn)], axis=1) * FRAME_SPACING_M
    xy = np.cumsum(steps, axis=0) + [620_000.0, 5_735_000.0]  # Oxford, UTM 30U
    return xy, np.degrees(turn) % 360.0


def traversals(benchmark: str) -> list[tuple[str, str]]:
    """(traversal, condition) of every traversal the benchmark's world holds."""
    from seqvpr.datasets.catalog import NORDLAND_SEASONS, ROBOTCAR_TRAVERSALS
    from seqvpr.benchmarks import BENCHMARKS

    dataset = BENCHMARKS[benchmark].dataset
    if dataset == "robotcar":
        return sorted(ROBOTCAR_TRAVERSALS.items())
    if dataset == "nordland":
        return [(season, season) for season in NORDLAND_SEASONS]
    raise SystemExit(f"benchmark {benchmark!r}: only RobotCar and Nordland worlds are built here")


def world_table(total_frames: int, benchmark: str):
    """A frame table of ``total_frames`` frames split evenly over the benchmark's traversals."""
    import utm

    from seqvpr.datasets.frames import frame_table

    runs = traversals(benchmark)
    per_run = total_frames // len(runs)
    xy, heading = route(per_run * FRAME_SPACING_M, seed=0)
    dataset = "nordland" if runs[0][0] == "spring" else "robotcar"
    rows = []
    for k, (name, condition) in enumerate(runs):
        noisy = xy[:per_run] + np.random.default_rng(k + 1).normal(0, GPS_NOISE_M, (per_run, 2))
        lat, lon = utm.to_latlon(noisy[:, 0], noisy[:, 1], 30, "U")
        for i in range(per_run):
            stem = f"images-{i:05d}" if dataset == "nordland" else str(1_418_000_000_000_000 + k * 10**10 + i * 62_500)
            rows.append({
                "frame_id": f"{name}_{stem}", "dataset": dataset, "location": dataset, "traversal": name,
                "condition": condition, "frame_index": i, "timestamp_us": i * 62_500,
                "image_path": f"frames/{dataset}/{name}/{name}_{stem}.tif",
                "source_file": f"{name}/{stem}.png", "lat": float(lat[i]), "lon": float(lon[i]),
                "easting": float(noisy[i, 0]), "northing": float(noisy[i, 1]), "utm_zone": 30, "utm_band": "U",
                "heading_deg": float(heading[i]), "place_index": i if dataset == "nordland" else -1,
            })
    return frame_table(rows)


# --------------------------------------------------------------------------- one stage, in a child


def _rss_bytes(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_stage(stage: str, n: int, benchmark: str, work: Path, trace: bool) -> dict:
    """Load the stage's input, then run it under measurement; returns the numbers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from seqvpr.datasets.frames import write_table
    from seqvpr.benchmarks import BENCHMARKS
    from seqvpr.splits import build_split, read_split, write_split
    from seqvpr.structfile import write_struct_files

    frames_path, split_path = work / "frame_table.parquet", work / "split.parquet"
    if stage == "frame_table":
        def body():
            write_table(world_table(n, benchmark), frames_path)
    elif stage == "split":
        def body():
            table = pq.read_table(frames_path)
            write_split(build_split(table, BENCHMARKS[benchmark], source=frames_path), benchmark, {}, split_path)
    else:
        def body():
            table, bench = read_split(split_path)
            write_struct_files(table, bench, work / "struct_files")

    if trace:
        import tracemalloc

        tracemalloc.start()
        body()
        return {"traced_peak": tracemalloc.get_traced_memory()[1], "arrow_peak": pa.default_memory_pool().max_memory()}
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak-RSS mark (Linux >= 4.0)
    before = _rss_bytes("VmRSS")
    start = time.perf_counter()
    body()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rss_peak": _rss_bytes("VmHWM") - before}


def _child(stage: str, n: int, benchmark: str, work: Path, trace: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", stage, "--sizes", str(n), "--benchmark", benchmark, "--work", str(work)]
    if trace:
        cmd.append("--trace")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def _split_summary(work: Path) -> str:
    import pyarrow.parquet as pq

    table = pq.read_table(work / "split.parquet", columns=["split", "role", "positives"]).to_pandas()
    queries = table[table["role"] == "query"]
    return (f"{len(table)} rows, {len(queries)} queries, "
            f"{(queries['positives'].map(len) == 0).mean():.1%} without positives")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 25_000, 50_000])
    parser.add_argument("--benchmark", default="oxford_easy", help="oxford_easy, oxford_hard or nordland")
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_stage(args.child, args.sizes[0], args.benchmark, args.work, args.trace)))
        return

    mib = 1 << 20
    results = {}
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix=f"bench_load_{n}_") as tmp:
            for stage in STAGES:
                results[n, stage] = {**_child(stage, n, args.benchmark, Path(tmp), False),
                                     **_child(stage, n, args.benchmark, Path(tmp), True)}
            print(f"N={n}: split table {_split_summary(Path(tmp))}", file=sys.stderr)
    base = args.sizes[0]
    print(f"\nbenchmark {args.benchmark}, {len(traversals(args.benchmark))} traversals; growth = value / value at N={base}\n")
    print("| stage | N frames | wall s | time growth | peak RSS MiB | RSS growth | traced peak MiB | arrow peak MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for stage in STAGES:
        for n in args.sizes:
            r, b = results[n, stage], results[base, stage]
            print(f"| {stage} | {n} | {r['seconds']:.2f} | {r['seconds'] / b['seconds']:.2f} | "
                  f"{r['rss_peak'] / mib:.0f} | {r['rss_peak'] / max(b['rss_peak'], 1):.2f} | "
                  f"{r['traced_peak'] / mib:.0f} | {r['arrow_peak'] / mib:.0f} |")


if __name__ == "__main__":
    main()

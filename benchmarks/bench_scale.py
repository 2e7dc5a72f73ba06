"""Every stage from raw data to training and evaluation on synthetic worlds of the real datasets'
size: time per frame, peak RSS per stage (a fresh process each) and the growth between sizes.

    .venv/bin/python benchmarks/bench_scale.py --work /tmp/scale/bench [--fractions 1/16 1/4 1]
        [--datasets nordland robotcar nuscenes] [--pixels 64x48] [--rss-limit-gb 8]
    .venv/bin/python benchmarks/bench_scale.py --work /tmp/scale/bench --report   # table of what is done

Worlds (``seqvpr.synthetic``, small pixels: ``--pixels``; the layouts are the real ones), at a
fraction f of the real size:
- Nordland: all four seasons, frames 0 .. f x 35,768 of the whole line (real: 35,768 per season),
  so the Nordland-clean list filters for real; seqNet's clean-index ranges scaled by f below 1.
- Oxford RobotCar: the two runs of Oxford-easy's test split, f x 12 km at 16 Hz (real runs: about
  10 km, 30,000-45,000 stereo frames per camera); the other runs are left out, so the other splits
  are "missing" (logged, as for a partial download).
- nuScenes ``v1.0-trainval``: f x 852 scenes of 40 key frames (real: 850 scenes, 34,000 CAM_FRONT
  key frames, half in Boston; here all in the Singapore maps, so about twice the real Singapore
  frames), without sweeps (real: about five between key frames; no stage reads them).

Raw frames are rendered by WORKERS processes and normalised at FRAME_SIZE px (real: 384) to keep
the disk and the shared CPU within bounds, except where a split is embedded (RobotCar): there at the
real 384 px, the size the embedding reads, so the embed stage decodes real-size frames. The pixel
costs at the real sizes are in bench_preprocess.py and bench_embed_shards.py; these rows measure what
grows with the frame count.

Stages: raw (the generator), frames (each partition in its own process; time summed, peak the
largest), frame_table, split (+ pairs + seqBounds), struct_files, embed, shards, exports, train,
evaluate. embed, shards, train and evaluate run on one split per world (``TOKEN_SPLITS``: the
tokens of a whole Nordland or nuScenes world would need 20-40 GB of disk twice over, as cache and
as shards): FrameEmbedder's null-model mode (NullCCT: seeded tokens of the real shape, 576 x 384
float16, at no cost; its own cache namespace) stands for CCT384, so those rows time the pipeline around the model (hashing, decoding,
cache chunk and shard writes, reading); the model's own cost per frame is in bench_embed_shards.py. train: one
epoch of the training recipe (8 queries) of ``--model``, validated on the same split; evaluate:
Recall@K of the untrained model at L = 5. On a CPU ``--model seqnet`` (SeqNet on pooled CCT
tokens, the cheapest head) keeps these rows to minutes: the data path they measure (the split's
tokens read from the shards) is the same for every model. exports: every consumer that needs no
shards, and seqNet's where every split is sharded.

Measurement: each stage runs in a fresh process; its peak RSS is the process's high-water mark
(VmHWM, imports included), its CPU time the user + system seconds of the process and of its render
workers, from which the growth is read (on a shared machine the wall time follows the load). The parent polls each child's RSS and stops a child above
``--rss-limit-gb`` (the machine is shared): such a row reads "> limit". Results are appended to
``<work>/results.jsonl`` as each stage ends, so a long run can be read while it goes.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STAGES = ("raw", "frames", "frame_table", "split", "struct_files", "embed", "shards", "exports", "train", "evaluate")
TOKEN_STAGES = ("embed", "shards", "train", "evaluate")
BENCHMARK = {"nordland": "nordland", "robotcar": "oxford_easy", "nuscenes": "nuscenes"}
TOKEN_SPLITS = {"robotcar": "test"}  # dataset -> the split embedded, sharded, trained and evaluated
NORDLAND_FRAMES = 35_768
ROBOTCAR_ROUTE_M = 12_000.0
ROBOTCAR_RUNS = "2014-11-18-13-20-12,2014-12-16-18-44-24"  # Oxford-easy's test split
NUSCENES_SCENES_PER_MAP = 284
FRAME_SIZE = 64  # normalised frames of the datasets not embedded (real: 384)
WORKERS = 3  # processes rendering the raw frames
MIB = 1 << 20


# --------------------------------------------------------------------------- worlds and settings


def world(dataset: str, fraction: float, width: int, height: int) -> dict:
    """Generator parameters of the dataset's world at ``fraction`` of the real size."""
    if dataset == "nordland":
        return {"season_frames": max(8, round(NORDLAND_FRAMES * fraction)), "width": width, "height": height,
                "workers": WORKERS}
    if dataset == "robotcar":
        return {"route_length_m": max(20.0, ROBOTCAR_ROUTE_M * fraction), "camera_hz": 16.0, "width": width,
                "height": height, "runs": ROBOTCAR_RUNS, "workers": WORKERS}
    return {"scenes_per_location": max(1, round(NUSCENES_SCENES_PER_MAP * fraction)), "samples_per_scene": 40,
            "sweeps_per_sample": 0, "width": width, "height": height, "version": "v1.0-trainval", "workers": WORKERS}


def split_config(benchmark: str, fraction: float) -> dict:
    """The benchmark's settings: the defaults, Nordland's clean-index ranges scaled by ``fraction``."""
    from seqvpr.benchmarks import BENCHMARKS, config_fields

    values = {name: default for name, (_, default) in config_fields(BENCHMARKS[benchmark]).items()}
    if fraction < 1:
        for name in [n for n in values if n.endswith("_range")]:
            values[name] = [round(v * fraction) for v in values[name]]
    return values


def frame_size(dataset: str) -> int:
    """The side of the dataset's normalised frames: the embedding's 384 px where a split is embedded
    (the real frames the embed stage reads and decodes), FRAME_SIZE elsewhere."""
    from seqvpr.embed.cct import IMAGE_SIZE

    return IMAGE_SIZE if dataset in TOKEN_SPLITS else FRAME_SIZE


def make_embedder():
    """FrameEmbedder in its null-model mode (NullCCT: seeded tokens of the real shape, own cache namespace)."""
    from seqvpr.embed.embed import FrameEmbedder

    return FrameEmbedder(device="cpu", null_model=True)


# --------------------------------------------------------------------------- stages (run in a child)


class Context:
    def __init__(self, work: Path, dataset: str, fraction: float, pixels: tuple[int, int], model: str = "adapt_stformer"):
        from seqvpr.layout import Layout

        self.dataset, self.fraction, self.pixels, self.model = dataset, fraction, pixels, model
        self.home = work / f"f{_label(fraction).replace('/', '_')}"
        self.layout = Layout.from_home(self.home)
        self.benchmark = BENCHMARK[dataset]
        self.split = TOKEN_SPLITS.get(dataset)


def stage_raw(ctx: Context, partition=None) -> int:
    from seqvpr.synthetic import generate

    summary = generate(ctx.dataset, ctx.layout.raw(ctx.dataset), seed=0, truth_root=ctx.home / "truth" / ctx.dataset,
                       **world(ctx.dataset, ctx.fraction, *ctx.pixels))
    if ctx.dataset == "nordland":
        return summary["frames_per_season"] * len(summary["seasons"])
    if ctx.dataset == "robotcar":
        return sum(run["frames"] for run in summary.values())
    return sum(summary["frames_per_condition"].values())


def partitions(ctx: Context) -> list[str]:
    import importlib

    return importlib.import_module(f"seqvpr.datasets.{ctx.dataset}").discover_partitions(ctx.layout.raw(ctx.dataset))


def stage_frames(ctx: Context, partition: str) -> int:
    import importlib

    from seqvpr.datasets.frames import write_table

    module = importlib.import_module(f"seqvpr.datasets.{ctx.dataset}")
    layout = ctx.layout
    result = module.normalise_partition(layout.raw(ctx.dataset), partition, layout.frames(ctx.dataset, partition),
                                        layout.data_root, size=frame_size(ctx.dataset))
    write_table(result.table, layout.partition_table(ctx.dataset, partition))
    return result.table.num_rows


def stage_frame_table(ctx: Context, partition=None) -> int:
    from seqvpr.datasets.frames import merge_tables, write_table

    paths = sorted((ctx.layout.data_root / "tables" / ctx.dataset).glob("*.parquet"))
    table = merge_tables(paths)
    write_table(table, ctx.layout.frame_table(ctx.dataset))
    return table.num_rows


def stage_split(ctx: Context, partition=None) -> int:
    import pyarrow.parquet as pq

    from seqvpr.benchmarks import BENCHMARKS, configure
    from seqvpr.splits import build_split, write_split

    source = ctx.layout.frame_table(ctx.dataset)
    values = split_config(ctx.benchmark, ctx.fraction)
    result = build_split(pq.read_table(source), configure(BENCHMARKS[ctx.benchmark], values), source)
    write_split(result, ctx.benchmark, values, ctx.layout.split_table(ctx.benchmark))
    return result.table.num_rows


def stage_struct_files(ctx: Context, partition=None) -> int:
    import dataclasses

    from seqvpr.atomic import atomic_dir
    from seqvpr.splits import read_split
    from seqvpr.structfile import write_struct_files

    table, bench = read_split(ctx.layout.split_table(ctx.benchmark))
    present = set(table.column("split").to_pylist())
    with atomic_dir(ctx.layout.struct_files(ctx.benchmark)) as tmp:
        write_struct_files(table, dataclasses.replace(bench, splits=tuple(s for s in bench.splits if s.split in present)), tmp)
    return table.num_rows


def _token_rows(ctx: Context):
    """The token split's rows as the shards asset orders them: database then queries, by ``order``."""
    import numpy as np

    from seqvpr.splits import read_split

    table, _ = read_split(ctx.layout.split_table(ctx.benchmark))
    df = table.to_pandas()
    part = df[df["split"] == ctx.split]
    part = part.sort_values(["role", "order"], key=lambda c: c.map({"db": 0, "query": 1}) if c.name == "role" else c)
    return [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items()} for r in part.to_dict("records")]


def _index_path(ctx: Context, model_id: str) -> Path:
    return ctx.layout.embeddings(model_id) / "index" / ctx.dataset / f"{ctx.split}.json"


def stage_embed(ctx: Context, partition=None) -> int:
    from seqvpr.atomic import atomic_write_text

    rows = _token_rows(ctx)
    embedder = make_embedder()
    cache = ctx.layout.embeddings(embedder.model_id)
    digests, _ = embedder.embed_files([ctx.layout.data_root / r["image_path"] for r in rows], cache, batch_size=8)
    atomic_write_text(_index_path(ctx, embedder.model_id), json.dumps(dict(zip((r["frame_id"] for r in rows), digests))))
    return len(rows)


def stage_shards(ctx: Context, partition=None) -> int:
    """As the shards asset writes them (assets/shards.py): the manifest's encoder and split settings,
    the split's negatives, at least 8 shards (ShardConfig's default)."""
    import numpy as np

    from seqvpr.embed.chunks import load_descriptor, load_tokens
    from seqvpr.shards import Sample, encoder_record, write_split_shards
    from seqvpr.splits import negatives_path, read_split, split_settings

    embedder = make_embedder()
    cache = ctx.layout.embeddings(embedder.model_id)
    digests = json.loads(_index_path(ctx, embedder.model_id).read_text())
    rows = _token_rows(ctx)
    samples = (Sample(key=r["frame_id"], tokens=load_tokens(cache, digests[r["frame_id"]]),
                      descriptor=load_descriptor(cache, digests[r["frame_id"]]), row=r) for r in rows)
    num_layers = embedder.model.num_layers
    split_table = ctx.layout.split_table(ctx.benchmark)
    provenance = {"encoder": encoder_record(embedder.weights, num_layers, embedder.freeze_te),
                  "split_settings": split_settings(read_split(split_table)[1])}
    manifest = write_split_shards(ctx.layout.shards(ctx.benchmark, ctx.split), ctx.benchmark, ctx.split, samples,
                                  total=len(rows), min_shards=8, provenance=provenance,
                                  negatives=np.load(negatives_path(split_table, ctx.split)))
    return manifest["samples"]


def stage_exports(ctx: Context, partition=None) -> int:
    from seqvpr.exports import FORMATS, export, supported
    from seqvpr.splits import read_split

    table, _ = read_split(ctx.layout.split_table(ctx.benchmark))
    sharded = all(ctx.layout.shards(ctx.benchmark, s).exists() for s in set(table.column("split").to_pylist()))
    for consumer in FORMATS:
        if supported(consumer, ctx.benchmark) and (consumer != "seqnet" or sharded):
            export(ctx.layout, consumer, ctx.benchmark)
    return table.num_rows


def _split_data(ctx: Context):
    from seqvpr.train import load_split_data

    return load_split_data(ctx.layout.shards(ctx.benchmark, ctx.split))


def stage_train(ctx: Context, partition=None) -> int:
    from seqvpr.train import TrainConfig, train

    data = _split_data(ctx)
    cfg = TrainConfig.for_model(ctx.model, False, epochs=1, queries_per_epoch=8, device="cpu")
    train(cfg, data, data, log=lambda *_: None)
    return len(data.db_bounds) + len(data.q_bounds)


def stage_evaluate(ctx: Context, partition=None) -> int:
    from seqvpr.evaluate import evaluate_model
    from seqvpr.train import TrainConfig, build_sequence_model, fit_pooling

    data = _split_data(ctx)
    kwargs = TrainConfig.for_model(ctx.model, False).model_kwargs
    model = build_sequence_model(ctx.model, 5, kwargs)
    fit_pooling(model, data)  # heads on pooled tokens: their frame descriptor's whitening (the split stands in for training's)
    evaluate_model(model.eval(), data, 5)
    return len(data.db_bounds) + len(data.q_bounds)


def _status(field: str, pid: str = "self") -> int:
    """A /proc/<pid>/status memory field in bytes (0 when the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its waited-for children (the render workers)."""
    import resource

    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def run_stage(ctx: Context, stage: str, partition: str | None) -> dict:
    start, cpu = time.perf_counter(), _cpu_seconds()
    frames = globals()[f"stage_{stage}"](ctx, partition)
    return {"seconds": time.perf_counter() - start, "cpu": _cpu_seconds() - cpu, "frames": frames,
            "rss_peak": _status("VmHWM")}


# --------------------------------------------------------------------------- the parent


def _label(fraction: float) -> str:
    return str(Fraction(fraction).limit_denominator(1000))


def _child(args, dataset: str, fraction: float, stage: str, partition: str | None) -> dict:
    """Run one stage in a fresh process under the RSS limit."""
    cmd = [sys.executable, __file__, "--child", stage, "--datasets", dataset, "--fractions", str(fraction),
           "--work", str(args.work), "--pixels", args.pixels, "--model", args.model]
    if partition:
        cmd += ["--partition", partition]
    limit = args.rss_limit_gb * (1 << 30)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    peak, start = 0, time.perf_counter()
    while proc.poll() is None:
        rss = _status("VmRSS", str(proc.pid))
        peak = max(peak, rss)
        if rss > limit:
            proc.kill()
            proc.wait()
            return {"stopped": f"RSS above {args.rss_limit_gb:g} GB after {time.perf_counter() - start:.0f} s",
                    "rss_peak": peak, "seconds": time.perf_counter() - start, "frames": 0}
        time.sleep(0.2)
    out, err = proc.communicate()
    if proc.returncode:
        return {"failed": (err.strip().splitlines() or ["?"])[-1][:300], "rss_peak": peak, "frames": 0,
                "seconds": time.perf_counter() - start}
    return json.loads(out.strip().splitlines()[-1])


def measure(args, dataset: str, fraction: float, stage: str, in_process: bool) -> dict:
    ctx = Context(args.work, dataset, fraction, _pixels(args.pixels), args.model)
    if stage in TOKEN_STAGES and ctx.split is None:
        return {}
    parts = partitions(ctx) if stage == "frames" else [None]
    rows = [run_stage(ctx, stage, p) if in_process else _child(args, dataset, fraction, stage, p) for p in parts]
    merged = {"dataset": dataset, "fraction": _label(fraction), "stage": stage,
              "seconds": sum(r["seconds"] for r in rows), "cpu": sum(r.get("cpu", float("nan")) for r in rows),
              "frames": sum(r["frames"] for r in rows),
              "rss_peak": max(r["rss_peak"] for r in rows)}
    for key in ("stopped", "failed"):
        if any(key in r for r in rows):
            merged[key] = next(r[key] for r in rows if key in r)
    return merged


def _pixels(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def report(results: list[dict]) -> str:
    """Markdown table; growth compares each size with the next smaller one measured. Time growth is
    that of the CPU seconds (user + system, render workers included; the wall time's, marked, where a
    row has no CPU time): on a shared machine the wall time follows the load more than the work."""
    lines = ["| dataset | stage | size | frames | wall s | CPU s | CPU ms / frame | peak RSS MiB | frames growth | "
             "CPU growth | N log N growth | RSS growth |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    previous = {}
    for r in results:
        key = (r["dataset"], r["stage"])
        note = r.get("stopped") or r.get("failed")
        cpu = r.get("cpu", float("nan"))
        per_frame = 1000 * cpu / r["frames"] if r["frames"] else float("nan")
        growth = ["", "", "", ""]
        if key in previous and r["frames"] and previous[key]["frames"] and not note:
            p = previous[key]
            n0, n1 = p["frames"], r["frames"]
            before = p.get("cpu", float("nan"))
            time_growth = (f"{cpu / max(before, 1e-9):.2f}" if not (math.isnan(cpu) or math.isnan(before))
                           else f"{r['seconds'] / max(p['seconds'], 1e-9):.2f} (wall)")
            growth = [f"{n1 / n0:.2f}", time_growth,
                      f"{n1 * math.log(max(n1, 2)) / (n0 * math.log(max(n0, 2))):.2f}",
                      f"{r['rss_peak'] / max(p['rss_peak'], 1):.2f}"]
        size = r["fraction"]
        if note:
            lines.append(f"| {r['dataset']} | {r['stage']} | {size} | | {r['seconds']:.0f} | | | "
                         f">= {r['rss_peak'] / MIB:.0f} | | | | {note} |")
            continue
        lines.append(f"| {r['dataset']} | {r['stage']} | {size} | {r['frames']} | {r['seconds']:.1f} | {cpu:.1f} | {per_frame:.2f} | "
                     f"{r['rss_peak'] / MIB:.0f} | " + " | ".join(growth) + " |")
        previous[key] = r
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (one pipeline home per size)")
    parser.add_argument("--fractions", nargs="+", default=["1/16", "1/4", "1"], help="sizes as fractions of the real one")
    parser.add_argument("--datasets", nargs="+", default=["nordland", "robotcar", "nuscenes"])
    parser.add_argument("--stages", nargs="+", default=list(STAGES))
    parser.add_argument("--pixels", default="64x48", help="rendered raw image size")
    parser.add_argument("--model", default="adapt_stformer", help="the sequence model trained and evaluated")
    parser.add_argument("--rss-limit-gb", type=float, default=8.0)
    parser.add_argument("--in-process", action="store_true", help="no fresh process per stage (tests; RSS is cumulative)")
    parser.add_argument("--report", action="store_true", help="print the table of <work>/results.jsonl (and of "
                        "--include files) for --datasets and --fractions, and exit")
    parser.add_argument("--include", nargs="*", default=[], type=Path, help="more results.jsonl files for --report")
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--partition", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    fractions = [float(Fraction(f)) for f in args.fractions]
    results_path = args.work / "results.jsonl"
    if args.child:
        ctx = Context(args.work, args.datasets[0], fractions[0], _pixels(args.pixels), args.model)
        print(json.dumps(run_stage(ctx, args.child, args.partition)))
        return []
    if args.report:
        rows = [json.loads(line) for path in [results_path, *args.include] for line in Path(path).read_text().splitlines()]
        sizes = {_label(f) for f in fractions}
        rows = [r for r in rows if r["fraction"] in sizes and r["dataset"] in args.datasets]
        rows = list({(r["dataset"], r["fraction"], r["stage"]): r for r in rows}.values())  # a re-measured stage replaces its row
        rows.sort(key=lambda r: (args.datasets.index(r["dataset"]), Fraction(r["fraction"]), STAGES.index(r["stage"])))
        print(report(rows))
        return rows
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()}", file=sys.stderr)
    for dataset in args.datasets:
        for fraction in fractions:
            for stage in [s for s in STAGES if s in args.stages]:
                row = measure(args, dataset, fraction, stage, args.in_process)
                if not row:
                    continue
                with open(results_path, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(f"{dataset} {_label(fraction)} {stage}: {row['frames']} frames, {row['seconds']:.1f} s, "
                      f"{row['rss_peak'] / MIB:.0f} MiB {row.get('stopped', '')}{row.get('failed', '')}",
                      file=sys.stderr, flush=True)
    results = [json.loads(line) for line in results_path.read_text().splitlines()]
    print(report(results))
    return results


if __name__ == "__main__":
    main()

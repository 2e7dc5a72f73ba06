"""Sequence-descriptor extraction cost as Tables II, III and IV of Adapt-STformer measure it: the
whole extraction, each model on its published backbone (seqvpr/models/extractor.py), batch 1, per
sequence; printed as Markdown, with ratios to STformer measured side by side in the same run.

    .venv/bin/python benchmarks/bench_models.py --table 2        # Table II models, L = 5
    .venv/bin/python benchmarks/bench_models.py --table 3-4      # ablations at L = 1, 3, 5 (K = 8 vs 576)
    .venv/bin/python benchmarks/bench_models.py --table spatial  # one spatial layer per frame
    options: --device cpu|cuda (cuda when there is one) --dtypes fp32,bf16 --repeats N --warmup N

Time: median of `--repeats` timed extractions after `--warmup` ones, the models taking turns in
each round; wall time on CUDA (synchronised around each), process CPU time on a CPU (one thread).
Head: the same for the sequence head alone on the backbone's features (more repeats). Where the
backbone is cut differs per model (STformer's own 8 CCT blocks are in its head, Adapt-STformer's
8 in its backbone), so compare whole extractions; the head columns show where the time goes.
Memory: peak during one extraction above what was allocated before the model was built (weights
kept, input, activations, workspaces; not the transient full-size CCT or fp32 copy the build
drops): on CUDA `max_memory_allocated` after `reset_peak_memory_stats`; on a CPU the rise of the
process's peak RSS (VmHWM) in a fresh subprocess per model, which sees every allocation (glibc's
mmap threshold fixed, see peak_memory_mb).
Stages: the paper's Fig. 3 split (backbone, spatial, temporal, aggregation) from forward hooks.
On a CPU the default is one thread: on a shared machine two threads were 2-10x slower and noisier.
"""
import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from seqvpr.models import PAPER_PARAMETERS  # noqa: E402
from seqvpr.models.extractor import build_extractor, module_times  # noqa: E402
from seqvpr.models.layers import (  # noqa: E402
    DeformableEncoderLayer,
    DenseCrossEncoderLayer,
    grid_reference_points,
)

TABLE_II = ["adapt_stformer", "stformer", "seqvlad", "seqnet", "jist", "opticornet"]
TABLE_III_IV = ["adapt_stformer", "adapt_transformer_temporal", "adapt_seqgem_only", "adapt_dense_k576", "stformer"]
LENGTHS = (1, 3, 5)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LABELS = {"adapt_stformer": "Adapt-STformer", "stformer": "STformer", "seqvlad": "SeqVLAD", "seqnet": "SeqNet",
          "jist": "JIST", "opticornet": "OptiCorNet", "adapt_transformer_temporal": "Adapt, temporal transformer",
          "adapt_seqgem_only": "Adapt, SeqGeM only", "adapt_dense_k576": "Adapt, dense K=576"}


def sequence_images(length: int, dtype, device) -> torch.Tensor:
    return torch.randn(1, length, 3, 384, 384, generator=torch.Generator().manual_seed(0)).to(device, dtype)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved_medians(calls: dict, device, warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds per call, the calls taking turns in every round, so that a load change on a
    shared machine hits all of them alike instead of whichever ran at that moment. On a CPU the
    process's CPU time is measured instead of wall time: with one thread it is the work done,
    without the time spent descheduled behind other processes."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    times = {key: [] for key in calls}
    with torch.inference_mode():
        for _ in range(warmup):
            for call in calls.values():
                call()
        for _ in range(repeats):
            for key, call in calls.items():
                _sync(device)
                start = clock()
                call()
                _sync(device)
                times[key].append(clock() - start)
    return {key: statistics.median(values) for key, values in times.items()}


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_mb(name: str, length: int, dtype: str, device, threads: int) -> dict[str, float]:
    """`whole`: peak memory of one extraction above the memory held before the model was built;
    `head`: the head's own peak above what is held once the backbone's tokens are computed."""
    if device.type == "cpu":
        # a fresh process per model, so no earlier model's pages are reused; a fixed mmap threshold
        # makes glibc map and unmap every large buffer, so the RSS follows the live tensors instead of
        # heap fragmentation (without it, repeated runs of one model differed by up to 20 %)
        out = subprocess.run([sys.executable, __file__, "--memory-child", name, "--lengths", str(length),
                              "--dtypes", dtype, "--threads", str(threads)],
                             check=True, capture_output=True, text=True, cwd=REPO,
                             env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})
        return json.loads(out.stdout.strip().splitlines()[-1])
    gc.collect()
    torch.cuda.empty_cache()
    images = sequence_images(length, DTYPES[dtype], device)
    before = torch.cuda.memory_allocated()
    torch.manual_seed(0)
    extractor = build_extractor(name, seq_len=length).to(device, DTYPES[dtype])
    with torch.inference_mode():
        extractor(images)  # warm-up: lazy CUDA / cuDNN / cuBLAS state is not the model's cost
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        extractor(images)
        torch.cuda.synchronize()
        whole = torch.cuda.max_memory_allocated() - before
        tokens = extractor.backbone(images.flatten(0, 1))
        tokens = tokens.view(1, length, *tokens.shape[1:])
        torch.cuda.synchronize()
        before_head = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        extractor.head(tokens)
        torch.cuda.synchronize()
        head = torch.cuda.max_memory_allocated() - before_head
    return {"whole": whole / 2**20, "head": head / 2**20}


def _memory_child(name: str, length: int, dtype: str) -> None:
    images = sequence_images(length, DTYPES[dtype], torch.device("cpu"))
    torch.ones(64, 64) @ torch.ones(64, 64)  # start the thread pool before the baseline
    before = _rss("VmRSS")
    torch.manual_seed(0)
    extractor = build_extractor(name, seq_len=length).to(dtype=DTYPES[dtype])
    gc.collect()  # what the build dropped (unused CCT blocks, fp32 weights) is unmapped: not counted
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (Linux >= 4.0)
    with torch.inference_mode():
        extractor(images)
        whole = _rss("VmHWM") - before
        tokens = extractor.backbone(images.flatten(0, 1))
        tokens = tokens.view(1, length, *tokens.shape[1:])
        before_head = _rss("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
        extractor.head(tokens)
        head = _rss("VmHWM") - before_head
    print(json.dumps({"whole": whole / 2**20, "head": head / 2**20}))


def measure(names: list[str], length: int, dtype: str, device, args) -> dict[str, dict | None]:
    """Whole-extraction time, head time, Fig. 3 stage times, memory and parameters of each model,
    the timings interleaved across the models; None for a model that cannot run (e.g. no bf16 kernel)."""
    images = sequence_images(length, DTYPES[dtype], device)
    extractors, tokens, rows, extractor, features = {}, {}, {}, None, None
    for name in names:
        try:
            torch.manual_seed(0)
            extractor = build_extractor(name, seq_len=length).to(device, DTYPES[dtype])
            with torch.inference_mode():
                features = extractor.backbone(images.flatten(0, 1))
                tokens[name] = features.view(1, length, *features.shape[1:])
                extractor.head(tokens[name])
            extractors[name] = extractor
        except (RuntimeError, NotImplementedError) as error:
            print(f"<!-- {name} L={length} {dtype}: {str(error).splitlines()[0]} -->")
    whole = interleaved_medians({n: (lambda e=e: e(images)) for n, e in extractors.items()}, device, args.warmup, args.repeats)
    head = interleaved_medians({n: (lambda e=e, n=n: e.head(tokens[n])) for n, e in extractors.items()},
                               device, args.warmup, args.head_repeats)
    for name, extractor in extractors.items():
        rows[name] = {"seconds": whole[name], "head_seconds": head[name],
                      "stages": {k: statistics.median(v) for k, v in _stage_runs(extractor, images, args.stage_repeats).items()},
                      "parameters": sum(p.numel() for p in extractor.parameters()),
                      "head_parameters": sum(p.numel() for p in extractor.head.parameters())}
    del extractors, tokens, images, extractor, features  # on CUDA, free them before the memory runs
    for name in rows:
        memory = peak_memory_mb(name, length, dtype, device, args.threads)
        rows[name]["peak_mb"], rows[name]["head_peak_mb"] = memory["whole"], memory["head"]
    return {name: rows.get(name) for name in names}


def _stage_runs(extractor, images, repeats: int) -> dict[str, list[float]]:
    clock = time.perf_counter if images.is_cuda else time.process_time
    runs = [module_times(extractor, images, clock) for _ in range(repeats)]
    return {key: [run.get(key, 0.0) for run in runs] for key in runs[0]}


def _stages_text(row: dict) -> str:
    stages = {k: v for k, v in row["stages"].items() if k != "total"}
    return ", ".join(f"{k} {v * 1e3:.1f}" for k, v in stages.items())


def table_ii(device, args) -> None:
    for dtype in args.dtypes:
        rows = measure(TABLE_II, 5, dtype, device, args)
        ref = rows["stformer"]
        print(f"\n#### Table II, {dtype}, L = 5, batch 1, {device.type}\n")
        print("| model | ms / sequence | ÷ STformer | head ms | ÷ STformer | peak MB | ÷ STformer | head peak MB "
              "| ÷ STformer | parameters (head) | Table II | Fig. 3 stages, ms |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for name, row in rows.items():
            if row is None:
                print(f"| {LABELS[name]} | n/a | | | | | | | | | | |")
                continue
            paper = f"{PAPER_PARAMETERS[name] / 1e6:.1f}M" if name in PAPER_PARAMETERS else "n/a"
            ratio = (lambda key: f"{row[key] / ref[key]:.2f}") if ref else (lambda key: "n/a")
            print(f"| {LABELS[name]} | {row['seconds'] * 1e3:.1f} | {ratio('seconds')} | {row['head_seconds'] * 1e3:.2f} "
                  f"| {ratio('head_seconds')} | {row['peak_mb']:.0f} | {ratio('peak_mb')} | {row['head_peak_mb']:.1f} "
                  f"| {ratio('head_peak_mb')} | {row['parameters']:,} "
                  f"({row['head_parameters']:,}) | {paper} | {_stages_text(row)} |")


def table_iii_iv(device, args) -> None:
    for dtype in args.dtypes:
        print(f"\n#### Tables III / IV, {dtype}, batch 1, {device.type}\n")
        print("| model | L | ms / sequence | head ms | peak MB | head peak MB "
              "| ÷ STformer at L: time, head time, memory, head memory | Fig. 3 stages, ms |")
        print("|---|---|---|---|---|---|---|---|")
        for length in args.lengths:
            rows = measure(TABLE_III_IV, length, dtype, device, args)
            ref = rows.get("stformer")
            for name, row in rows.items():
                if row is None:
                    print(f"| {LABELS[name]} | {length} | n/a | | | | | |")
                    continue
                keys = ("seconds", "head_seconds", "peak_mb", "head_peak_mb")
                ratios = ", ".join(f"{row[k] / ref[k]:.2f}" for k in keys) if ref else "n/a"
                print(f"| {LABELS[name]} | {length} | {row['seconds'] * 1e3:.1f} | {row['head_seconds'] * 1e3:.2f} | "
                      f"{row['peak_mb']:.0f} | {row['head_peak_mb']:.1f} | {ratios} | {_stages_text(row)} |")


class _SpatialOnFrame(torch.nn.Module):
    """One spatial layer on one frame's 24 x 24 tokens, query = value = the frame (as at t = 0)."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        self.register_buffer("reference", grid_reference_points(24)[None], persistent=False)

    def forward(self, frame):
        return self.layer(frame, self.reference, frame, (24, 24))


class _OnWeights(torch.nn.Module):
    """Another formulation of an attention module's computation, on that module's own weights."""

    def __init__(self, attn):
        super().__init__()
        self.attn = attn


class _GridSampleAttention(_OnWeights):
    """The reference formulation (tests/test_deformable.py) on the same weights, for the speed-up."""

    def forward(self, query, reference, value, shape):
        from test_deformable import grid_sample_reference

        return grid_sample_reference(self.attn, query, reference, value, shape)


class _DenseAttention(_OnWeights):
    def forward(self, query, reference, value, shape):
        return self.attn(query, value)


class _ExplicitDenseAttention(_OnWeights):
    """The dense attention on the same weights as the authors write it (`dense_spatial_cross_attention.py`,
    `CrossAttention.forward`: matmul, softmax, matmul, materialising the 8 x 576 x 576 scores) where
    `DenseCrossAttention` calls PyTorch's fused SDPA."""

    def forward(self, query, reference, value, shape):
        a, (b, n, d) = self.attn, query.shape
        q = a.q_proj(query + a.pos_embed_q).view(b, n, a.heads, -1).transpose(1, 2)
        k = a.k_proj(value + a.pos_embed_k).view(b, n, a.heads, -1).transpose(1, 2)
        v = a.v_proj(value).view(b, n, a.heads, -1).transpose(1, 2)
        scores = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1)
        return a.proj((scores @ v).transpose(1, 2).reshape(b, n, d))


EXPLICIT_DENSE = "dense attention (all 576 tokens, the authors' matmul + softmax)"


def table_spatial(device, args) -> None:
    """Per frame: the whole encoder layer (attention + FFN + norms) and the attention alone."""
    torch.manual_seed(0)
    deformable, dense = DeformableEncoderLayer(384).eval(), DenseCrossEncoderLayer(384).eval()
    cases = {"deformable layer, K = 8": deformable, "dense layer, K = 576": dense,
             "deformable attention": deformable.attn,
             "deformable attention, grid_sample reference": _GridSampleAttention(deformable.attn),
             "dense attention (all 576 tokens, SDPA)": _DenseAttention(dense.attn),
             EXPLICIT_DENSE: _ExplicitDenseAttention(dense.attn)}
    for dtype in args.dtypes:
        frame = torch.randn(1, 576, 384, generator=torch.Generator().manual_seed(1)).to(device, DTYPES[dtype])
        models = {label: _SpatialOnFrame(module).to(device, DTYPES[dtype]) for label, module in cases.items()}
        with torch.no_grad():  # the two dense formulations compute the same attention
            fused, explicit = models["dense attention (all 576 tokens, SDPA)"](frame), models[EXPLICIT_DENSE](frame)
            assert torch.allclose(fused.float(), explicit.float(), atol=1e-4 if dtype == "fp32" else 5e-2), dtype
        seconds = interleaved_medians({label: (lambda m=m: m(frame)) for label, m in models.items()},
                                      device, args.warmup, args.head_repeats)
        print(f"\n#### Spatial attention per frame, {dtype}, {device.type}\n")
        print("| | ms / frame |\n|---|---|")
        for label, s in seconds.items():
            print(f"| {label} | {s * 1e3:.2f} |")
        print(f"\ndense / deformable: layer {seconds['dense layer, K = 576'] / seconds['deformable layer, K = 8']:.2f}x, "
              f"attention {seconds['dense attention (all 576 tokens, SDPA)'] / seconds['deformable attention']:.2f}x "
              f"(SDPA), {seconds[EXPLICIT_DENSE] / seconds['deformable attention']:.2f}x "
              f"(the authors' formulation); "
              f"grid_sample reference / fast deformable attention "
              f"{seconds['deformable attention, grid_sample reference'] / seconds['deformable attention']:.2f}x")


def machine(device) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    text = (f"{cpu}, {os.cpu_count()} cores visible, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
            f"load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", choices=["2", "3-4", "spatial"], default="2")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", default=None, help="comma-separated of fp32, bf16 (default: fp32 on CPU, both on CUDA)")
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    parser.add_argument("--threads", type=int, default=1, help="torch threads on a CPU")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--memory-child", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if not cuda:
        torch.set_num_threads(args.threads)
    args.dtypes = (args.dtypes or ("fp32,bf16" if cuda else "fp32")).split(",")
    args.lengths = [int(x) for x in args.lengths.split(",")]
    if args.memory_child:
        _memory_child(args.memory_child, args.lengths[0], args.dtypes[0])
        return
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 1)
    args.repeats = args.repeats or (50 if cuda else 3)
    args.head_repeats = 5 * args.repeats if cuda else 10
    args.stage_repeats = 10 if cuda else 1
    print(f"`{' '.join(['.venv/bin/python', *sys.argv])}`")
    print(f"\nmachine at start: {machine(device)}")
    {"2": table_ii, "3-4": table_iii_iv, "spatial": table_spatial}[args.table](device, args)
    print(f"\nmachine at end: {machine(device)}")


if __name__ == "__main__":
    main()

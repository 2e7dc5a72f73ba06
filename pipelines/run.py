"""Headless runner: materialise the asset graph, every partition, in dependency order.

`seqvpr run` is what the README's quick start calls. Before any work it validates the config and
the asset names (pipelines/validate.py), then takes the home's run lock (a second run on the same
home waits) and removes the temporary folders a killed run left. Assets at the same depth of the
graph (and every partition of a partitioned asset) run concurrently: in a local process pool whose
workers die with the runner, or as Dagster runs whose steps execute on an existing Dask cluster
(`--dask-address tcp://host:8786`). A task whose code, settings and upstream tasks are unchanged
since its last success is skipped as fresh; `--rebuild-from` forces its assets.

The terminal shows one progress bar per stage, one line per finished partition and a summary
table; Dagster's own logs go to `<home>/logs/run-<time>.log`. Runs are recorded in $DAGSTER_HOME
(default `<home>/.dagster_home`, with a `dagster.yaml` written at the first run), so
`dagster dev` started with the same DAGSTER_HOME shows them.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import os
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipelines.validate import ConfigError, validate
from seqvpr.atomic import atomic_write_text
from seqvpr.housekeeping import home_lock, state_dir, sweep_temporaries

ROOT = Path(__file__).resolve().parents[1]
CODE_PACKAGES = ("assets", "pipelines", "schemas", "seqvpr")
DAGSTER_YAML = """\
# Written by `seqvpr run` at the first run on this home: run history in sqlite files here, no telemetry.
# Edit freely; `seqvpr run` never overwrites it.
telemetry:
  enabled: false
"""


def _defs():
    from pipelines.definitions import defs

    return defs


def _closure(graph, keys, start: set, direction: str) -> set:
    """`start` plus every asset reachable from it upstream ("parent_keys") or downstream ("child_keys")."""
    reached, frontier = set(start), list(start)
    while frontier:
        for other in getattr(graph.get(frontier.pop()), direction):
            if other in keys and other not in reached:
                reached.add(other)
                frontier.append(other)
    return reached


def plan(selection: list[str] | None = None, rebuild_from: list[str] | None = None) -> list[list[tuple[str, str | None]]]:
    """Waves of (asset key, partition key) tasks; every task's upstream assets are in earlier waves.

    selection: these assets and everything upstream of them (default: all but training/evaluation);
    rebuild_from: only these assets and what is downstream of them (and selected), e.g. after a
    config change, so upstream products are reused as they are."""
    graph = _defs().resolve_asset_graph()
    keys = [k for k in graph.toposorted_asset_keys if graph.get(k).is_materializable]

    def matching(prefixes):
        return {k for k in keys if any(k.to_user_string().startswith(p) for p in prefixes)}

    if selection:
        wanted = _closure(graph, keys, matching(selection), "parent_keys")
    else:
        wanted = {k for k in keys if graph.get(k).group_name != "training"}
    if rebuild_from:
        wanted &= _closure(graph, keys, matching(rebuild_from), "child_keys")
    keys = [k for k in keys if k in wanted]
    depth: dict = {}
    for key in keys:
        parents = [p for p in graph.get(key).parent_keys if p in depth]
        depth[key] = 1 + max((depth[p] for p in parents), default=-1)
    waves: list[list[tuple[str, str | None]]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for key in keys:
        partitions = graph.get(key).partitions_def
        for partition in partitions.get_partition_keys() if partitions else [None]:
            waves[depth[key]].append((key.to_user_string(), partition))
    return waves


# --------------------------------------------------------------------------- freshness


def code_version() -> str:
    """Digest of every source file of the pipeline: any code change makes every task stale."""
    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def fingerprints(run_config: dict, code: str) -> dict[str, str]:
    """Asset key -> digest of the code, its settings, the settings of the resources it uses and its
    upstream assets' digests.

    Tasks of an asset whose digest equals the one recorded at its last success would write the
    same bytes again (reruns are byte-identical), so they are skipped. A resource's settings reach
    only the assets that use it and, through their digests, what is downstream of them."""
    defs = _defs()
    graph = defs.resolve_asset_graph()
    ops, resources = run_config.get("ops") or {}, run_config.get("resources") or {}
    digests: dict[str, str] = {}
    for key in graph.toposorted_asset_keys:
        name = key.to_user_string()
        parents = sorted(digests[p.to_user_string()] for p in graph.get(key).parent_keys if p.to_user_string() in digests)
        used = defs.get_assets_def(key).required_resource_keys if graph.get(key).is_materializable else set()
        settings = json.dumps([code, name, ops.get(name), {k: v for k, v in resources.items() if k in used}, parents],
                              sort_keys=True, default=str)
        digests[name] = hashlib.sha256(settings.encode()).hexdigest()
    return digests


class FreshnessRecord:
    """`<home>/.seqvpr/fresh.json`: task -> digest of its last successful run and the outputs it
    reported (its metadata's paths); a task is fresh only while every one of them still exists."""

    def __init__(self, home: str):
        self.path = state_dir(home) / "fresh.json"
        self.done: dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def is_fresh(self, task: str, digest: str) -> bool:
        entry = self.done.get(task)
        return entry is not None and entry["digest"] == digest and all(Path(p).exists() for p in entry["outputs"])

    def forget(self, task: str) -> None:
        """Before a task runs: it may replace its outputs, so they no longer match the old digest."""
        if self.done.pop(task, None) is not None:
            self._save()

    def record(self, task: str, digest: str, outputs: list[str]) -> None:
        self.done[task] = {"digest": digest, "outputs": sorted(outputs)}
        self._save()

    def _save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.done, indent=1, sort_keys=True))


# --------------------------------------------------------------------------- one task


@dataclass
class TaskResult:
    key: str
    partition: str | None
    seconds: float = 0.0
    written: dict[str, int] = field(default_factory=dict)  # e.g. {"frames": 40} or {"samples": 94}
    skips: int = 0  # counted skips (dropped frames)
    failed_checks: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # the paths its metadata names
    error: str | None = None
    fresh: bool = False

    @property
    def name(self) -> str:
        return f"{self.key}[{self.partition}]" if self.partition else self.key


def _plain(value):
    return getattr(value, "value", value)


def summarise_metadata(metadata: dict) -> tuple[dict[str, int], int]:
    """What a materialisation wrote (frames, embeddings, samples, split rows, files) and its counted skips."""
    values = {k: _plain(v) for k, v in metadata.items()}
    written = {}
    samples = sum(v for k, v in values.items() if k.endswith("_samples") and isinstance(v, int))
    if samples:
        written["samples"] = samples
    for key, label in (("frames", "frames"), ("embedded", "embedded"), ("files", "files")):
        if isinstance(values.get(key), int) and label not in written:
            written[label] = values[key]
    if isinstance(values.get("counts"), dict):
        written["rows"] = sum(values["counts"].values())
    if isinstance(values.get("struct_files"), list):
        written["struct files"] = len(values["struct_files"])
    dropped = values.get("dropped")
    skips = sum(dropped.values()) if isinstance(dropped, dict) else 0
    return written, skips


def root_cause(error) -> str:
    """The innermost error of a Dagster failure: the DataError text (file and problem), not the wrapper."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    message = error.message.strip().splitlines()[0] if error.message.strip() else ""
    qualified, _, rest = message.partition(": ")
    if qualified.rsplit(".", 1)[-1] == error.cls_name:  # Dagster writes "seqvpr.errors.DataError: ..."
        message = rest
    return f"{error.cls_name}: {message}"


def _collect(result, task: TaskResult) -> TaskResult:
    """Fill ``task`` from a Dagster execution result."""
    from dagster import PathMetadataValue

    for event in result.get_asset_materialization_events():
        metadata = event.materialization.metadata
        task.outputs += [str(v.value) for v in metadata.values() if isinstance(v, PathMetadataValue)]
        written, skips = summarise_metadata(metadata)
        for label, count in written.items():
            task.written[label] = task.written.get(label, 0) + count
        task.skips += skips
    broken = []
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            problems = _plain(evaluation.metadata.get("problems")) or {k: _plain(v) for k, v in evaluation.metadata.items()}
            task.failed_checks.append(f"{evaluation.check_name} ({evaluation.severity.value}): {problems}")
            if evaluation.severity.value == "ERROR":  # the output is wrong: nothing downstream may use it
                broken.append(f"asset check {evaluation.check_name} failed: {problems}")
    if not result.success:
        failure = next((e for e in result.all_events if e.is_failure and getattr(e.event_specific_data, "error", None)), None)
        task.error = root_cause(failure.event_specific_data.error) if failure else "failed; see the run's log"
    elif broken:
        task.error = "; ".join(broken)
    return task


def _resources(defs, home: str, run_config: dict) -> dict:
    """The code location's resources, configured from the YAML's `resources:` section."""
    from pipelines.resources import PipelineHome

    configured = {key: type(resource)(**(run_config.get("resources") or {}).get(key, {}).get("config", {}))
                  for key, resource in defs.resources.items()}
    return {**configured, "home": PipelineHome(home=home)}


def _op_config(run_config: dict, key: str) -> dict:
    ops = run_config.get("ops") or {}
    return {"ops": {key: ops[key]}} if key in ops else {}


def materialize_task(key: str, partition: str | None, home: str, run_config: dict) -> TaskResult:
    """Materialise one asset (one partition) and its checks in-process."""
    from dagster import AssetKey, DagsterInstance, materialize

    defs = _defs()
    task = TaskResult(key, partition)
    print(f"\n===== {task.name} =====", file=sys.stderr, flush=True)
    start = time.perf_counter()
    with DagsterInstance.get() as instance:
        result = materialize(
            list(defs.assets) + list(defs.asset_checks or []),
            selection=[AssetKey.from_user_string(key)],
            partition_key=partition,
            instance=instance,
            resources=_resources(defs, home, run_config),
            run_config=_op_config(run_config, key),
            raise_on_error=False,
        )
    task.seconds = time.perf_counter() - start
    return _collect(result, task)


def dask_task(key: str, partition: str, home: str, run_config: dict, address: str) -> TaskResult:
    """Run one partition as a Dagster run of the asset's heavy job on an existing Dask cluster."""
    from dagster import DagsterInstance, execute_job
    from dagster._core.definitions.reconstruct import build_reconstructable_job

    job = build_reconstructable_job("pipelines.jobs", "resolve_job", reconstructable_args=(f"{key}_job",))
    config = {
        **_op_config(run_config, key),
        "execution": {"config": {"cluster": {"existing": {"address": address}}}},
        "resources": {**(run_config.get("resources") or {}), "home": {"config": {"home": home}}},
    }
    task = TaskResult(key, partition)
    start = time.perf_counter()
    with DagsterInstance.get() as instance:
        result = execute_job(job, instance=instance, run_config=config, tags={"dagster/partition": partition})
        task.seconds = time.perf_counter() - start
        return _collect(result, task)


# --------------------------------------------------------------------------- worker processes and output


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when the runner dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the pool's own shutdown still ends idle workers
        pass
    if os.getppid() != parent:  # the runner died before the request was in place
        os._exit(1)


def _worker_init(parent: int, workers: int, log_path: str, lock_fd: int) -> None:
    _die_with_parent(parent)
    with contextlib.suppress(OSError):
        os.close(lock_fd)  # the lock belongs to the runner alone
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # Python streams too, whatever they were bound to
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))  # parallel partitions share the cores


@contextlib.contextmanager
def _stderr_to(log_path: Path):
    """Send everything written to stderr (Dagster's logs, warnings, alembic) to the log file."""
    sys.stderr.flush()
    saved, saved_stream = os.dup(2), sys.stderr
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 2)
    os.close(log)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = saved_stream
        os.dup2(saved, 2)
        os.close(saved)


class Progress:
    """One tqdm bar per stage (asset group) on a terminal, one line per finished task everywhere."""

    def __init__(self, stages: dict[str, int], out):
        from tqdm import tqdm

        self.out, self.left = out, dict(stages)
        self.bars = {stage: tqdm(total=total, desc=stage, unit="task", file=out, disable=None, leave=False)
                     for stage, total in stages.items()}

    def done(self, stage: str, line: str) -> None:
        from tqdm import tqdm

        tqdm.write(line, file=self.out)
        self.bars[stage].update(1)
        self.left[stage] -= 1
        if self.left[stage] == 0:
            self.bars[stage].close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _task_line(task: TaskResult) -> str:
    if task.fresh:
        return f"  = {task.name}: fresh, skipped"
    if task.error:
        return f"  x {task.name}: FAILED after {task.seconds:.1f}s: {task.error}"
    written = ", ".join(f"{n} {label}" for label, n in task.written.items())
    skips = f", {task.skips} skipped" if task.skips else ""
    checks = f"; CHECK FAILED: {'; '.join(task.failed_checks)}" if task.failed_checks else ""
    return f"  + {task.name} in {task.seconds:.1f}s{': ' + written if written else ''}{skips}{checks}"


def summary_table(tasks: list[TaskResult]) -> str:
    """Per asset: partitions run (and skipped as fresh), seconds, what was written, counted skips."""
    rows = {}
    for task in tasks:
        row = rows.setdefault(task.key, {"run": 0, "fresh": 0, "failed": 0, "seconds": 0.0, "written": {}, "skips": 0})
        row["fresh" if task.fresh else "failed" if task.error else "run"] += 1
        row["seconds"] += task.seconds
        for label, n in task.written.items():
            row["written"][label] = row["written"].get(label, 0) + n
        row["skips"] += task.skips
    header = ("asset", "partitions", "seconds", "written", "skips")
    lines = [header]
    for key, row in rows.items():
        parts = f"{row['run']} run" + (f", {row['fresh']} fresh" if row["fresh"] else "") + (f", {row['failed']} FAILED" if row["failed"] else "")
        written = ", ".join(f"{n} {label}" for label, n in row["written"].items()) or "-"
        lines.append((key, parts, f"{row['seconds']:.1f}", written, str(row["skips"])))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [" | ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(text)


def _dagster_home(home: str) -> Path:
    os.environ.setdefault("DAGSTER_HOME", str(Path(home) / ".dagster_home"))
    dagster_home = Path(os.environ["DAGSTER_HOME"])
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        atomic_write_text(dagster_home / "dagster.yaml", DAGSTER_YAML)
    return dagster_home


class RunFailed(RuntimeError):
    """Some task failed; the message lists each failure's root cause."""


# --------------------------------------------------------------------------- the run


def run(home: str, workers: int, run_config: dict, selection: list[str] | None = None, dask_address: str | None = None,
        rebuild_from: list[str] | None = None, out=None) -> list[TaskResult]:
    """Validate, lock the home, sweep a dead run's temporaries, run every stale task; returns every task.

    Raises ConfigError before any work, RunFailed after the wave in which a task failed."""
    out = out or sys.stdout
    home = str(Path(home).resolve())
    logs = Path(home) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    with _stderr_to(log_path):
        defs = _defs()
        validate(defs, run_config, home, selection, rebuild_from)
    print(f"seqvpr run on {home} (Dagster's logs: {log_path})", file=out, flush=True)
    with home_lock(home, on_wait=lambda message: print(message, file=out, flush=True)) as lock_fd, _stderr_to(log_path):
        swept = sweep_temporaries(home)
        if swept:
            print(f"removed {len(swept)} temporary file(s)/folder(s) of an interrupted run", file=out, flush=True)
        _dagster_home(home)
        from dagster import DagsterInstance

        with DagsterInstance.get():  # create the run storage once, so worker processes do not race to
            pass
        return _run_waves(defs, home, workers, run_config, selection, dask_address, rebuild_from, out, log_path, lock_fd)


def _run_waves(defs, home, workers, run_config, selection, dask_address, rebuild_from, out, log_path, lock_fd):
    waves = plan(selection, rebuild_from)
    graph = defs.resolve_asset_graph()
    stage_of = {name: graph.get(key).group_name or "default" for name, key in
                ((k.to_user_string(), k) for k in graph.toposorted_asset_keys)}
    stages: dict[str, int] = {}
    for key, _ in (task for wave in waves for task in wave):
        stages[stage_of[key]] = stages.get(stage_of[key], 0) + 1
    digests = fingerprints(run_config, code_version())
    record = FreshnessRecord(home)
    progress = Progress(stages, out)
    results: list[TaskResult] = []
    started = time.perf_counter()
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_worker_init,
                               initargs=(os.getpid(), workers, str(log_path), lock_fd))
    try:
        with ThreadPoolExecutor(max_workers=max(workers, 4)) as threads:
            for wave in waves:
                pending = {}
                for key, partition in wave:
                    task_id = f"{key}[{partition}]" if partition else key
                    if not rebuild_from and record.is_fresh(task_id, digests[key]):
                        results.append(TaskResult(key, partition, fresh=True))
                        progress.done(stage_of[key], _task_line(results[-1]))
                        continue
                    record.forget(task_id)
                    if dask_address and partition is not None:
                        future = threads.submit(dask_task, key, partition, home, run_config, dask_address)
                    else:
                        future = pool.submit(materialize_task, key, partition, home, run_config)
                    pending[future] = (key, partition, task_id)
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        key, partition, task_id = pending.pop(future)
                        try:
                            task = future.result()
                        except Exception as err:  # the worker itself died or could not return
                            task = TaskResult(key, partition, error=f"{type(err).__name__}: {err}")
                        results.append(task)
                        if not task.error:
                            record.record(task_id, digests[key], task.outputs)
                        progress.done(stage_of[key], _task_line(task))
                failures = [t for t in results if t.error]
                if failures:
                    break
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        progress.close()
    print(f"\n{summary_table(results)}", file=out)
    ran = sum(1 for t in results if not t.fresh)
    print(f"{len(results)} asset partitions ({ran} run, {len(results) - ran} fresh) in {time.perf_counter() - started:.1f}s",
          file=out, flush=True)
    failures = [t for t in results if t.error]
    if failures:
        raise RunFailed("\n".join(f"{t.name} failed: {t.error}" for t in failures) + f"\n(full log: {log_path})")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seqvpr run", description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=os.environ.get("SEQVPR_HOME", "."), help="pipeline home (data/, struct_files/, shards/)")
    parser.add_argument("--workers", type=int, default=2, help="concurrent asset partitions")
    parser.add_argument("--config", type=Path, help="YAML run config: {ops: {<asset>: {config: {...}}}, "
                        "resources: {encoder: {config: {checkpoint: ...}}}}")
    parser.add_argument("--select", nargs="*", help="asset key prefixes to materialise (with their upstream assets); "
                        "default: every dataset product, without training/evaluation")
    parser.add_argument("--rebuild-from", nargs="*", help="only these assets and their downstream assets, run even "
                        "if fresh (e.g. oxford_hard_split after changing its frame separation)")
    parser.add_argument("--dask-address", help="run partitioned heavy assets on this Dask scheduler")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be 1 or more, got {args.workers}")
    try:
        run_config = yaml.safe_load(args.config.read_text()) if args.config else {}
    except (OSError, yaml.YAMLError) as err:
        print(f"error: cannot read the config {args.config}: {err}", file=sys.stderr)
        return 2
    try:
        run(args.home, args.workers, {} if run_config is None else run_config, args.select, args.dask_address, args.rebuild_from)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RunFailed as err:
        print(f"FAILED: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the next run removes this run's temporary files", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

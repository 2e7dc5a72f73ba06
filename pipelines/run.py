"""`seqvpr run`: materialise the asset graph headless, every partition, in dependency order.

Before any work it validates the config and the asset names (pipelines/validate.py), then takes
the home's run lock (a second run on the same home waits) and removes the temporary folders a
killed run left, unless a step started elsewhere (`dagster dev`) is running. Each task is a Dagster
run of a named job of the code location (pipelines/jobs.py) with the YAML as run config, started
as soon as the tasks it waits for have finished (pipelines/plan.py, pipelines/execute.py); what is
fresh is read from the Dagster instance (pipelines/state.py), so runs started from the UI and from
here see each other. `--rebuild-from` forces its assets.

The terminal shows one progress bar per stage, one line per finished partition and a summary
table (pipelines/report.py); Dagster's own logs go to `<home>/logs/run-<time>.log`. Runs are
recorded in $DAGSTER_HOME (default `<home>/.dagster_home`, with a `dagster.yaml` written at the
first run), which `seqvpr ui` opens in `dagster dev`.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import sys
import time
from pathlib import Path

from pipelines.plan import plan as plan_tasks
from pipelines.report import TaskResult, summary_table
from pipelines.validate import ConfigError, load_config, validate
from pipelines.workers import start_worker_server
from seqvpr.atomic import atomic_write_text
from seqvpr.housekeeping import home_lock, no_steps_running, sweep_temporaries

DAGSTER_YAML = """\
# Written by `seqvpr run` at the first run on this home: run history in sqlite files here, no telemetry.
# Edit freely; `seqvpr run` never overwrites it.
telemetry:
  enabled: false
# Runs launched from the UI have their settings checked (ranges included) before they start.
run_coordinator:
  module: pipelines.launch
  class: ValidatingRunCoordinator
"""


def _defs():
    from pipelines.definitions import defs

    return defs


def plan(selection: list[str] | None = None, rebuild_from: list[str] | None = None):
    """The tasks of a run (pipelines/plan.py) in dependency order."""
    return list(plan_tasks(_defs(), selection, rebuild_from))


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


def dagster_home(home: str) -> Path:
    """$DAGSTER_HOME (default `<home>/.dagster_home`), its storage created once: processes starting
    on a new one at the same moment take turns (two creating its sqlite tables at once leave it
    with two schema heads, unusable for good)."""
    os.environ.setdefault("DAGSTER_HOME", str(Path(home) / ".dagster_home"))
    path = Path(os.environ["DAGSTER_HOME"])
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / ".seqvpr-init.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not (path / "dagster.yaml").exists():
            atomic_write_text(path / "dagster.yaml", DAGSTER_YAML)
        from dagster import DagsterInstance

        with DagsterInstance.get():
            pass
    finally:
        os.close(fd)
    return path


class RunFailed(RuntimeError):
    """Some task failed; the message lists each failure's root cause."""


def run(home: str, workers: int, run_config: dict, selection: list[str] | None = None, dask_address: str | None = None,
        rebuild_from: list[str] | None = None, out=None) -> list[TaskResult]:
    """Validate, lock the home, sweep a dead run's temporaries, run every stale task; returns every task.

    Raises ConfigError before any work, RunFailed after the run when a task failed."""
    out = out or sys.stdout
    home = Path(home).resolve()
    if home.exists() and not home.is_dir():
        raise ConfigError([f"--home: {home} is a file, not a folder"])
    home = str(home)
    logs = Path(home) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    with _stderr_to(log_path):
        start_worker_server()  # the workers' forkserver imports the code location beside this process
        defs = _defs()
        validate(defs, run_config, home, selection, rebuild_from)
    print(f"seqvpr run on {home} (Dagster's logs: {log_path})", file=out, flush=True)
    with home_lock(home, on_wait=lambda message: print(message, file=out, flush=True)), _stderr_to(log_path):
        with no_steps_running(home) as idle:
            swept = sweep_temporaries(home) if idle else []
        if not idle:
            print("a step started from dagster dev is running on this home: temporary files left as they are",
                  file=out, flush=True)
        if swept:
            print(f"removed {len(swept)} temporary file(s)/folder(s) of an interrupted run", file=out, flush=True)
        dagster_home(home)
        started = time.perf_counter()
        tasks = plan_tasks(defs, selection, rebuild_from)
        from pipelines.execute import execute

        results = execute(defs, tasks, home, workers, run_config, bool(rebuild_from), dask_address, out, log_path)
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
                        "resources: {encoder: {config: {checkpoint: ...}}}}, as in the launchpad")
    parser.add_argument("--select", nargs="*", help="assets to materialise (with their upstream assets): a name or "
                        "name prefix, or Dagster's selection syntax (key:oxford_*, group:splits); "
                        "default: every dataset product, without training/evaluation")
    parser.add_argument("--rebuild-from", nargs="*", help="only these assets and their downstream assets, run even "
                        "if fresh (e.g. oxford_hard_split after changing its frame separation)")
    parser.add_argument("--dask-address", help="run partitioned heavy assets on this Dask scheduler")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be 1 or more, got {args.workers}")
    try:
        run_config = load_config(args.config) if args.config else {}
        run(args.home, args.workers, run_config, args.select, args.dask_address, args.rebuild_from)
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

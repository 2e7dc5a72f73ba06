"""The runner's worker processes: started from a forkserver, never forked from the runner.

A process forked after its parent ran a parallel torch operation hangs in its own first one: torch's
CPU wheels use GNU OpenMP, whose thread pool does not survive fork (the child waits for threads
that only exist in the parent). The runner is often such a parent: a Python session or a test
process that has trained or embedded before calling `pipelines.run.run`. A forkserver is a process
in which nothing has run but imports, so its children start clean; Python 3.14 makes it the default
start method for the same reason.

What a forked worker used to inherit, it is now given: the runner's environment ($DAGSTER_HOME and
$SEQVPR_HOME above all) and working directory, as they are when the pool starts, since the
forkserver may have been started earlier, by another run of the same process. Workers leave within
a second of the runner, however it ended (`seqvpr.housekeeping.leave_with`: they are the
forkserver's children, not the runner's); the forkserver leaves when the runner and they have.
"""
from __future__ import annotations

import multiprocessing.forkserver
import os
import sys
from concurrent.futures import ProcessPoolExecutor

from seqvpr.housekeeping import forkserver_context, leave_with

# Imported once by the forkserver, so a worker starts with the code location loaded (seconds of
# imports otherwise). Import-time reads of the instance (the benchmark jobs' launchpad defaults,
# pipelines/definitions.py) may see the forkserver's $DAGSTER_HOME; the runner's per-asset jobs
# take their settings from the run config, never from those defaults.
PRELOAD = ["pipelines.definitions"]


def start_worker_server() -> None:
    """Start the forkserver now, so its imports overlap the runner's own (no-op when it runs)."""
    forkserver_context(PRELOAD)
    multiprocessing.forkserver.ensure_running()


def _worker_init(runner: int, threads: int, environment: dict, cwd: str, log_path: str) -> None:
    leave_with(runner)
    os.environ.clear()
    os.environ.update(environment)
    os.chdir(cwd)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # Python streams too, whatever they were bound to
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    import torch

    torch.set_num_threads(threads)


def worker_pool(workers: int, log_path: str) -> ProcessPoolExecutor:
    """``workers`` processes from the forkserver; each writes stdout and stderr to ``log_path`` and
    runs torch on its share of the cores (parallel partitions share them)."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    return ProcessPoolExecutor(max_workers=workers, mp_context=forkserver_context(PRELOAD), initializer=_worker_init,
                               initargs=(os.getpid(), threads, dict(os.environ), os.getcwd(), str(log_path)))

"""Run the planned tasks: each as a Dagster run of a named job of the code location, started as
soon as the tasks it waits for have finished, skipped when the instance says it is fresh.

Runs execute in a local process pool whose workers die with the runner (pipelines/workers.py); for partitions with
`--dask-address` the pool's processes run `<asset>_dask_job`, whose steps execute on that Dask
cluster. Never as threads of one process: Dagster reconfigures Python's logging at each run's start
(`logging.config.dictConfig`), which deadlocks against another run's thread logging at that moment.
"""
from __future__ import annotations

import sys
import time
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path

from pipelines.jobs import job_name
from pipelines.plan import Task
from pipelines.report import Progress, TaskResult, collect, task_line
from pipelines.state import InstanceState, job_resources
from pipelines.workers import worker_pool

ROOT = Path(__file__).resolve().parents[1]
CODE_LOCATION = "pipelines.definitions"  # workspace.yaml's python_module, which names the location


def job_run_config(key: str, run_config: dict, home: str, dask_address: str | None = None) -> dict:
    """The run config of one task's run: the asset's settings, the resources' and the executor's."""
    ops = run_config.get("ops") or {}
    config = {"resources": job_resources(run_config, home)}
    if key in ops:
        config["ops"] = {key: ops[key]}
    if dask_address:
        config["execution"] = {"config": {"cluster": {"existing": {"address": dask_address}}}}
    return config


def remote_origin(job: str):
    """Where the UI finds ``job``: the code location of workspace.yaml (named after its module), so
    `dagster dev` can re-execute the runs of `seqvpr run`."""
    from dagster._core.remote_origin import (ManagedGrpcPythonEnvCodeLocationOrigin, RemoteJobOrigin,
                                             RemoteRepositoryOrigin)
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    target = LoadableTargetOrigin(executable_path=sys.executable, module_name=CODE_LOCATION, attribute="defs",
                                  working_directory=str(ROOT))
    location = ManagedGrpcPythonEnvCodeLocationOrigin(target, location_name=CODE_LOCATION)
    return RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), job)


def execute_task(key: str, partition: str | None, job: str, home: str, run_config: dict,
                 dask_address: str | None = None) -> TaskResult:
    """Materialise one asset (one partition) and its checks as a run of ``job``."""
    from dagster import AssetKey, DagsterInstance
    from dagster._core.execution.api import execute_run
    from dagster._core.definitions.reconstruct import build_reconstructable_job

    task = TaskResult(key, partition)
    print(f"\n===== {task.name} ({job}) =====", file=sys.stderr, flush=True)
    start = time.perf_counter()
    selection = frozenset({AssetKey.from_user_string(key)})
    recon = build_reconstructable_job("pipelines.jobs", "resolve_job", reconstructable_args=(job,)).get_subset(
        asset_selection=selection)
    with DagsterInstance.get() as instance:
        run = instance.create_run_for_job(
            job_def=recon.get_definition(), run_config=job_run_config(key, run_config, home, dask_address),
            tags={"dagster/partition": partition} if partition else None, asset_selection=selection,
            job_code_origin=recon.get_python_origin(), remote_job_origin=remote_origin(job))
        result = execute_run(recon, run, instance, raise_on_error=False)
        task.seconds = time.perf_counter() - start
        return collect(result, task)


def execute(defs, tasks: dict[Task, list[Task]], home: str, workers: int, run_config: dict, forced: bool,
            dask_address: str | None, out, log_path) -> list[TaskResult]:
    """Run every task whose inputs are ready and which is stale (all of them when ``forced``); a task
    waiting for a failed one is not run. Returns the tasks in the order they finished."""
    from dagster import AssetKey, DagsterInstance

    graph = defs.resolve_asset_graph()
    node = {t: graph.get(AssetKey.from_user_string(t.key)) for t in tasks}
    stages: dict[str, int] = {}
    for task in tasks:
        stage = node[task].group_name or "default"
        stages[stage] = stages.get(stage, 0) + 1
    progress = Progress(stages, out)
    finished: dict[Task, TaskResult] = {}
    results: list[TaskResult] = []

    def finish(task: Task, result: TaskResult) -> None:
        finished[task] = result
        results.append(result)
        progress.done(node[task].group_name or "default", task_line(result))

    pool = worker_pool(workers, str(log_path))
    try:
        with DagsterInstance.get() as instance:
            state = InstanceState(instance, defs, run_config, home)
            running: dict = {}
            started: set = set()
            while True:
                ready = [t for t in tasks if t not in started and all(p in finished for p in tasks[t])]
                for task in ready:
                    started.add(task)
                    failed = next((p for p in tasks[task] if finished[p].error), None)
                    if failed is not None:
                        finish(task, TaskResult(task.key, task.partition, error=f"not run: {failed.name} failed"))
                        continue
                    reason = "forced" if forced else state.why_stale(task.key, task.partition)
                    if reason is None:
                        finish(task, TaskResult(task.key, task.partition, fresh=True))
                        continue
                    on_dask = dask_address is not None and task.partition is not None
                    job = job_name(task.key, task.partition is not None, node[task].group_name, dask=on_dask)
                    arguments = (task.key, task.partition, job, home, run_config, dask_address if on_dask else None)
                    future = pool.submit(execute_task, *arguments)
                    running[future] = (task, reason)
                if ready:
                    continue  # skipped tasks may have made others ready
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    task, reason = running.pop(future)
                    try:
                        result = future.result()
                    except Exception as err:  # the worker itself died or could not return
                        result = TaskResult(task.key, task.partition, error=f"{type(err).__name__}: {err}")
                    result.reason = "" if reason in ("forced", "never built") else reason
                    finish(task, result)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        progress.close()
    return results

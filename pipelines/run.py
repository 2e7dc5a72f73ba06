"""Headless runner: materialise the asset graph, every partition, in dependency order.

`seqvpr run` is what the README's quick start calls. Assets at the same depth of the graph (and
every partition of a partitioned asset) run concurrently: in a local process pool by default, or as
Dagster runs whose steps execute on an existing Dask cluster (`--dask-address tcp://host:8786`).
Runs are recorded in $DAGSTER_HOME (default `<home>/.dagster_home`), so `dagster dev` started with
the same DAGSTER_HOME shows them.
"""
import argparse
import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import yaml

log = logging.getLogger("seqvpr.run")


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


def _op_config(run_config: dict, key: str) -> dict:
    ops = run_config.get("ops", {})
    return {"ops": {key: ops[key]}} if key in ops else {}


def _resources(defs, home: str, run_config: dict) -> dict:
    """The code location's resources, configured from the YAML's `resources:` section."""
    from pipelines.resources import PipelineHome

    configured = {key: type(resource)(**run_config.get("resources", {}).get(key, {}).get("config", {}))
                  for key, resource in defs.resources.items()}
    return {**configured, "home": PipelineHome(home=home)}


def materialize_task(key: str, partition: str | None, home: str, run_config: dict) -> str:
    """Materialise one asset (one partition) in-process; returns a one-line summary."""
    from dagster import AssetKey, DagsterInstance, materialize

    defs = _defs()
    graph_assets = list(defs.assets) + list(defs.asset_checks or [])
    start = time.perf_counter()
    with DagsterInstance.get() as instance:
        result = materialize(
            graph_assets,
            selection=[AssetKey.from_user_string(key)],
            partition_key=partition,
            instance=instance,
            resources=_resources(defs, home, run_config),
            run_config=_op_config(run_config, key),
            raise_on_error=False,
        )
    if not result.success:
        failure = next((e for e in result.all_events if e.is_failure), None)
        message = failure.event_specific_data.error.message.strip() if failure and failure.event_specific_data and getattr(failure.event_specific_data, "error", None) else "see the run's logs"
        raise RuntimeError(f"{key}[{partition}] failed: {message}")
    return f"{key}{'[' + partition + ']' if partition else ''} in {time.perf_counter() - start:.1f}s"


def dask_task(key: str, partition: str, home: str, run_config: dict, address: str) -> str:
    """Run one partition as a Dagster run of the asset's heavy job on an existing Dask cluster."""
    from dagster import DagsterInstance, execute_job
    from dagster._core.definitions.reconstruct import build_reconstructable_job

    job = build_reconstructable_job("pipelines.jobs", "resolve_job", reconstructable_args=(f"{key}_job",))
    config = {
        **_op_config(run_config, key),
        "execution": {"config": {"cluster": {"existing": {"address": address}}}},
        "resources": {**run_config.get("resources", {}), "home": {"config": {"home": home}}},
    }
    start = time.perf_counter()
    with DagsterInstance.get() as instance:
        result = execute_job(job, instance=instance, run_config=config, tags={"dagster/partition": partition})
    if not result.success:
        raise RuntimeError(f"{key}[{partition}] failed on the Dask cluster")
    return f"{key}[{partition}] on dask in {time.perf_counter() - start:.1f}s"


def _share_cores(workers: int) -> None:
    """Each pool process gets its share of the cores, so parallel partitions do not oversubscribe."""
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def run(home: str, workers: int, run_config: dict, selection: list[str] | None = None, dask_address: str | None = None,
        rebuild_from: list[str] | None = None) -> None:
    from dagster import DagsterInstance

    with DagsterInstance.get():  # create the run storage once, so worker processes do not race to
        pass
    waves = plan(selection, rebuild_from)
    total = sum(len(w) for w in waves)
    done = 0
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, initializer=_share_cores, initargs=(workers,)) as pool, ThreadPoolExecutor(max_workers=max(workers, 4)) as threads:
        for wave in waves:
            futures = []
            for key, partition in wave:
                if dask_address and partition is not None:
                    futures.append(threads.submit(dask_task, key, partition, home, run_config, dask_address))
                else:
                    futures.append(pool.submit(materialize_task, key, partition, home, run_config))
            for future in futures:
                summary = future.result()
                done += 1
                log.info(f"[{done}/{total}] {summary}")
    log.info(f"materialised {total} asset partitions in {time.perf_counter() - started:.1f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seqvpr run", description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=os.environ.get("SEQVPR_HOME", "."), help="pipeline home (data/, struct_files/, shards/)")
    parser.add_argument("--workers", type=int, default=2, help="concurrent asset partitions")
    parser.add_argument("--config", type=Path, help="YAML run config: {ops: {<asset>: {config: {...}}}, "
                        "resources: {encoder: {config: {checkpoint: ...}}}}")
    parser.add_argument("--select", nargs="*", help="asset key prefixes to materialise (with their upstream assets); "
                        "default: every dataset product, without training/evaluation")
    parser.add_argument("--rebuild-from", nargs="*", help="only these assets and their downstream assets "
                        "(e.g. oxford_hard_split after changing its frame separation)")
    parser.add_argument("--dask-address", help="run partitioned heavy assets on this Dask scheduler")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    home = str(Path(args.home).resolve())
    os.environ.setdefault("DAGSTER_HOME", str(Path(home) / ".dagster_home"))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    run_config = yaml.safe_load(args.config.read_text()) if args.config else {}
    try:
        run(home, args.workers, run_config or {}, args.select, args.dask_address, args.rebuild_from)
    except RuntimeError as err:
        log.error(str(err))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time a one-asset rebuild launched as the UI launches it (issue 18: under 20 s on 2 cores).

On a home built by `seqvpr run --home HOME`, this loads workspace.yaml's code location as
`dagster dev` does (a code server subprocess, not timed: the UI has it running already), then
through Dagster's GraphQL API (`launchPipelineExecution`, the launchpad's mutation) launches a run
of ``<benchmark>_job`` for the split alone, first with a changed ``frame_separation`` then with the
benchmark's default, and prints the time from the launch to the run's success, with the run's own
phases from its event log (process start and code load before RUN_START, the step, the run's end).

    DAGSTER_HOME=HOME/.dagster_home python benchmarks/bench_ui_rebuild.py HOME [--benchmark oxford_hard]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance
from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

from pipelines.execute import CODE_LOCATION
from seqvpr.benchmarks import BENCHMARKS

LAUNCH = """
mutation($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
STATUS = "query($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }"


def launch(context, home: str, benchmark: str, separation: float) -> tuple[float, str]:
    """Seconds from the launch mutation to the run's success (polled every 0.1 s), and the run id."""
    params = {"selector": {"repositoryLocationName": CODE_LOCATION, "repositoryName": "__repository__",
                           "pipelineName": f"{benchmark}_job", "assetSelection": [{"path": [f"{benchmark}_split"]}]},
              "runConfigData": {"resources": {"home": {"config": {"home": home}}},
                                "ops": {f"{benchmark}_split": {"config": {"frame_separation": separation}}}}}
    start = time.perf_counter()
    launched = execute_dagster_graphql(context, LAUNCH, {"executionParams": params}).data["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    while (status := execute_dagster_graphql(context, STATUS, {"runId": run_id}).data["runOrError"]["status"]) not in (
            "SUCCESS", "FAILURE", "CANCELED"):
        time.sleep(0.1)
    elapsed = time.perf_counter() - start
    assert status == "SUCCESS", (run_id, status)
    return elapsed, run_id


def phases(instance, run_id: str) -> str:
    """The run's event log: launch to RUN_START (process start, code load), the step, its end."""
    records = instance.get_records_for_run(run_id).records
    first = {}
    for r in records:
        e = r.event_log_entry
        kind = e.dagster_event.event_type if e.dagster_event else None
        first.setdefault(kind, e.timestamp)
    t0 = min(first.values())
    marks = [(k.value, first[k] - t0) for k in (DagsterEventType.RUN_STARTING, DagsterEventType.RUN_START,
                                                DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS,
                                                DagsterEventType.RUN_SUCCESS) if k in first]
    return ", ".join(f"{name} {t:.1f}s" for name, t in marks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("home")
    parser.add_argument("--benchmark", default="oxford_hard")
    args = parser.parse_args()
    home = str(Path(args.home).resolve())
    os.environ.setdefault("DAGSTER_HOME", str(Path(home) / ".dagster_home"))
    default = float(BENCHMARKS[args.benchmark].separation)
    workspace = str(Path(__file__).resolve().parents[1] / "workspace.yaml")
    with DagsterInstance.get() as instance, define_out_of_process_context(workspace, None, instance) as context:
        for label, separation in (("changed", default * 2 or 1.0), ("default", default), ("unchanged", default)):
            elapsed, run_id = launch(context, home, args.benchmark, separation)
            print(f"{args.benchmark}_split frame_separation={separation} ({label}): {elapsed:.1f}s launch to success "
                  f"[{phases(instance, run_id)}]", flush=True)


if __name__ == "__main__":
    main()

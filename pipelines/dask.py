"""dagster-dask's executor for an existing (or a local) Dask cluster, with one change: each step's
Dask key names its run.

dagster-dask submits every step as `<job>.<step key>` (dagster_dask/executor.py, `DaskExecutor.execute`:
`dask_task_name = f"{job_name}.{step.key}"`). Runs of one partitioned job running at the same time
(one per partition) then submit the same key, and Dask, which identifies a task by its key, runs
one of them and hands its result to all: three of four Nordland seasons were never normalised.
Here the key is `<job>.<step key>.<run id>`. The worker function and the `existing`/`local`
cluster configuration are dagster-dask's; importing dagster_dask itself would import
dask.dataframe (seconds) into every process that loads the code location.
"""
from __future__ import annotations

import json

from dagster import Executor, Field, Permissive, Selector, Shape, StringSource, executor, multiple_process_executor_requirements
from dagster._core.errors import raise_execution_interrupts
from dagster._core.execution.retries import RetryMode
from dagster._utils import iterate_with_context

RESOURCE_REQUIREMENTS_TAG = "dagster-dask/resource_requirements"  # as dagster-dask reads a step's Dask resources


def query_on_dask_worker(dependencies, recon_job, dagster_run, run_config, step_keys, instance_ref, known_state):
    """Run ``step_keys`` of ``dagster_run`` inside a Dask worker (dagster_dask.executor.query_on_dask_worker);
    ``dependencies`` only makes Dask wait for the upstream steps' futures."""
    from dagster import DagsterInstance
    from dagster._core.execution.api import create_execution_plan, execute_plan

    with DagsterInstance.from_ref(instance_ref) as instance:
        subset_job = recon_job.get_subset(op_selection=dagster_run.resolved_op_selection)
        plan = create_execution_plan(subset_job, run_config=run_config, step_keys_to_execute=step_keys,
                                     known_state=known_state)
        return execute_plan(plan, subset_job, instance, dagster_run, run_config=run_config)


class RunKeyedDaskExecutor(Executor):
    """Steps as Dask tasks keyed `<job>.<step key>.<run id>` (see the module docstring)."""

    def __init__(self, cluster_type: str, cluster_configuration: dict):
        self.cluster_type, self.cluster_configuration = cluster_type, dict(cluster_configuration or {})

    @property
    def retries(self):
        return RetryMode.DISABLED

    def execute(self, plan_context, execution_plan):
        import dask.distributed

        if self.cluster_type == "existing":
            cluster = self.cluster_configuration["address"]
        else:
            cluster = dask.distributed.LocalCluster(**self.cluster_configuration)
        with dask.distributed.Client(cluster) as client:
            futures = {}
            for level in execution_plan.get_steps_to_execute_by_level():
                for step in level:
                    dependencies = [futures[key] for step_input in step.step_inputs for key in step_input.dependency_keys]
                    futures[step.key] = client.submit(
                        query_on_dask_worker, dependencies, plan_context.reconstructable_job,
                        plan_context.dagster_run, plan_context.run_config, [step.key], plan_context.instance.get_ref(),
                        execution_plan.known_state, key=f"{plan_context.job_name}.{step.key}.{plan_context.run_id}",
                        resources=json.loads(step.tags.get(RESOURCE_REQUIREMENTS_TAG, "{}")))
            completed = dask.distributed.as_completed(list(futures.values()), with_results=True)
            for _, events in iterate_with_context(raise_execution_interrupts, completed):
                yield from events


@executor(
    name="dask",
    requirements=multiple_process_executor_requirements(),
    config_schema={"cluster": Field(Selector({
        "existing": Field(Shape({"address": StringSource}), description="Connect to an existing scheduler."),
        "local": Field(Permissive(), is_required=False, description="A local cluster (distributed.LocalCluster arguments)."),
    }), description="dagster-dask's `cluster` setting: an existing scheduler's address, or a local cluster.")},
)
def dask_executor(init_context):
    """dagster-dask's executor (existing or local clusters), with run-unique task keys."""
    ((cluster_type, cluster_configuration),) = init_context.executor_config["cluster"].items()
    return RunKeyedDaskExecutor(cluster_type, cluster_configuration)

"""The dagster-dask executor, with one change: each step's Dask key names its run.

dagster-dask submits every step as `<job>.<step key>` (dagster_dask/executor.py, `DaskExecutor.execute`:
`dask_task_name = f"{job_name}.{step.key}"`). Runs of one partitioned job running at the same time
(one per partition) then submit the same key, and Dask, which identifies a task by its key, runs
one of them and hands its result to all: three of four Nordland seasons were never normalised.
Here the key is `<job>.<step key>.<run id>`; everything else is dagster-dask's own code.
"""
from __future__ import annotations

import dask.distributed
from dagster import DagsterEvent, executor, multiple_process_executor_requirements
from dagster._core.execution.context.system import PlanOrchestrationContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.errors import raise_execution_interrupts
from dagster._utils import iterate_with_context
from dagster_dask.executor import (DaskExecutor, dask_executor as _dagster_dask_executor,
                                   get_dask_resource_requirements, query_on_dask_worker)


class RunKeyedDaskExecutor(DaskExecutor):
    """DaskExecutor whose task keys are unique per run (see the module docstring)."""

    def execute(self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan):
        if self.cluster_type not in ("existing", "local"):
            yield from super().execute(plan_context, execution_plan)  # other clusters: as dagster-dask does
            return
        if self.cluster_type == "existing":
            cluster = self.cluster_configuration["address"]
        else:
            cluster = dask.distributed.LocalCluster(**self.build_dict(plan_context.job_name))
        with dask.distributed.Client(cluster) as client:
            futures = {}
            for level in execution_plan.get_steps_to_execute_by_level():
                for step in level:
                    dependencies = [futures[key] for step_input in step.step_inputs for key in step_input.dependency_keys]
                    futures[step.key] = client.submit(
                        query_on_dask_worker, dependencies, plan_context.reconstructable_job,
                        plan_context.dagster_run, plan_context.run_config, [step.key], plan_context.instance.get_ref(),
                        execution_plan.known_state, key=f"{plan_context.job_name}.{step.key}.{plan_context.run_id}",
                        resources=get_dask_resource_requirements(step.tags))
            completed = dask.distributed.as_completed(list(futures.values()), with_results=True)
            for _, events in iterate_with_context(raise_execution_interrupts, completed):
                yield from (event for event in events if isinstance(event, DagsterEvent))


@executor(name="dask", config_schema=_dagster_dask_executor.config_schema, requirements=multiple_process_executor_requirements())
def dask_executor(init_context):
    """dagster-dask's executor and configuration, with run-unique task keys."""
    ((cluster_type, cluster_configuration),) = init_context.executor_config["cluster"].items()
    return RunKeyedDaskExecutor(cluster_type, cluster_configuration)

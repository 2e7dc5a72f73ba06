"""Settings checked when a run is launched from the UI, not inside its first step.

Dagster's launchpad checks a run config's types, not the ranges of the Config classes (a
`frame_separation: -1.0` would start the run and fail in a stack trace inside the asset). This
run coordinator, named in the `dagster.yaml` that `seqvpr run` writes, checks a launched run's
config with pipelines/validate.py first and, if a value is refused, marks the run failed with the
problems, one line each, without starting it. Otherwise it launches the run as Dagster's default
coordinator does.
"""
from __future__ import annotations

import os

from dagster._core.run_coordinator.base import SubmitRunContext
from dagster._core.run_coordinator.sync_in_memory_run_coordinator import SyncInMemoryRunCoordinator
from dagster._core.storage.dagster_run import DagsterRun

# What a launched run's config holds beside the settings `seqvpr run` reads from its YAML.
LAUNCH_ONLY = ("execution", "loggers")
LAUNCH_RESOURCES = ("home", "io_manager")


def launch_problems(run_config: dict) -> list[str]:
    """The problems pipelines/validate.py finds in a launched run's config (empty: none)."""
    from pipelines.definitions import defs
    from pipelines.validate import ConfigError, validate

    config = {k: v for k, v in (run_config or {}).items() if k not in LAUNCH_ONLY}
    if isinstance(config.get("resources"), dict):
        config["resources"] = {k: v for k, v in config["resources"].items() if k not in LAUNCH_RESOURCES}
    home = ((run_config or {}).get("resources") or {}).get("home", {}).get("config", {}).get("home")
    try:
        validate(defs, config, home or os.environ.get("SEQVPR_HOME", "."))
    except ConfigError as err:
        return err.problems
    return []


class ValidatingRunCoordinator(SyncInMemoryRunCoordinator):
    """Dagster's default (immediate) run coordinator, refusing runs whose settings are out of range."""

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        problems = launch_problems(dict(run.run_config or {}))
        if not problems:
            return super().submit_run(context)
        self._instance.report_run_failed(run, "refused at launch, settings out of range:\n" + "\n".join(problems))
        return self._instance.get_run_by_id(run.run_id)

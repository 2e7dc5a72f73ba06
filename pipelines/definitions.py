"""The Dagster code location: every asset under `assets/` (with the code versions, data versions
and in-step checks of pipelines/versions.py), the jobs, resources and executors."""
from __future__ import annotations

import os
from pathlib import Path

from dagster import (AssetKey, Definitions, in_process_executor, load_asset_checks_from_package_module,
                     load_assets_from_package_module)

import assets
from pipelines.jobs import JOBS, benchmark_job
from pipelines.resources import BaselineBackbones, FrameEncoder, PipelineHome
from pipelines.versions import with_versions
from seqvpr.benchmarks import BENCHMARKS


def versioned_assets(package=assets) -> list:
    """Every asset of ``package``, each with its asset checks folded into its own step."""
    checks = load_asset_checks_from_package_module(package)
    return [with_versions(a, [c for c in checks if {k.asset_key for k in c.check_keys} == {a.key}])
            for a in load_assets_from_package_module(package)]


def current_split_settings(assets_defs: list, benchmark: str) -> dict | None:
    """Run config holding the settings `<benchmark>_split` was last built with, read from the
    instance of $DAGSTER_HOME when it exists (None: no instance, never built, or settings the
    current code no longer takes: the launchpad then opens with the defaults)."""
    from dagster import DagsterInstance
    from dagster._config import process_config

    instance_home = os.environ.get("DAGSTER_HOME")
    if not instance_home or not (Path(instance_home) / "history" / "runs.db").exists():
        return None  # never create an instance here: `seqvpr run` creates it under a lock
    key = AssetKey(f"{benchmark}_split")
    try:
        with DagsterInstance.get() as instance:
            event = instance.get_latest_materialization_event(key)
    except Exception:  # an unreadable instance must not stop the code location from loading
        return None
    settings = event.asset_materialization.metadata.get("settings") if event else None
    values = (settings.value or {}).get("config") if settings is not None else None
    asset = next(a for a in assets_defs if a.key == key)
    if not values or not process_config(asset.op.config_schema.config_type, values).success:
        return None
    return {"ops": {key.to_user_string(): {"config": values}}}


ASSETS = versioned_assets()
defs = Definitions(
    assets=ASSETS,
    jobs=JOBS + [benchmark_job(b, current_split_settings(ASSETS, b)) for b in BENCHMARKS],
    resources={"home": PipelineHome(), "encoder": FrameEncoder(), "baselines": BaselineBackbones()},
    # Steps run in the run's own process: no step pays for a process and a load of this code
    # location (seconds of imports) of its own. The Dask jobs keep their executor.
    executor=in_process_executor,
)

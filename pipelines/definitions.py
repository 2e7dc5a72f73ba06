"""The Dagster code location: every asset under `assets/` (with the code versions, data versions
and in-step checks of pipelines/versions.py), the jobs, resources and executors."""
from __future__ import annotations

from dagster import Definitions, load_asset_checks_from_package_module, load_assets_from_package_module

import assets
from pipelines.jobs import JOBS
from pipelines.resources import BaselineBackbones, FrameEncoder, PipelineHome
from pipelines.versions import with_versions


def versioned_assets(package=assets) -> list:
    """Every asset of ``package``, each with its asset checks folded into its own step."""
    checks = load_asset_checks_from_package_module(package)
    return [with_versions(a, [c for c in checks if {k.asset_key for k in c.check_keys} == {a.key}])
            for a in load_assets_from_package_module(package)]


defs = Definitions(
    assets=versioned_assets(),
    jobs=JOBS,
    resources={"home": PipelineHome(), "encoder": FrameEncoder(), "baselines": BaselineBackbones()},
)

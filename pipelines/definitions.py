"""The Dagster code location: every asset under `assets/`, the jobs, resources and executors."""
from __future__ import annotations

from dagster import Definitions, load_asset_checks_from_package_module, load_assets_from_package_module

import assets
from pipelines.jobs import JOBS
from pipelines.resources import BaselineBackbones, FrameEncoder, PipelineHome

defs = Definitions(
    assets=load_assets_from_package_module(assets),
    asset_checks=load_asset_checks_from_package_module(assets),
    jobs=JOBS,
    resources={"home": PipelineHome(), "encoder": FrameEncoder(), "baselines": BaselineBackbones()},
)

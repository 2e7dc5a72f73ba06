"""Jobs: `prepare_job` builds every dataset product; training and evaluation come later."""
from dagster import AssetSelection, define_asset_job

prepare_job = define_asset_job(
    "prepare_job",
    selection=AssetSelection.all(),
    description="Acquire, normalise, split, pair, embed and shard every dataset.",
)

JOBS = [prepare_job]

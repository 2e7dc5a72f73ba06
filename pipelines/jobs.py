"""Jobs.

- `<dataset>_frames_job` / `<dataset>_embeddings_job`: the heavy partitioned stages, one run per
  partition, executed by the Dask executor (a local cluster by default; point
  `execution.config.cluster.existing.address` at a lab's scheduler to scale out).
- `prepare_job`: every unpartitioned dataset product (raw data, frame tables, splits, struct files,
  shards); partitioned stages run through their jobs or backfills, or all at once with `seqvpr run`.
- `train_evaluate_job`: checkpoints and Table-II-like results tables from the shards.
"""
from dagster import AssetSelection, define_asset_job
from dagster_dask import dask_executor

from pipelines.partitions import PARTITIONS

HEAVY_STAGES = ("frames", "embeddings")

heavy_jobs = [
    define_asset_job(
        f"{dataset}_{stage}_job",
        selection=AssetSelection.assets(f"{dataset}_{stage}"),
        executor_def=dask_executor,
        description=f"{dataset} {stage}, one partition per run, on a Dask cluster.",
    )
    for dataset in PARTITIONS
    for stage in HEAVY_STAGES
]

prepare_job = define_asset_job(
    "prepare_job",
    selection=AssetSelection.all()
    - AssetSelection.assets(*[f"{d}_{s}" for d in PARTITIONS for s in HEAVY_STAGES])
    - AssetSelection.groups("training"),
    description="Unpartitioned dataset products: raw data, frame tables, splits, struct files, shards.",
)

train_evaluate_job = define_asset_job(
    "train_evaluate_job",
    selection=AssetSelection.groups("training"),
    description="Train a sequence model per benchmark from the shards and write the results tables.",
)

JOBS = [prepare_job, train_evaluate_job, *heavy_jobs]


def resolve_job(name: str):
    """Job by name from the code location; used to rebuild jobs inside Dask workers."""
    from pipelines.definitions import defs

    return defs.resolve_job_def(name)

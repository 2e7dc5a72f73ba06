"""Jobs of the code location; both doors (the UI's launchpad and `seqvpr run`) run these.

- `<dataset>_frames_job` / `<dataset>_embeddings_job`: the heavy partitioned stages, one partition
  per run; `<dataset>_<stage>_dask_job` runs the same on a Dask cluster (pipelines/dask.py; a
  local cluster by default, `execution.config.cluster.existing.address` for a lab's scheduler).
- `<benchmark>_checkpoint_job`: one model partition of a benchmark's checkpoints per run.
- `prepare_job`: every unpartitioned dataset product (raw data, frame tables, splits, struct files,
  shards, exports).
- `<benchmark>_job`: rebuild one benchmark from its split (split, struct files, shards, exports);
  its launchpad opens with the settings the split was last built with.
- `train_evaluate_job`: checkpoints and Table-II-like results tables from the shards.
"""
from dagster import AssetKey, AssetSelection, define_asset_job

from assets.training import trained_benchmarks
from pipelines.dask import dask_executor
from pipelines.partitions import PARTITIONS

HEAVY_STAGES = ("frames", "embeddings")  # the heavy stages (pipelines/kinds.py) partitioned per dataset
HEAVY = [f"{d}_{s}" for d in PARTITIONS for s in HEAVY_STAGES]
CHECKPOINTS = [f"{b}_checkpoint" for b in trained_benchmarks]  # partitioned by model

# every partitioned asset has its `<asset>_job` (what `seqvpr run` launches, job_name); the heavy
# ones also a Dask one
partitioned_jobs = [
    define_asset_job(f"{name}_job", selection=AssetSelection.assets(name),
                     description=f"{name.replace('_', ' ')}, one partition per run.")
    for name in [*HEAVY, *CHECKPOINTS]
] + [
    define_asset_job(f"{name}_dask_job", selection=AssetSelection.assets(name), executor_def=dask_executor,
                     description=f"{name.replace('_', ' ')}, one partition per run, on a Dask cluster.")
    for name in HEAVY
]

DATASET_PRODUCTS = AssetSelection.all() - AssetSelection.assets(*HEAVY) - AssetSelection.groups("training")

prepare_job = define_asset_job(
    "prepare_job",
    selection=DATASET_PRODUCTS,
    description="Unpartitioned dataset products: raw data, frame tables, splits, struct files, shards, exports.",
)

train_evaluate_job = define_asset_job(
    "train_evaluate_job",
    selection=AssetSelection.groups("training"),
    description="Train a sequence model per benchmark from the shards and write the results tables.",
)


def benchmark_selection(benchmark: str) -> AssetSelection:
    """The benchmark's split and the benchmark's own dataset products downstream of it."""
    from seqvpr.exports import FORMATS, supported

    exports = [f"{benchmark}_{c.replace('-', '_')}_export" for c in FORMATS if supported(c, benchmark)]
    return AssetSelection.assets(*[AssetKey(f"{benchmark}_{s}") for s in ("split", "struct_files", "shards")],
                                 *map(AssetKey, exports))


def benchmark_job(benchmark: str, config: dict | None = None):
    """``config``: the launchpad's starting run config (the split's current settings)."""
    return define_asset_job(
        f"{benchmark}_job", selection=benchmark_selection(benchmark), config=config,
        description=f"Rebuild {benchmark} from its split: split, struct files, shards and exports "
                    "(frames and embeddings as they are).")


JOBS = [prepare_job, train_evaluate_job, *partitioned_jobs]


def job_name(asset: str, partitioned: bool, group: str | None, dask: bool = False) -> str:
    """The job through which `seqvpr run` materialises ``asset``."""
    if partitioned:
        return f"{asset}_dask_job" if dask else f"{asset}_job"
    return "train_evaluate_job" if group == "training" else "prepare_job"


def resolve_job(name: str):
    """Job by name from the code location; used to rebuild jobs inside worker processes."""
    from pipelines.definitions import defs

    return defs.resolve_job_def(name)

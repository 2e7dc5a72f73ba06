"""Normalised frames (partitioned per traversal / map / season) and the per-dataset frame tables."""

import importlib
import time
from collections import Counter
from typing import Annotated

import pyarrow.compute as pc
from dagster import (
    AssetExecutionContext,
    AssetKey,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import AfterValidator, Field

from pipelines.partitions import PARTITIONS
from assets.plots import png_markdown, pyplot
from pipelines.resources import PipelineHome, expand_folder, name_in
from seqvpr.datasets.catalog import CAMERA_MODELS, MAX_INS_GAP_S
from seqvpr.datasets.frames import merge_tables, remove_stale_frames, write_table
from seqvpr.layout import DATASETS


MODELS_DIR = "the models/ folder of a robotcar-dataset-sdk checkout"


class NormaliseConfig(Config):
    """Model input size: frames are resized once here, so embedding never re-decodes originals.

    RobotCar only: ``camera`` (stereo ``left``, as seqNet and the Oxford benchmarks, or ``centre``)
    and ``models_dir``, the ``models/`` folder of a robotcar-dataset-sdk checkout (empty: ``models``
    inside the raw folder, else ``robotcar-dataset-sdk/models`` beside it); ``max_ins_gap_s``: a frame
    between two usable INS rows further apart than this is dropped and counted (``ins_gap``), see
    seqvpr/datasets/robotcar.py for why 1 s. Ranges: ``size`` 8..4096 px (an 8 px frame is the least
    that still holds a place; 4096 px is beyond every camera of the three datasets), the gap above 0
    and at most 60 s."""

    size: int = Field(default=384, ge=8, le=4096)
    camera: name_in("stereo camera", CAMERA_MODELS) = "left"
    models_dir: Annotated[str, AfterValidator(lambda value: expand_folder(value, MODELS_DIR))] = ""
    max_ins_gap_s: float = Field(default=MAX_INS_GAP_S, gt=0, le=60, allow_inf_nan=False)


def trajectory_plot(table) -> str:
    """Markdown with an embedded PNG of every traversal's UTM trajectory."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4), dpi=80)
    for traversal in sorted(set(table.column("traversal").to_pylist())):
        rows = table.filter(pc.equal(table.column("traversal"), traversal))
        ax.plot(rows.column("easting").to_numpy(), rows.column("northing").to_numpy(), ".", ms=2, label=traversal)
    ax.set_xlabel("easting [m]")
    ax.set_ylabel("northing [m]")
    ax.set_aspect("equal", adjustable="datalim")
    if table.num_rows:
        ax.legend(fontsize=5, markerscale=3)
    return png_markdown(fig, "trajectories")


def build_frame_assets(dataset: str):
    """The partitioned `<dataset>_frames` asset and the merged `<dataset>_frame_table` asset."""
    partitions = PARTITIONS[dataset]

    @asset(
        name=f"{dataset}_frames",
        group_name="frames",
        partitions_def=partitions,
        deps=[AssetKey(f"{dataset}_raw")],
        description=f"Normalised {dataset} frames and the partition's frame table.",
    )
    def frames_asset(context: AssetExecutionContext, config: NormaliseConfig, home: PipelineHome) -> MaterializeResult:
        layout = home.layout()
        partition = context.partition_key
        normaliser = importlib.import_module(f"seqvpr.datasets.{dataset}")
        context.log.info(f"normalising {dataset} partition {partition} at {config.size}px")
        start = time.perf_counter()
        options = {"camera": config.camera, "models_dir": config.models_dir,
                   "max_ins_gap_s": config.max_ins_gap_s} if dataset == "robotcar" else {}
        result = normaliser.normalise_partition(
            layout.raw(dataset), partition, layout.frames(dataset, partition), layout.data_root, size=config.size, **options
        )
        write_table(result.table, layout.partition_table(dataset, partition))
        stale = remove_stale_frames(layout.frames(dataset, partition), result.table, layout.data_root)
        if stale:
            context.log.info(f"{dataset}/{partition}: removed {stale} frame file(s) of an earlier run that this one did not write")
        seconds = time.perf_counter() - start
        conditions = Counter(result.table.column("condition").to_pylist())
        context.log.info(f"{dataset}/{partition}: {result.table.num_rows} frames in {seconds:.1f}s, dropped {result.dropped}")
        for note in result.notes:
            context.log.warning(f"{dataset}/{partition}: {note}")
        return MaterializeResult(
            metadata={
                "frames": result.table.num_rows,
                "traversals": len(set(result.table.column("traversal").to_pylist())),
                "per_condition": MetadataValue.json(dict(sorted(conditions.items()))),
                "dropped": MetadataValue.json(dict(sorted(result.dropped.items()))),
                "notes": MetadataValue.json(result.notes),
                "stale_frames_removed": stale,
                "frames_per_second": round(result.table.num_rows / max(seconds, 1e-9), 2),
                "table": MetadataValue.path(str(layout.partition_table(dataset, partition))),
                "frames_dir": MetadataValue.path(str(layout.frames(dataset, partition))),
            }
        )

    @asset(
        name=f"{dataset}_frame_table",
        group_name="frames",
        deps=[frames_asset],
        description=f"The {dataset} frame table (schemas/frame_table.py), all partitions merged.",
    )
    def frame_table_asset(context: AssetExecutionContext, home: PipelineHome) -> MaterializeResult:
        layout = home.layout()
        paths = [layout.partition_table(dataset, p) for p in partitions.get_partition_keys()]
        present = [p for p in paths if p.exists()]
        missing = sorted(p.stem for p in paths if not p.exists())
        if missing:
            context.log.warning(f"{dataset}: partitions not normalised yet: {missing}")
        table = merge_tables(present)
        write_table(table, layout.frame_table(dataset))
        per_traversal = Counter(table.column("traversal").to_pylist())
        per_condition = Counter(table.column("condition").to_pylist())
        return MaterializeResult(
            metadata={
                "frames": table.num_rows,
                "per_traversal": MetadataValue.json(dict(sorted(per_traversal.items()))),
                "per_condition": MetadataValue.json(dict(sorted(per_condition.items()))),
                "missing_partitions": MetadataValue.json(missing),
                "trajectories": MetadataValue.md(trajectory_plot(table)),
                "path": MetadataValue.path(str(layout.frame_table(dataset))),
            }
        )

    return [frames_asset, frame_table_asset]


frame_assets = [a for dataset in DATASETS for a in build_frame_assets(dataset)]

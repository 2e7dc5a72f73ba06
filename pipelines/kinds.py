"""What each asset is, in one table: the kind badges the Dagster UI shows beside it (Dagster's
asset `kinds`, also `--select kind:parquet`) and the `heavy` tag of the stages that take a process
per partition and every core it is given (`--select tag:heavy`).

An asset's product is the end of its name (`robotcar_frame_table` -> `frame_table`), the same for
every dataset or benchmark; `pipelines.versions.with_versions` applies the table when the code
location is built, so the asset modules declare none of it.
"""
from __future__ import annotations

# product -> kinds: what it is made with or written as (file formats as the consumers know them;
# seqNet's and Adapt-STFormer's struct files are MATLAB files named .db)
KINDS = {
    "raw": ("dataset",),
    "frames": ("opencv", "tiff"),
    "frame_table": ("parquet",),
    "split": ("parquet", "numpy"),
    "struct_files": ("matlab",),
    "embeddings": ("pytorch", "numpy"),
    "shards": ("webdataset",),
    "seqnet_export": ("matlab", "numpy"),
    "adapt_stformer_export": ("matlab",),
    "gsv_export": ("jpeg",),
    "frame_descriptors": ("pytorch", "numpy"),
    "checkpoint": ("pytorch",),
    "ablation_checkpoint": ("pytorch",),
    "results": ("pytorch", "markdown"),
}
HEAVY = ("frames", "embeddings", "shards", "frame_descriptors")


def product(asset_name: str) -> str:
    """The longest product of KINDS that ends ``asset_name``; KeyError for a name with none."""
    matches = [p for p in KINDS if asset_name.endswith(f"_{p}")]
    if not matches:
        raise KeyError(f"{asset_name}: no product of pipelines/kinds.py ends this asset's name; add it to KINDS")
    return max(matches, key=len)


def asset_kinds(asset_name: str) -> set[str]:
    return set(KINDS[product(asset_name)])


def asset_tags(asset_name: str) -> dict[str, str]:
    return {"heavy": ""} if product(asset_name) in HEAVY else {}

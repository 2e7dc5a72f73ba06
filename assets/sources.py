"""The raw datasets (`robotcar_raw`, `nuscenes_raw`, `nordland_raw`): synthetic, a local copy, or downloads.

Thin wrappers over `seqvpr.acquire.acquire_dataset`; the dataset lands at `layout.raw(dataset)` in
its exact distributed format, archives being downloaded go to `layout.downloads(dataset)`.
"""

from pathlib import Path
from typing import Literal

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset

from pydantic import Field, model_validator

from pipelines.resources import PathSetting, PipelineHome
from seqvpr.acquire import acquire_dataset, is_archive
from seqvpr.layout import DATASETS
from seqvpr.synthetic import check_scale


class SourceConfig(Config):
    """Where the raw dataset comes from.

    source: "synthetic" (default: a generated mini-world), "local" (`path` = your copy, either
    unpacked or a folder of the distributed archives) or "url" (`manifest` = JSON list of
    {url, filename, size, sha256}; resumable, checksummed downloads). seed and scale (the
    generator's size parameters, e.g. {"frames_per_traversal": 100}) apply to "synthetic".
    """

    source: Literal["synthetic", "local", "url"] = "synthetic"
    path: PathSetting = ""
    manifest: PathSetting = ""
    seed: int = Field(default=0, ge=0)
    scale: dict[str, int] = {}

    @model_validator(mode="after")
    def _source_has_its_path(self):
        """local needs a folder (an archive file is named as such: point at the folder holding it),
        url a manifest file."""
        if self.source == "local":
            path = Path(self.path)
            if not self.path:
                raise ValueError("source local needs path: the folder holding your copy of the dataset")
            if path.is_file():
                raise ValueError(f"path {path} is a file; point path at the folder holding it "
                                 f"({'its archives are extracted from there' if is_archive(path) else 'a dataset folder'})")
        if self.source == "url" and not self.manifest:
            raise ValueError("source url needs manifest: a JSON list of {url, filename, size, sha256}")
        return self


def source_config_class(dataset: str) -> type[SourceConfig]:
    """SourceConfig whose ``scale`` may hold only the parameters of ``dataset``'s generator."""

    def _scale_known(config):
        check_scale(dataset, config.scale)
        return config

    return type(f"{dataset.title()}SourceConfig", (SourceConfig,), {
        "__module__": __name__, "__doc__": SourceConfig.__doc__,
        "_scale_known": model_validator(mode="after")(_scale_known)})


def build_source_asset(dataset: str):
    DatasetSourceConfig = source_config_class(dataset)

    @asset(
        name=f"{dataset}_raw",
        group_name="sources",
        description=f"The {dataset} dataset in its distributed on-disk format (synthetic, local copy or download).",
    )
    def source_asset(context: AssetExecutionContext, config: DatasetSourceConfig, home: PipelineHome) -> MaterializeResult:
        layout = home.layout()
        summary = acquire_dataset(
            dataset,
            raw=layout.raw(dataset),
            downloads=layout.downloads(dataset),
            truth=layout.data_root / "truth" / dataset,
            source=config.source,
            path=config.path,
            manifest=config.manifest,
            seed=config.seed,
            scale=config.scale,
            log_info=context.log.info,
        )
        metadata = {key: value for key, value in summary.items() if key != "dataset"}
        metadata["path"] = MetadataValue.path(str(layout.raw(dataset)))
        return MaterializeResult(metadata=metadata)

    return source_asset


source_assets = [build_source_asset(dataset) for dataset in DATASETS]

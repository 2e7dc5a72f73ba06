"""Where every stage reads and writes. Plain paths, no Dagster: the Dagster resource wraps this."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DATASETS = ("robotcar", "nuscenes", "nordland")


@dataclass(frozen=True)
class Layout:
    """Folder layout of one pipeline home.

    data_root/raw/<dataset>/            the dataset as distributed (synthetic or real, same format)
    data_root/downloads/<dataset>/      archives being downloaded (resumable)
    data_root/frames/<dataset>/<part>/  normalised frames (PNG, model input size)
    data_root/tables/<dataset>/<part>.parquet  per-partition frame tables
    data_root/tables/<dataset>.parquet  the dataset's frame table
    data_root/splits/<benchmark>.parquet
    data_root/embeddings/<model_id>/    content-addressed embedding cache
    data_root/features/<benchmark>/<backbone>/  published frame backbones' descriptors per split
    struct_root/<benchmark>/            seqNet struct files, seqBounds, splitInds
    shard_root/<benchmark>/<split>/     WebDataset shards
    <home>/exports/<consumer>/<benchmark>/  drop-in folders for other code bases (seqvpr.exports)
    """

    data_root: Path
    struct_root: Path
    shard_root: Path

    @classmethod
    def from_home(cls, home: str | Path | None = None) -> "Layout":
        home = Path(home or os.environ.get("SEQVPR_HOME", ".")).resolve()
        return cls(home / "data", home / "struct_files", home / "shards")

    def raw(self, dataset: str) -> Path:
        return self.data_root / "raw" / dataset

    def downloads(self, dataset: str) -> Path:
        return self.data_root / "downloads" / dataset

    def frames(self, dataset: str, partition: str) -> Path:
        return self.data_root / "frames" / dataset / partition

    def partition_table(self, dataset: str, partition: str) -> Path:
        return self.data_root / "tables" / dataset / f"{partition}.parquet"

    def frame_table(self, dataset: str) -> Path:
        return self.data_root / "tables" / f"{dataset}.parquet"

    def split_table(self, benchmark: str) -> Path:
        return self.data_root / "splits" / f"{benchmark}.parquet"

    def embeddings(self, model_id: str) -> Path:
        return self.data_root / "embeddings" / model_id

    def frame_descriptors(self, benchmark: str, backbone: str) -> Path:
        return self.data_root / "features" / benchmark / backbone

    def struct_files(self, benchmark: str) -> Path:
        return self.struct_root / benchmark

    def shards(self, benchmark: str, split: str) -> Path:
        return self.shard_root / benchmark / split

    @property
    def export_root(self) -> Path:
        return self.data_root.parent / "exports"

    def exports(self, consumer: str, benchmark: str) -> Path:
        return self.export_root / consumer / benchmark

    def models(self) -> Path:
        return self.data_root / "models"

    def results(self) -> Path:
        return self.data_root / "results"

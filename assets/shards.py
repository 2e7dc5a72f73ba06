"""WebDataset shards per benchmark split, from the split tables and the embedding cache."""
import json
import tarfile

import numpy as np
from pydantic import Field
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from assets.embeddings import embedding_index_path
from assets.splits import filled_splits
from pipelines.partitions import PARTITIONS
from pipelines.resources import FrameEncoder, PipelineHome
from schemas.shard import MANIFEST
from schemas.split_table import SPLITS
from seqvpr.atomic import atomic_remove
from seqvpr.benchmarks import BENCHMARKS
from seqvpr.embed.cct import weights_identity
from seqvpr.embed.chunks import load_descriptor, load_tokens
from seqvpr.errors import DataError
from seqvpr.shards import Sample, encoder_record, verify_manifest, write_split_shards
from seqvpr.splits import negatives_path, read_split, split_settings


class ShardConfig(Config):
    """Shard sizes: a shard closes at `max_samples` samples or before it passes `max_bytes` (a sample
    is about 443 KB: 576 x 384 float16 tokens), and every split has at least `min_shards` shards
    (when it has that many samples), so DataLoader workers each get shards to read."""

    max_samples: int = Field(default=256, ge=1)
    max_bytes: int = Field(default=1 << 30, ge=1)
    min_shards: int = Field(default=8, ge=1)


def shard_provenance(encoder: FrameEncoder, bench, code_version: str | None = None) -> dict:
    """The manifest's provenance under these settings: "encoder" (what the embedding cache of
    `encoder.model_id()` holds), "split_settings" and, when given, "code_version" (the shards
    asset's Dagster code version: a digest of its module and the project modules it runs,
    `pipelines/versions.py`)."""
    provenance = {"encoder": encoder_record(weights_identity(encoder.checkpoint or None, encoder.seed),
                                            encoder.num_layers, encoder.resolved_freeze_te()),
                  "split_settings": split_settings(bench)}
    if code_version is not None:
        provenance["code_version"] = code_version
    return provenance


def _frame_digests(layout, model_id: str, dataset: str) -> dict[str, str]:
    digests = {}
    for partition in PARTITIONS[dataset].get_partition_keys():
        path = embedding_index_path(layout, model_id, dataset, partition)
        if path.exists():
            digests.update(json.loads(path.read_text()))
    return digests


def _samples(rows, digests, cache, index_path):
    for row in rows:
        digest = digests.get(row["frame_id"])
        if digest is None:
            raise DataError(index_path, f"frame {row['frame_id']} has no embedding: materialise the embeddings first")
        yield Sample(key=row["frame_id"], tokens=load_tokens(cache, digest), descriptor=load_descriptor(cache, digest), row=row)


def build_shard_assets(benchmark: str):
    dataset = BENCHMARKS[benchmark].dataset

    @asset(
        name=f"{benchmark}_shards",
        group_name="shards",
        deps=[AssetKey(f"{benchmark}_split"), AssetKey(f"{dataset}_embeddings")],
        description=f"WebDataset shards of every {benchmark} split (schemas/shard.py).",
    )
    def shards_asset(context: AssetExecutionContext, config: ShardConfig, home: PipelineHome,
                     encoder: FrameEncoder) -> MaterializeResult:
        layout = home.layout()
        table, bench = read_split(layout.split_table(benchmark))
        model_id = encoder.model_id()
        digests = _frame_digests(layout, model_id, dataset)
        cache = layout.embeddings(model_id)
        df = table.to_pandas()
        metadata = {}
        filled = filled_splits(table)
        provenance = shard_provenance(encoder, bench, context.assets_def.code_versions_by_key.get(context.asset_key))
        for split in SPLITS:
            if split not in filled:  # a split the settings emptied: its old shards must not pass as current
                if atomic_remove(layout.shards(benchmark, split)):
                    context.log.warning(f"{benchmark}/{split}: split is empty now; removed its old shards")
                continue
            part = df[df["split"] == split]
            part = part.sort_values(["role", "order"], key=lambda c: c.map({"db": 0, "query": 1}) if c.name == "role" else c)
            rows = [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items()} for r in part.to_dict("records")]
            manifest = write_split_shards(layout.shards(benchmark, split), benchmark, split,
                                          _samples(rows, digests, cache, layout.embeddings(model_id) / "index" / dataset),
                                          config.max_samples, config.max_bytes, total=len(rows), min_shards=config.min_shards,
                                          provenance=provenance,
                                          negatives=np.load(negatives_path(layout.split_table(benchmark), split)))
            context.log.info(f"{benchmark}/{split}: {manifest['samples']} samples in {len(manifest['shards'])} shard(s)")
            metadata[f"{split}_samples"] = manifest["samples"]
            metadata[f"{split}_shards"] = len(manifest["shards"])
            metadata[f"{split}_bytes"] = sum(s["bytes"] for s in manifest["shards"])
        metadata["path"] = MetadataValue.path(str(layout.shard_root / benchmark))
        metadata["model_id"] = model_id
        return MaterializeResult(metadata=metadata)

    @asset_check(asset=shards_asset, name="one_sample_per_frame", description="Every split frame has exactly one sample.")
    def one_sample_check(home: PipelineHome) -> AssetCheckResult:
        layout = home.layout()
        table, _ = read_split(layout.split_table(benchmark))
        df = table.to_pandas()
        filled = filled_splits(table)
        problems = [f"{split}: shards left from a run whose settings did not empty the split"
                    for split in SPLITS if split not in filled and layout.shards(benchmark, split).exists()]
        for split in filled:
            folder = layout.shards(benchmark, split)
            keys = []
            for shard in json.loads((folder / MANIFEST).read_text())["shards"]:
                with tarfile.open(folder / shard["name"]) as tar:
                    keys += [m.name.split(".", 1)[0] for m in tar.getmembers() if m.name.endswith(".json")]
            expected = df[df["split"] == split]["frame_id"].tolist()
            if sorted(keys) != sorted(expected):
                problems.append(f"{split}: {len(keys)} samples for {len(expected)} frames")
        return AssetCheckResult(passed=not problems, metadata={"problems": MetadataValue.json(problems)})

    @asset_check(asset=shards_asset, name="manifest_hashes_match", description="Shard SHA-256s equal the manifest's.")
    def manifest_check(home: PipelineHome) -> AssetCheckResult:
        layout = home.layout()
        table, _ = read_split(layout.split_table(benchmark))
        problems = [p for split in filled_splits(table) for p in verify_manifest(layout.shards(benchmark, split))]
        return AssetCheckResult(passed=not problems, severity=AssetCheckSeverity.ERROR,
                                metadata={"problems": MetadataValue.json(problems)})

    @asset_check(asset=shards_asset, name="manifest_matches_settings",
                 description="Each split's manifest names the encoder and split settings of this run.")
    def settings_check(home: PipelineHome, encoder: FrameEncoder) -> AssetCheckResult:
        layout = home.layout()
        table, bench = read_split(layout.split_table(benchmark))
        expected = shard_provenance(encoder, bench)
        problems = [f"{split}: manifest {key} differs from this run's"
                    for split in filled_splits(table)
                    for key, value in expected.items()
                    if json.loads((layout.shards(benchmark, split) / MANIFEST).read_text()).get(key) != json.loads(json.dumps(value))]
        return AssetCheckResult(passed=not problems, severity=AssetCheckSeverity.ERROR,
                                metadata={"problems": MetadataValue.json(problems)})

    return [shards_asset, one_sample_check, manifest_check, settings_check]


shard_assets_and_checks = [x for benchmark in BENCHMARKS for x in build_shard_assets(benchmark)]

"""CCT384 frame embeddings, partitioned like the frames, through the content-addressed cache
(seqvpr.embed.embed: chunk files of token maps indexed by frame digest)."""
import json

import pyarrow.parquet as pq
from dagster import AssetExecutionContext, AssetKey, MaterializeResult, MetadataValue, asset

from pipelines.partitions import PARTITIONS
from pipelines.resources import FrameEncoder, PipelineHome
from seqvpr.atomic import atomic_write_text
from seqvpr.benchmarks import BENCHMARKS

DATASET_BENCHMARKS = {d: sorted(b for b, bench in BENCHMARKS.items() if bench.dataset == d) for d in PARTITIONS}


def embedding_index_path(layout, model_id: str, dataset: str, partition: str):
    """frame_id -> cache digest of one partition's embedded frames."""
    return layout.embeddings(model_id) / "index" / dataset / f"{partition}.json"


def wanted_frame_ids(layout, dataset: str) -> set[str] | None:
    """Frames used by any split of the dataset; None when no split exists yet (embed everything)."""
    tables = [layout.split_table(b) for b in DATASET_BENCHMARKS[dataset] if layout.split_table(b).exists()]
    if not tables:
        return None
    return {fid for t in tables for fid in pq.read_table(t, columns=["frame_id"]).column("frame_id").to_pylist()}


def build_embedding_asset(dataset: str):
    @asset(
        name=f"{dataset}_embeddings",
        group_name="embeddings",
        partitions_def=PARTITIONS[dataset],
        deps=[AssetKey(f"{dataset}_frames"), *[AssetKey(f"{b}_split") for b in DATASET_BENCHMARKS[dataset]]],
        description=f"CCT384 token maps after the frozen blocks of the {dataset} frames used by its splits, and the "
                    "pooled descriptors of the final tokens (cached by content).",
    )
    def embeddings_asset(context: AssetExecutionContext, home: PipelineHome, encoder: FrameEncoder) -> MaterializeResult:
        layout = home.layout()
        partition = context.partition_key
        table = pq.read_table(layout.partition_table(dataset, partition), columns=["frame_id", "image_path"])
        wanted = wanted_frame_ids(layout, dataset)
        rows = [(f, p) for f, p in zip(table.column("frame_id").to_pylist(), table.column("image_path").to_pylist())
                if wanted is None or f in wanted]
        embedder = encoder.embedder()
        if embedder.weights.startswith("random-init"):
            context.log.warning("no CCT checkpoint configured: embeddings use seeded random weights")
        cache = layout.embeddings(embedder.model_id)

        def progress(done, total):
            if done == total or done % (encoder.batch_size * 10) == 0:
                context.log.info(f"{dataset}/{partition}: embedded {done}/{total} new frames")

        digests, stats = embedder.embed_files([layout.data_root / p for _, p in rows], cache, encoder.batch_size, progress)
        index = dict(zip((f for f, _ in rows), digests))
        atomic_write_text(embedding_index_path(layout, embedder.model_id, dataset, partition), json.dumps(index, sort_keys=True))
        return MaterializeResult(metadata={
            "frames": len(rows),
            "embedded": stats.embedded,
            "cache_hits": stats.cache_hits,
            "frames_per_second": round(stats.frames_per_second, 2),
            "chunks_written": stats.chunks,
            "decoding_workers": stats.workers,
            "precision": embedder.precision,
            "weights": embedder.weights if embedder.weights.startswith("random-init") else f"sha256:{embedder.weights}",
            "model_id": embedder.model_id,
            "freeze_te": embedder.freeze_te,
            "frozen_blocks": f"{embedder.cut} of {embedder.model.num_layers}",
            "device": str(embedder.device),
            "cache": MetadataValue.path(str(cache)),
            "index": MetadataValue.path(str(embedding_index_path(layout, embedder.model_id, dataset, partition))),
        })

    return embeddings_asset


embedding_assets = [build_embedding_asset(dataset) for dataset in PARTITIONS]

"""Per-frame descriptors of every split of a benchmark by the baselines' published frame backbones
(JIST: CosPlace ResNet-18 + GeM; SeqNet and OptiCorNet: Patch-NetVLAD VGG16 + NetVLAD + WPCA), for
training and evaluation when the `baselines` resource selects published features. Under pooled CCT
features (the CPU default) it writes nothing, so the results assets can always depend on it."""
from dagster import AssetExecutionContext, AssetKey, MaterializeResult, MetadataValue, asset

from pipelines.resources import BaselineBackbones, PipelineHome
from schemas.split_table import SPLITS
from seqvpr.benchmarks import BENCHMARKS
from seqvpr.embed.frame_descriptors import split_frames, write_frame_descriptors
from seqvpr.models import MODEL_BACKBONE

PUBLISHED_BACKBONES = sorted(set(MODEL_BACKBONE.values()) - {"cct384"})


def build_frame_descriptor_asset(benchmark: str):
    @asset(
        name=f"{benchmark}_frame_descriptors",
        group_name="training",
        deps=[AssetKey(f"{benchmark}_shards")],
        description=f"Frame descriptors of every {benchmark} split by the published backbones of JIST, SeqNet and "
                    "OptiCorNet (nothing under pooled CCT features).",
    )
    def frame_descriptors_asset(context: AssetExecutionContext, home: PipelineHome,
                                baselines: BaselineBackbones) -> MaterializeResult:
        if not baselines.published():
            context.log.info(f"{benchmark}: baseline features are pooled CCT tokens; no frame descriptors to compute")
            return MaterializeResult(metadata={"baseline_features": "pooled_cct"})
        layout = home.layout()
        splits = {split: split_frames(layout.shards(benchmark, split), layout.data_root)
                  for split in SPLITS if layout.shards(benchmark, split).exists()}
        metadata = {"baseline_features": "published"}
        for backbone in PUBLISHED_BACKBONES:
            def progress(split, done, total, backbone=backbone):
                if done == total or done % (baselines.batch_size * 10) == 0:
                    context.log.info(f"{benchmark}/{split}: {backbone} described {done}/{total} frames")

            written = write_frame_descriptors(layout.frame_descriptors(benchmark, backbone), splits, backbone,
                                              baselines.checkpoint(backbone), baselines.seed, baselines.device,
                                              baselines.batch_size, progress)
            weights = written["weights"]
            metadata[f"{backbone}_weights"] = weights if weights.startswith("random-init") else f"sha256:{weights}"
            metadata[f"{backbone}_splits"] = MetadataValue.json(written["splits"])
        metadata["frames"] = sum(len(frames.frame_ids) for frames in splits.values())
        metadata["path"] = MetadataValue.path(str(layout.frame_descriptors(benchmark, PUBLISHED_BACKBONES[0]).parent))
        return MaterializeResult(metadata=metadata)

    return frame_descriptors_asset


frame_descriptor_assets = [build_frame_descriptor_asset(benchmark) for benchmark in BENCHMARKS]

"""Drop-in exports for seqNet, Adapt-STformer and the VPR-datasets layout: one asset per benchmark
and format (seqvpr/exports/), `<benchmark>_<format>_export`, for every benchmark a format maps."""
from dagster import AssetExecutionContext, AssetKey, Config, MaterializeResult, MetadataValue, asset

from pipelines.resources import PipelineHome
from seqvpr.benchmarks import BENCHMARKS
from seqvpr.exports import FORMATS, export, supported


DESCRIPTIONS = {
    "seqnet": "seqNet working directory (structFiles/, data/descData/<descType>/): run seqNet's main.py inside it.",
    "adapt-stformer": "Adapt-STformer structFiles (and optional raw_384 input arrays) by the names its get_datasets.py opens.",
    "gsv": "VPR-datasets-downloader layout images/<split>/{database,queries}/@...@.jpg for VPR-methods-evaluation.",
}


class AdaptStformerExportConfig(Config):
    """raw_inputs: also write the raw_384 input arrays (float32 N x 3 x 384 x 384, 1.7 MB a frame).
    Without them the authors' loader cannot load the export (export.json says so first)."""

    raw_inputs: bool = False


def _result(context: AssetExecutionContext, folder, info: dict) -> MaterializeResult:
    context.log.info(f"{folder}: {info['commands']}")
    for key in ("cannot_load_because", "to_make_it_loadable", "path_warning", "sparse_note"):
        if info.get(key):
            context.log.warning(f"{folder}: {key.replace('_', ' ')}: {info[key]}")
    return MaterializeResult(metadata={
        "path": MetadataValue.path(str(folder)),
        "consumer": info["consumer"],
        "consumer_can_load": info.get("consumer_can_load", True),
        "commands": MetadataValue.json(info["commands"]),
        "positive_mismatches": MetadataValue.json(info["positive_mismatches"]),
    })


def build_export_asset(consumer: str, benchmark: str):
    key = f"{benchmark}_{consumer.replace('-', '_')}_export"
    doc = f"{benchmark}: {DESCRIPTIONS[consumer]} export.json names the commands."

    if consumer == "seqnet":
        @asset(name=key, group_name="exports", deps=[AssetKey(f"{benchmark}_shards")], description=doc)
        def seqnet_export(context: AssetExecutionContext, home: PipelineHome) -> MaterializeResult:
            # descType: the encoder recorded in the shards' manifests (seqvpr.exports.common.shard_model_id)
            return _result(context, *export(home.layout(), consumer, benchmark))

        return seqnet_export

    if consumer == "adapt-stformer":
        @asset(name=key, group_name="exports", deps=[AssetKey(f"{benchmark}_split")], description=doc)
        def adapt_stformer_export(context: AssetExecutionContext, config: AdaptStformerExportConfig,
                                  home: PipelineHome) -> MaterializeResult:
            return _result(context, *export(home.layout(), consumer, benchmark, raw_inputs=config.raw_inputs))

        return adapt_stformer_export

    @asset(name=key, group_name="exports", deps=[AssetKey(f"{benchmark}_split")], description=doc)
    def gsv_export(context: AssetExecutionContext, home: PipelineHome) -> MaterializeResult:
        return _result(context, *export(home.layout(), consumer, benchmark))

    return gsv_export


export_assets = [build_export_asset(c, b) for c in FORMATS for b in BENCHMARKS if supported(c, b)]

"""Training and evaluation from the shards: a checkpoint per benchmark with a train split, and a
Table-II-like results table per benchmark (nuScenes is evaluated with the Oxford-easy model, as in
the Adapt-STformer paper)."""
import json

import numpy as np
from dagster import AssetExecutionContext, AssetKey, Config, MaterializeResult, MetadataValue, asset

from assets.plots import png_markdown, pyplot
from pipelines.resources import PipelineHome
from seqvpr.atomic import atomic_write_text
from seqvpr.evaluate import evaluate_models, results_markdown
from seqvpr.splits import BENCHMARKS, negatives_path
from seqvpr.train import TrainConfig, load_checkpoint, load_split_data, save_checkpoint, train

TRAINED_ON = {"nordland": "nordland", "oxford_easy": "oxford_easy", "oxford_hard": "oxford_hard",
              "oxford_seqnet": "oxford_seqnet", "nuscenes": "oxford_easy"}


class TrainingConfig(Config):
    """Adapt-STformer recipe (Adam 1e-5, margin 0.1, 5 hardest negatives, patience 5); the
    defaults keep the synthetic run short: raise epochs and queries_per_epoch for real data."""

    model: str = "adapt_stformer"
    seq_len: int = 5
    epochs: int = 2
    lr: float = 1e-5
    margin: float = 0.1
    queries_per_epoch: int = 16
    patience: int = 5
    seed: int = 0


class EvaluationConfig(Config):
    models: list[str] = ["adapt_stformer", "seqvlad", "stformer", "seqnet", "jist", "opticornet"]
    lengths: list[int] = [1, 3, 5]
    pca_dim: int = 0


def _split_data(layout, benchmark: str, split: str):
    return load_split_data(layout.shards(benchmark, split), negatives_path(layout.split_table(benchmark), split))


def _loss_plot(losses: list[float]) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4, 2.5), dpi=80)
    ax.plot(losses)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    return png_markdown(fig, "loss")


def build_checkpoint_asset(benchmark: str):
    @asset(
        name=f"{benchmark}_checkpoint",
        group_name="training",
        deps=[AssetKey(f"{benchmark}_shards")],
        description=f"A sequence model trained on the {benchmark} train split (val: val split, else test).",
    )
    def checkpoint_asset(context: AssetExecutionContext, config: TrainingConfig, home: PipelineHome) -> MaterializeResult:
        layout = home.layout()
        has_val = layout.shards(benchmark, "val").exists()
        train_data = _split_data(layout, benchmark, "train")
        val_data = _split_data(layout, benchmark, "val" if has_val else "test")
        cfg = TrainConfig(**config.model_dump())
        result = train(cfg, train_data, val_data, log=context.log.info)
        path = layout.models() / benchmark / f"{cfg.model}.pt"
        meta = {**config.model_dump(), "benchmark": benchmark, "best_val_recall5": result.best_recall5,
                "initial_val_recall": result.initial_recall, "history": result.history}
        save_checkpoint(path, cfg.model, result.state_dict, meta)
        return MaterializeResult(metadata={
            "path": MetadataValue.path(str(path)),
            "model": cfg.model,
            "untrained_val_recall5": result.initial_recall[5],
            "best_val_recall5": result.best_recall5,
            "epochs_run": len(result.history),
            "loss_curve": MetadataValue.md(_loss_plot(result.losses)),
            "history": MetadataValue.json(result.history),
        })

    return checkpoint_asset


def build_results_asset(benchmark: str):
    source = TRAINED_ON[benchmark]

    @asset(
        name=f"{benchmark}_results",
        group_name="training",
        deps=[AssetKey(f"{benchmark}_shards"), AssetKey(f"{source}_checkpoint")],
        description=f"Recall@1/5/10/20, memory, parameters and time per sequence on the {benchmark} test split.",
    )
    def results_asset(context: AssetExecutionContext, config: EvaluationConfig, home: PipelineHome) -> MaterializeResult:
        layout = home.layout()
        data = _split_data(layout, benchmark, "test")
        trained = {}
        for path in sorted((layout.models() / source).glob("*.pt")):
            model, meta = load_checkpoint(path)
            trained[f"{meta['model']} (trained on {source})"] = (model, meta["seq_len"])
        rows = evaluate_models(data, config.models, trained, config.lengths, config.pca_dim or None, log=context.log.info)
        table = results_markdown(benchmark, rows)
        atomic_write_text(layout.results() / f"{benchmark}.md", table)
        atomic_write_text(layout.results() / f"{benchmark}.json", json.dumps(rows, indent=1, default=float))
        context.log.info("\n" + table)
        best = max((r for r in rows if r["length"] == 5), key=lambda r: r["recall"]["5"], default=None)
        return MaterializeResult(metadata={
            "table": MetadataValue.md(table),
            "queries": len(data.positives),
            "queries_without_positive": int(np.sum([len(p) == 0 for p in data.positives])),
            "best_at_L5": f"{best['model']}: R@5 {best['recall']['5']:.3f}" if best else "",
        })

    return results_asset


training_assets = [build_checkpoint_asset(b) for b in BENCHMARKS if b != "nuscenes"] + [build_results_asset(b) for b in BENCHMARKS]

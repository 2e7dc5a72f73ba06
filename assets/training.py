"""Training and evaluation from the shards: a checkpoint per benchmark with a train split, and a
Table-II-like results table per benchmark (nuScenes is evaluated with the Oxford-easy model, as in
the Adapt-STformer paper). The shards hold tokens after the encoder's frozen blocks; the CCT blocks
after the cut (the `encoder` resource's `freeze_te`) train with the head. JIST, SeqNet and OptiCorNet
read their published backbones' frame descriptors (`<benchmark>_frame_descriptors`) when the
`baselines` resource selects them, else pooled CCT tokens."""
import json
from typing import Optional

from dagster import AssetExecutionContext, AssetKey, Config, MaterializeResult, MetadataValue, asset

from assets.plots import png_markdown, pyplot
from pipelines.resources import BaselineBackbones, FrameEncoder, PipelineHome
from seqvpr.atomic import atomic_write_text
from seqvpr.embed.embed import pick_device
from seqvpr.embed.frame_descriptors import with_frame_descriptors
from seqvpr.evaluate import PublishedFeatures, evaluate_models, results_markdown, training_gain
from seqvpr.metrics import chance_recall, queries_without_positives
from seqvpr.models import MODEL_BACKBONE
from seqvpr.splits import BENCHMARKS
from seqvpr.train import TrainConfig, load_checkpoint, load_split_data, save_checkpoint, train

TRAINED_ON = {"nordland": "nordland", "oxford_easy": "oxford_easy", "oxford_hard": "oxford_hard",
              "oxford_seqnet": "oxford_seqnet", "nuscenes": "oxford_easy"}


class TrainingConfig(Config):
    """The authors' recipe (seqvpr.train) with a CPU budget: lr 3e-4, 3 epochs of 12 queries train
    visibly on the synthetic world in minutes; the authors use lr 1e-5 and up to 200 epochs of
    every query on a GPU (queries_per_epoch 0: every training query)."""

    model: str = TrainConfig.model
    seq_len: int = TrainConfig.seq_len
    epochs: int = TrainConfig.epochs
    lr: float = TrainConfig.lr
    margin: float = TrainConfig.margin
    negatives: int = TrainConfig.negatives
    batch_size: int = TrainConfig.batch_size
    queries_per_epoch: int = TrainConfig.queries_per_epoch
    patience: int = TrainConfig.patience
    kmeans_init: bool = TrainConfig.kmeans_init
    seed: int = TrainConfig.seed


EVALUATED_MODELS = ["adapt_stformer", "seqvlad", "stformer", "seqnet", "jist", "opticornet"]
# left out of the default table when the encoder runs on a CPU, to keep a results asset in minutes
SLOW_ON_CPU = {"stformer": "its 4 windowed space-time CCT blocks take seconds per sequence on a CPU"}


class EvaluationConfig(Config):
    """models: unset, every model of EVALUATED_MODELS, less SLOW_ON_CPU when the encoder has no GPU."""

    models: Optional[list[str]] = None
    lengths: list[int] = [1, 3, 5]
    pca_dim: int = 0


def evaluated_models(config: EvaluationConfig, device: str) -> list[str]:
    if config.models is not None:
        return config.models
    on_gpu = pick_device(device).type == "cuda"
    return [name for name in EVALUATED_MODELS if on_gpu or name not in SLOW_ON_CPU]


def _split_data(layout, benchmark: str, split: str):
    return load_split_data(layout.shards(benchmark, split))


def _published_descriptors(name: str, baselines: BaselineBackbones) -> dict | None:
    """{"backbone", "weights"} of the published frame descriptors model `name` reads under these
    settings (None: it reads CCT tokens); a checkpoint records it."""
    backbone = MODEL_BACKBONE[name]
    if backbone == "cct384" or not baselines.published():
        return None
    return {"backbone": backbone, "weights": baselines.weights(backbone)}


def _frame_descriptors(layout, benchmark: str, split: str, data, backbone: str, baselines: BaselineBackbones):
    return with_frame_descriptors(data, layout.frame_descriptors(benchmark, backbone), split, backbone,
                                  baselines.weights(backbone))


def _loss_plot(losses: list[float], history: list[dict]) -> str:
    """Loss per step (batch of tuples) and validation R@5 per epoch."""
    plt = pyplot()
    fig, (ax, ax_recall) = plt.subplots(1, 2, figsize=(7, 2.5), dpi=80)
    ax.plot(losses)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax_recall.plot([h["epoch"] for h in history], [h["recall"][5] for h in history], marker="o")
    ax_recall.set_xlabel("epoch")
    ax_recall.set_ylabel("val R@5")
    fig.tight_layout()
    return png_markdown(fig, "loss")


def build_checkpoint_asset(benchmark: str):
    @asset(
        name=f"{benchmark}_checkpoint",
        group_name="training",
        deps=[AssetKey(f"{benchmark}_shards"), AssetKey(f"{benchmark}_frame_descriptors")],
        description=f"A sequence model trained on the {benchmark} train split (val: val split, else test).",
    )
    def checkpoint_asset(context: AssetExecutionContext, config: TrainingConfig, home: PipelineHome,
                         encoder: FrameEncoder, baselines: BaselineBackbones) -> MaterializeResult:
        layout = home.layout()
        val_split = "val" if layout.shards(benchmark, "val").exists() else "test"
        if val_split == "test":
            context.log.warning(f"{benchmark} has no val split: epochs are selected on the test split, as the authors do")
        train_data = _split_data(layout, benchmark, "train")
        val_data = _split_data(layout, benchmark, val_split)
        cfg = TrainConfig(**config.model_dump())
        frame_descriptors = _published_descriptors(cfg.model, baselines)
        tail = None if frame_descriptors else encoder.tail()
        if frame_descriptors:
            backbone = frame_descriptors["backbone"]
            train_data = _frame_descriptors(layout, benchmark, "train", train_data, backbone, baselines)
            val_data = _frame_descriptors(layout, benchmark, val_split, val_data, backbone, baselines)
        result = train(cfg, train_data, val_data, tail=tail, log=context.log.info,
                       published_features=frame_descriptors is not None)
        path = layout.models() / benchmark / f"{cfg.model}.pt"
        history = [{**h, "recall": {str(k): v for k, v in h["recall"].items()}} for h in result.history]
        meta = {**config.model_dump(), "name": cfg.model, "model_kwargs": cfg.model_kwargs, "benchmark": benchmark,
                "val_split": val_split, "best_val_recall5": result.best_recall5, "best_epoch": result.best_epoch,
                "epochs_run": len(result.history), "initial_val_recall": {str(k): v for k, v in result.initial_recall.items()},
                "history": history, "losses": result.losses, "freeze_te": encoder.resolved_freeze_te(),
                "tail_blocks": len(tail.blocks) if tail is not None else 0, "encoder_model_id": encoder.model_id(),
                "frame_descriptors": frame_descriptors, "kmeans_layers": result.kmeans_layers}
        save_checkpoint(path, cfg.model, result.state_dict, meta, result.start_state_dict)
        if result.best_epoch == 0:
            context.log.warning(f"{cfg.model}: no epoch beat the starting weights on {val_split}; the checkpoint is untrained")
        return MaterializeResult(metadata={
            "path": MetadataValue.path(str(path)),
            "model": cfg.model,
            "freeze_te": meta["freeze_te"],
            "trained_cct_blocks": meta["tail_blocks"],
            "untrained_val_recall5": result.initial_recall[5],
            "best_val_recall5": result.best_recall5,
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "loss_curve": MetadataValue.md(_loss_plot(result.losses, result.history)),
            "history": MetadataValue.json(history),
        })

    return checkpoint_asset


def build_results_asset(benchmark: str):
    source = TRAINED_ON[benchmark]

    @asset(
        name=f"{benchmark}_results",
        group_name="training",
        deps=[AssetKey(f"{benchmark}_shards"), AssetKey(f"{source}_checkpoint"),
              *[AssetKey(f"{b}_frame_descriptors") for b in sorted({benchmark, source})]],
        description=f"Recall@1/5/10/20, memory, parameters and time per sequence on the {benchmark} test split.",
    )
    def results_asset(context: AssetExecutionContext, config: EvaluationConfig, home: PipelineHome,
                      encoder: FrameEncoder, baselines: BaselineBackbones) -> MaterializeResult:
        layout = home.layout()
        data = _split_data(layout, benchmark, "test")
        pca_train = _split_data(layout, source, "train") if config.pca_dim else None
        model_id = encoder.model_id()
        trained = {}
        for path in sorted((layout.models() / source).glob("*.pt")):
            model, meta = load_checkpoint(path)
            if meta["encoder_model_id"] != model_id:
                context.log.warning(f"{path}: trained on other embeddings ({meta['encoder_model_id']}), left out")
                continue
            if meta.get("frame_descriptors") != _published_descriptors(meta["name"], baselines):
                context.log.warning(f"{path}: trained on other frame features ({meta.get('frame_descriptors')}), left out")
                continue
            trained[meta["name"]] = (model, meta)
            if meta["best_epoch"] and meta.get("kmeans_layers"):  # else the checkpoint or the untrained row is its start
                start, _ = load_checkpoint(path, start=True)
                if start is not None:
                    trained[meta["name"], "start"] = (start, {**meta, "weights": "start"})
        names = evaluated_models(config, encoder.device)
        published = {}
        checkpoints = {meta["name"] for _, meta in trained.values()}
        for backbone in sorted({MODEL_BACKBONE[name] for name in [*names, *checkpoints] if _published_descriptors(name, baselines)}):
            published[backbone] = PublishedFeatures(
                baselines.weights(backbone), _frame_descriptors(layout, benchmark, "test", data, backbone, baselines),
                _frame_descriptors(layout, source, "train", pca_train, backbone, baselines) if pca_train else None)
        rows = evaluate_models(data, names, trained, config.lengths, config.pca_dim or None, pca_train,
                               tail=encoder.tail(), log=context.log.info, published=published)
        notes = [f"PCA to {config.pca_dim} dimensions, fitted on the {source} train split." if config.pca_dim else "No PCA."]
        notes += [f"Not evaluated: {name} ({why}; list it in the results asset's `models` to include it)."
                  for name, why in SLOW_ON_CPU.items() if name not in names and name not in checkpoints]
        table = results_markdown(benchmark, rows, data, notes)
        atomic_write_text(layout.results() / f"{benchmark}.md", table)
        atomic_write_text(layout.results() / f"{benchmark}.json", json.dumps(rows, indent=1, default=float))
        context.log.info("\n" + table)
        best = max((r for r in rows if r["length"] == 5), key=lambda r: r["recall"]["5"], default=None)
        return MaterializeResult(metadata={
            "table": MetadataValue.md(table),
            "queries": len(data.positives),
            "queries_without_positive": queries_without_positives(data.positives),
            "random_ranking_recall": MetadataValue.json({str(k): v for k, v in chance_recall(data.positives, len(data.db_tokens)).items()}),
            "best_at_L5": f"{best['model']} ({best['trained']}): R@5 {best['recall']['5']:.3f}" if best else "",
            "trained_vs_untrained_R@5_L5": MetadataValue.json(training_gain(rows, 5)),
        })

    return results_asset


training_assets = [build_checkpoint_asset(b) for b in BENCHMARKS if b != "nuscenes"] + [build_results_asset(b) for b in BENCHMARKS]

"""Training and evaluation from the shards: a checkpoint per benchmark with a train split, and a
Table-II-like results table per benchmark (nuScenes is evaluated with the Oxford-easy model, as in
the Adapt-STformer paper). The shards hold tokens after the encoder's frozen blocks; the CCT blocks
after the cut (the `encoder` resource's `freeze_te`) train with the head. JIST, SeqNet and OptiCorNet
read their published backbones' frame descriptors (`<benchmark>_frame_descriptors`) when the
`baselines` resource selects them, else pooled CCT tokens."""
import json
from dataclasses import asdict
from typing import Annotated, Optional

from dagster import AssetExecutionContext, AssetKey, Config, MaterializeResult, MetadataValue, StaticPartitionsDefinition, asset
from pydantic import Field

from assets.plots import png_markdown, pyplot
from pipelines.resources import BaselineBackbones, FrameEncoder, PipelineHome, name_in
from seqvpr.atomic import atomic_write_text
from seqvpr.benchmarks import BENCHMARKS
from seqvpr.embed.embed import pick_device
from seqvpr.embed.frame_descriptors import with_frame_descriptors
from seqvpr.evaluate import GAIN_LENGTH, PublishedFeatures, evaluate_models, results_markdown, training_gain
from seqvpr.metrics import chance_recall, queries_without_positives
from seqvpr.models import MODEL_BACKBONE, MODELS, REGISTRY, TABLE_MODELS, model_spec
from seqvpr.train import TrainConfig, load_checkpoint, load_split_data, save_checkpoint, train

TRAINED_ON = {"nordland": "nordland", "oxford_easy": "oxford_easy", "oxford_hard": "oxford_hard",
              "oxford_seqnet": "oxford_seqnet", "nuscenes": "oxford_easy"}


class TrainingConfig(Config):
    """Settings of one model's training run (the partition key names the model). Every setting left
    unset takes the model's recipe from the registry (`seqvpr.models.REGISTRY`): the authors' on a
    GPU, its CPU budget otherwise (each entry's `cpu_note` says how it differs); the checkpoint's
    `recipe` metadata shows what was used. E.g. the authors' Adapt-STformer budget on a CPU:
    `ops: {oxford_easy_checkpoint: {config: {epochs: 200, lr: 1.0e-5, queries_per_epoch: 0}}}`."""

    seq_len: Optional[int] = Field(default=None, ge=1)
    epochs: Optional[int] = Field(default=None, ge=0)
    optimizer: Optional[str] = Field(default=None, pattern="^(adam|sgd)$")
    lr: Optional[float] = Field(default=None, gt=0)
    momentum: Optional[float] = Field(default=None, ge=0)
    weight_decay: Optional[float] = Field(default=None, ge=0)
    lr_step: Optional[int] = Field(default=None, ge=0)
    lr_gamma: Optional[float] = Field(default=None, gt=0)
    margin: Optional[float] = Field(default=None, ge=0)
    sqrt_margin_in_loss: Optional[bool] = None
    group_lrs: Optional[dict[str, float]] = None  # learning rates of named head parts, e.g. {temporal: 1.0e-3}
    start_is_candidate: Optional[bool] = None  # may the untrained start be kept (the Adapt-STformer code) or not (seqNet)
    negatives: Optional[int] = Field(default=None, ge=1)
    batch_size: Optional[int] = Field(default=None, ge=1)
    queries_per_epoch: Optional[int] = Field(default=None, ge=0)
    patience: Optional[int] = Field(default=None, ge=0)
    kmeans_init: Optional[bool] = None
    seed: int = Field(default=0, ge=0)  # numpy generators refuse negative seeds


class EvaluationConfig(Config):
    """models: unset, every model of the default table (`seqvpr.models.TABLE_MODELS`) plus any
    other trained checkpoint (the ablations, once trained)."""

    models: Optional[list[name_in("model", MODELS)]] = None
    lengths: list[Annotated[int, Field(ge=1)]] = Field(default=[1, 3, 5], min_length=1)
    pca_dim: int = Field(default=0, ge=0)


def evaluated_models(config: EvaluationConfig) -> list[str]:
    return list(TABLE_MODELS) if config.models is None else config.models


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


model_partitions = StaticPartitionsDefinition(TABLE_MODELS)
ABLATIONS = [name for name, spec in REGISTRY.items() if not spec.default_table]


def train_one(context, benchmark: str, name: str, config: TrainingConfig, home: PipelineHome, encoder: FrameEncoder,
              baselines: BaselineBackbones) -> dict:
    """Train model `name` on `benchmark` with its registry recipe and `config`'s overrides, save its
    checkpoint and return the asset metadata (loss curve, per-epoch validation recall, recipe)."""
    layout = home.layout()
    val_split = "val" if layout.shards(benchmark, "val").exists() else "test"
    if val_split == "test":
        context.log.warning(f"{benchmark} has no val split: epochs are selected on the test split, as the authors do")
    train_data = _split_data(layout, benchmark, "train")
    val_data = _split_data(layout, benchmark, val_split)
    on_gpu = pick_device(encoder.device).type == "cuda"
    overrides = config.model_dump()
    cfg = TrainConfig.for_model(name, on_gpu, device=encoder.device, **overrides)
    recipe = {k: v for k, v in asdict(cfg).items() if k not in ("model_kwargs", "device")}
    frame_descriptors = _published_descriptors(name, baselines)
    tail = None if frame_descriptors else encoder.tail()
    if frame_descriptors:
        backbone = frame_descriptors["backbone"]
        train_data = _frame_descriptors(layout, benchmark, "train", train_data, backbone, baselines)
        val_data = _frame_descriptors(layout, benchmark, val_split, val_data, backbone, baselines)
    spec = model_spec(name)
    overridden = {k: v for k, v in overrides.items() if v is not None and k != "seed"}
    budget = ("the authors' recipe" if on_gpu else f"CPU budget: {spec.cpu_note}") + (
        f"; set here: {overridden}" if overridden else "")
    context.log.info(f"{name}: {budget} ({recipe}; source: {spec.recipe_source})")
    result = train(cfg, train_data, val_data, tail=tail, log=context.log.info,
                   published_features=frame_descriptors is not None)
    path = layout.models() / benchmark / f"{name}.pt"
    history = [{**h, "recall": {str(k): v for k, v in h["recall"].items()}} for h in result.history]
    meta = {**recipe, "name": name, "model_kwargs": cfg.model_kwargs, "benchmark": benchmark, "budget": budget,
            "val_split": val_split, "best_val_recall5": result.best_recall5, "best_epoch": result.best_epoch,
            "epochs_run": len(result.history), "initial_val_recall": {str(k): v for k, v in result.initial_recall.items()},
            "history": history, "losses": result.losses, "freeze_te": encoder.resolved_freeze_te(),
            "tail_blocks": len(tail.blocks) if tail is not None else 0, "encoder_model_id": encoder.model_id(),
            "frame_descriptors": frame_descriptors, "kmeans_layers": result.kmeans_layers,
            "best_trained_epoch": result.best_trained_epoch, "best_trained_val_recall5": result.best_trained_recall5}
    save_checkpoint(path, name, result.state_dict, meta, result.start_state_dict, result.trained_state_dict)
    if result.best_epoch == 0:
        context.log.warning(f"{name}: no epoch beat the starting weights on {val_split}, which are kept; the "
                            f"results also show its best trained epoch ({result.best_trained_epoch}, val R@5 "
                            f"{result.best_trained_recall5:.3f})")
    return {
        "path": MetadataValue.path(str(path)),
        "model": name,
        "recipe": MetadataValue.json(recipe),
        "budget": meta["budget"],
        "freeze_te": meta["freeze_te"],
        "trained_cct_blocks": meta["tail_blocks"],
        "untrained_val_recall5": result.initial_recall[5],
        "best_val_recall5": result.best_recall5,
        "best_epoch": result.best_epoch,
        "best_trained_epoch": result.best_trained_epoch,  # differs from best_epoch (0) where the start was kept
        "best_trained_val_recall5": result.best_trained_recall5,
        "epochs_run": len(result.history),
        "loss_curve": MetadataValue.md(_loss_plot(result.losses, result.history)),
        "history": MetadataValue.json(history),
    }


def build_checkpoint_asset(benchmark: str):
    @asset(
        name=f"{benchmark}_checkpoint",
        group_name="training",
        partitions_def=model_partitions,
        deps=[AssetKey(f"{benchmark}_shards"), AssetKey(f"{benchmark}_frame_descriptors")],
        description=f"One sequence model per partition trained on the {benchmark} train split with its recipe "
                    "(val: val split, else test).",
    )
    def checkpoint_asset(context: AssetExecutionContext, config: TrainingConfig, home: PipelineHome,
                         encoder: FrameEncoder, baselines: BaselineBackbones) -> MaterializeResult:
        return MaterializeResult(metadata=train_one(context, benchmark, context.partition_key, config, home, encoder,
                                                    baselines))

    return checkpoint_asset


class AblationConfig(TrainingConfig):
    """models: which ablations to train (default: every Table III/IV ablation of the registry)."""

    models: Optional[list[str]] = None


def build_ablation_asset(benchmark: str):
    @asset(
        name=f"{benchmark}_ablation_checkpoint",
        group_name="training",
        deps=[AssetKey(f"{benchmark}_shards")],
        description=f"The Adapt-STformer ablations (Tables III, IV) trained on {benchmark}; only on request "
                    f"(`seqvpr run --select {benchmark}_ablation_checkpoint`); the results table shows them once trained.",
    )
    def ablation_asset(context: AssetExecutionContext, config: AblationConfig, home: PipelineHome,
                       encoder: FrameEncoder, baselines: BaselineBackbones) -> MaterializeResult:
        settings = TrainingConfig(**config.model_dump(exclude={"models"}))
        metadata = {}
        for name in config.models or ABLATIONS:
            for key, value in train_one(context, benchmark, name, settings, home, encoder, baselines).items():
                metadata[f"{name}/{key}"] = value
        return MaterializeResult(metadata=metadata)

    return ablation_asset


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
        train_split = _split_data(layout, source, "train")  # fits the pooled heads' whitening; PCA's, when set
        pca_train = train_split if config.pca_dim else None
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
                start, _ = load_checkpoint(path, weights="start")
                if start is not None:
                    trained[meta["name"], "start"] = (start, {**meta, "weights": "start"})
            if not meta["best_epoch"]:  # the start was kept: its best trained epoch is shown beside it
                best_trained, _ = load_checkpoint(path, weights="trained")
                if best_trained is not None:
                    trained[meta["name"], "trained"] = (best_trained, {**meta, "weights": "trained"})
        checkpoints = {meta["name"] for _, meta in trained.values()}
        names = evaluated_models(config)
        if config.models is None:  # trained ablations get their untrained rows too
            names += sorted(checkpoints - set(names))
        published = {}
        for backbone in sorted({MODEL_BACKBONE[name] for name in [*names, *checkpoints] if _published_descriptors(name, baselines)}):
            published[backbone] = PublishedFeatures(
                baselines.weights(backbone), _frame_descriptors(layout, benchmark, "test", data, backbone, baselines),
                _frame_descriptors(layout, source, "train", pca_train, backbone, baselines) if pca_train else None)
        on_gpu = pick_device(encoder.device).type == "cuda"
        kwargs = {name: TrainConfig.for_model(name, on_gpu).model_kwargs for name in names}
        kwargs.update({meta["name"]: meta["model_kwargs"] for _, meta in trained.values()})
        rows = evaluate_models(data, names, trained, config.lengths, config.pca_dim or None, pca_train,
                               tail=encoder.tail(), log=context.log.info, published=published, model_kwargs=kwargs,
                               train_data=train_split)
        notes = [f"PCA to {config.pca_dim} dimensions, fitted on the {source} train split." if config.pca_dim else "No PCA."]
        notes += sorted({f"{meta['name']}: {meta['budget']}." for _, meta in trained.values() if meta.get("budget")})
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
            "trained_vs_untrained_R@5_L5": MetadataValue.json(training_gain(rows, GAIN_LENGTH, chance_recall(data.positives, len(data.db_tokens))[5])),
        })

    return results_asset


trained_benchmarks = [b for b in BENCHMARKS if b != "nuscenes"]
training_assets = ([build_checkpoint_asset(b) for b in trained_benchmarks] + [build_ablation_asset(b) for b in trained_benchmarks]
                   + [build_results_asset(b) for b in BENCHMARKS])

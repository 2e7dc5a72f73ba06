"""A training run's settings (`TrainConfig`: a model's registry recipe plus model, seed and device)
and what it returns (`TrainResult`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from seqvpr.models import Recipe, model_spec


@dataclass(frozen=True)
class TrainConfig(Recipe):
    """A model's training run: its recipe (`seqvpr.models.Recipe`; `for_model` takes the registry's
    CPU or GPU defaults) plus the model, its constructor arguments, the seed and the device. The
    dataclass defaults are the Adapt-STformer authors' recipe."""

    model: str = "adapt_stformer"
    seed: int = 0
    device: str = "auto"

    @classmethod
    def for_model(cls, model: str, on_gpu: bool, **overrides) -> "TrainConfig":
        """The registry's recipe of `model` (the authors' on a GPU, its CPU budget otherwise), with
        `overrides` (None values ignored) on top."""
        recipe = asdict(model_spec(model).recipe(on_gpu))
        return cls(model=model, **{**recipe, **{k: v for k, v in overrides.items() if v is not None}})


@dataclass
class TrainResult:
    state_dict: dict
    best_recall5: float
    initial_recall: dict
    start_state_dict: dict  # the weights the first epoch starts from: seeded init, NetVLAD on k-means centres
    kmeans_layers: int = 0  # NetVLAD layers initialised on k-means centres (0: the start is the seeded init)
    best_epoch: int = 0  # 0: no epoch beat the starting weights, which are kept (start_is_candidate only)
    best_trained_epoch: int = 0  # the trained epoch with the best val R@5 (the first of equals; 0: none ran)
    best_trained_recall5: float = -1.0
    trained_state_dict: dict | None = None  # its weights, when the start is kept instead (best_epoch 0)
    history: list = field(default_factory=list)  # per epoch: {"epoch", "loss", "recall", "tuples", "skipped"}
    losses: list = field(default_factory=list)  # per step (batch)

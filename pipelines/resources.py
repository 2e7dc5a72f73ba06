"""Dagster resources: thin wrappers over plain-Python configuration objects."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

from dagster import ConfigurableResource
from pydantic import AfterValidator, Field, model_validator

from seqvpr.layout import Layout

def expand_path(value: str) -> str:
    """A path setting with ``~`` expanded (YAML and the launchpad pass it verbatim; the shell does not
    see it), so the check, the work and the source stamp all use the same path."""
    return str(Path(value).expanduser()) if value else value


def expand_folder(value: str, what: str) -> str:
    """``expand_path``, and a path that is not a folder is refused saying what it is."""
    value = expand_path(value)
    if value and Path(value).is_file():
        raise ValueError(f"{value} is a file; expected a folder ({what})")
    if value and not Path(value).exists():
        raise ValueError(f"no such folder: {value} ({what})")
    return value


def check_device(value: str) -> str:
    """A torch device setting: "auto", "cpu", "cuda", "cuda:<n>" or "mps"."""
    import re

    from seqvpr.errors import unknown_name

    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise ValueError(unknown_name("device", value, ("auto", "cpu", "cuda", "cuda:0", "mps")))
    return value


def name_in(kind: str, known) -> type:
    """A text setting that must be one of ``known`` (refused with "did you mean")."""
    from seqvpr.errors import unknown_name

    def check(value: str) -> str:
        if value not in known:
            raise ValueError(unknown_name(kind, value, known))
        return value

    return Annotated[str, AfterValidator(check)]


PathSetting = Annotated[str, AfterValidator(expand_path)]
DeviceSetting = Annotated[str, AfterValidator(check_device)]

AUTHORS_FREEZE_TE = 1  # `--trunc_te 8 --freeze_te 1` (ai4ce/Adapt-STFormer sbatch_files/train/*.sbatch)


class PipelineHome(ConfigurableResource):
    """Root folder of one pipeline run: data/, struct_files/ and shards/ live below it.

    Defaults to $SEQVPR_HOME or the current directory, so `dagster dev` in the repository writes
    to the repository's git-ignored struct_files/ and shards/ folders.
    """

    home: str = ""

    def layout(self) -> Layout:
        return Layout.from_home(self.home or None)


class FrameEncoder(ConfigurableResource):
    """The CCT384 frame encoder shared by the embedding, shard and training assets.

    checkpoint: path to the official `cct_14_7x2_384` weights (empty: seeded random weights,
    recorded as `random-init-<seed>`); num_layers: transformer blocks kept (8, as SeqVLAD and
    Adapt-STformer truncate); device: "auto" picks cuda when available; freeze_te: the embedding
    cut, blocks 0..freeze_te frozen and cached, the rest trained with the head (the authors'
    `--freeze_te 1`). Unset, it is the authors' 1 when a GPU embeds and trains, and num_layers - 1
    (frozen backbone, the head alone trains) on a CPU, where fine-tuning six 576-token blocks costs
    about a second per frame and step.
    """

    checkpoint: PathSetting = ""
    num_layers: int = Field(default=8, ge=1, le=14)  # CCT-14 has 14 blocks
    device: DeviceSetting = "auto"
    batch_size: int = Field(default=8, ge=1)
    seed: int = Field(default=0, ge=0)
    freeze_te: Optional[int] = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _cut_inside_the_blocks(self):
        if self.freeze_te is not None and self.freeze_te >= self.num_layers:
            raise ValueError(f"freeze_te must be below num_layers ({self.num_layers}): blocks 0..freeze_te are "
                             f"cached, the rest train; got {self.freeze_te}")
        return self

    def resolved_freeze_te(self) -> int:
        from seqvpr.embed.embed import pick_device

        if self.freeze_te is not None:
            return self.freeze_te
        return AUTHORS_FREEZE_TE if pick_device(self.device).type == "cuda" else self.num_layers - 1

    def embedder(self):
        from seqvpr.embed.embed import FrameEmbedder

        return FrameEmbedder(self.num_layers, self.checkpoint or None, self.device, self.seed, self.resolved_freeze_te())

    def tail(self):
        """The trainable CCT blocks after the cut, as the encoder starts (None with a frozen backbone)."""
        from seqvpr.embed.cct import build_cct_tail

        return build_cct_tail(self.resolved_freeze_te(), self.num_layers, self.checkpoint or None, self.seed)

    def model_id(self) -> str:
        """Cache namespace of this encoder's embeddings, without building the model."""
        from seqvpr.embed.cct import weights_identity
        from seqvpr.embed.embed import model_id

        return model_id(weights_identity(self.checkpoint or None, self.seed), self.num_layers, self.resolved_freeze_te())


class BaselineBackbones(ConfigurableResource):
    """The published frame backbones of JIST (CosPlace ResNet-18 + GeM) and of SeqNet and OptiCorNet
    (Patch-NetVLAD VGG16 + NetVLAD + WPCA), whose descriptors those heads read in training and
    evaluation when `baseline_features` resolves to "published".

    baseline_features: "published", "pooled_cct" (each frame's final CCT tokens mean-pooled, 384-D,
    nothing more to compute) or "auto": published when a GPU is present, pooled_cct on a CPU, where
    VGG16 at 384 px costs about a second per frame. *_checkpoint: the official weights, loaded with
    strict=True (empty: seeded random weights, recorded as `random-init-<seed>`).
    """

    baseline_features: Literal["auto", "published", "pooled_cct"] = "auto"
    resnet18_gem_checkpoint: PathSetting = ""
    vgg16_netvlad_checkpoint: PathSetting = ""
    device: DeviceSetting = "auto"
    batch_size: int = Field(default=16, ge=1)
    seed: int = Field(default=0, ge=0)

    def published(self) -> bool:
        from seqvpr.embed.embed import pick_device

        if self.baseline_features == "auto":
            return pick_device(self.device).type == "cuda"
        return self.baseline_features == "published"

    def checkpoint(self, backbone: str) -> str | None:
        return {"resnet18_gem": self.resnet18_gem_checkpoint, "vgg16_netvlad": self.vgg16_netvlad_checkpoint}[backbone] or None

    def weights(self, backbone: str) -> str:
        """The backbone's weights identity, without building it."""
        from seqvpr.embed.cct import weights_identity

        return weights_identity(self.checkpoint(backbone), self.seed)

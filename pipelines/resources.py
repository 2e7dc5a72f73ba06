"""Dagster resources: thin wrappers over plain-Python configuration objects."""
from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from seqvpr.layout import Layout


class PipelineHome(ConfigurableResource):
    """Root folder of one pipeline run: data/, struct_files/ and shards/ live below it.

    Defaults to $SEQVPR_HOME or the current directory, so `dagster dev` in the repository writes
    to the repository's git-ignored struct_files/ and shards/ folders.
    """

    home: str = ""

    def layout(self) -> Layout:
        return Layout.from_home(self.home or None)


class FrameEncoder(ConfigurableResource):
    """The CCT384 frame encoder shared by the embedding and shard assets.

    checkpoint: path to the official `cct_14_7x2_384` weights (empty: seeded random weights,
    recorded as `random-init-<seed>`); num_layers: transformer blocks kept (8, as SeqVLAD and
    Adapt-STformer truncate); device: "auto" picks cuda when available.
    """

    checkpoint: str = ""
    num_layers: int = Field(default=8, ge=1)
    device: str = "auto"
    batch_size: int = Field(default=8, ge=1)
    seed: int = 0

    def embedder(self):
        from seqvpr.embed.embed import FrameEmbedder

        return FrameEmbedder(self.num_layers, self.checkpoint or None, self.device, self.seed)

    def model_id(self) -> str:
        """Cache namespace of this encoder's embeddings, without building the model."""
        from seqvpr.embed.cct import weights_identity
        from seqvpr.embed.embed import model_id

        return model_id(weights_identity(self.checkpoint or None, self.seed), self.num_layers)

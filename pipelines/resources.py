"""Dagster resources: thin wrappers over plain-Python configuration objects."""
from __future__ import annotations

from dagster import ConfigurableResource

from seqvpr.layout import Layout


class PipelineHome(ConfigurableResource):
    """Root folder of one pipeline run: data/, struct_files/ and shards/ live below it.

    Defaults to $SEQVPR_HOME or the current directory, so `dagster dev` in the repository writes
    to the repository's git-ignored struct_files/ and shards/ folders.
    """

    home: str = ""

    def layout(self) -> Layout:
        return Layout.from_home(self.home or None)

"""Shared test settings: where the real seqNet reference files are (../shared beside the checkout)."""
import os
from pathlib import Path

REFERENCE_DIR = Path(
    os.environ.get(
        "SEQVPR_REFERENCE_DIR",
        Path(__file__).resolve().parents[2] / "shared" / "reference" / "seqnet_struct_files",
    )
)

"""Shared test settings: where the real seqNet reference files are (copied into tests/fixtures/)."""
from pathlib import Path

REFERENCE_DIR = Path(__file__).resolve().parent / "fixtures" / "seqnet_struct_files"

"""Shared test settings: where the real seqNet reference files are (copied into tests/fixtures/),
and SIGINT's handler as in a terminal.

A test session started as a background job of a non-interactive shell (CI harnesses, `nohup ... &`)
starts with SIGINT ignored. Dagster's in-process execution (`materialize`, `capture_interrupts` in
dagster/_utils/interrupts.py) then restores SIGINT's handler and maps SIGTERM to it, so after the
first such test SIGTERM is ignored too, and every process a later test starts inherits that: its
Dagster steps wait up to 60 s for the compute-log `tail -F` they cannot terminate, which made the
Dask executor test take 145-204 s instead of about 25 s. With Python's own SIGINT handler (what a
terminal gives) the mapping gives SIGTERM a Python handler, which children reset to the default.
"""
import signal
from pathlib import Path

REFERENCE_DIR = Path(__file__).resolve().parent / "fixtures" / "seqnet_struct_files"

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

"""Source stamps: which writer filled a folder that is replaced whole, so that nothing the pipeline
did not write is ever deleted.

A folder ``<parent>/<name>`` written by the pipeline (the raw stage's dataset folders, the synthetic
world, the SDK camera models it generates) has a stamp ``<parent>/.<name>.source.json`` recording
what wrote it (source, seed, scale, generator digest, local path or manifest digest).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from seqvpr.atomic import atomic_write_text
from seqvpr.errors import DataError


def stamp_path(raw: Path) -> Path:
    return raw.parent / f".{raw.name}.source.json"


def write_source_stamp(raw: Path, wanted: dict) -> None:
    atomic_write_text(stamp_path(raw), json.dumps(wanted, indent=1, sort_keys=True))


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def claim_folder(raw: Path, wanted: dict, hint: str) -> bool:
    """Prepare ``raw`` (a dataset folder, or any folder a writer replaces whole) for the source
    described by ``wanted``; True if it already holds exactly that. ``hint`` ends the message of a
    folder the pipeline did not write.

    Whatever an earlier, different source left there is removed, but never anything the pipeline
    did not write: a folder without a stamp, or a file added or changed after the stamp was written
    (DataError naming it).
    """
    stamp = stamp_path(raw)
    current = json.loads(stamp.read_text()) if stamp.exists() else None
    if current == wanted and raw.is_dir():
        return True
    if current is None and raw.is_dir() and not raw.is_symlink() and any(raw.iterdir()):
        raise DataError(raw, f"exists but was not written by this pipeline (no source stamp); move it away, {hint}")
    if current is not None and raw.is_dir() and not raw.is_symlink():
        written = stamp.stat().st_mtime_ns
        changed = sorted((not is_file, path) for folder, dirs, names in os.walk(raw)
                         for is_file, name in [(False, d) for d in dirs] + [(True, n) for n in names]
                         if os.lstat(path := os.path.join(folder, name)).st_mtime_ns > written)
        if changed:  # files first: a folder is newer only because something was put in it
            raise DataError(changed[0][1], f"was added or changed after the pipeline wrote {raw}, so the folder "
                                           "is not replaced; move your files out of it (or delete it yourself)")
    for stale in (raw, raw.parent / f".{raw.name}.extracted", stamp):
        _remove(stale)
    return False

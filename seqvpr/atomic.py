"""Atomic output: write under a temporary name in the target folder, fsync, then rename.

A killed run therefore never leaves a partial file under its final name, and a failed run leaves
the previous complete output in place.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def _tmp_name(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.fchmod(fd, 0o644)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator:
    """Open a temporary file for writing; it replaces ``path`` only if the block succeeds."""
    with atomic_path(path) as tmp:
        with open(tmp, mode) as fh:
            yield fh


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a whole folder under a temporary name and swap it in at the end."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def remove_stale_dirs(path: str | Path) -> None:
    """Remove the temporary folders that killed ``atomic_dir`` builds of ``path`` left beside it."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.partial") if path.parent.exists() else []:
        shutil.rmtree(stale, ignore_errors=True)


def atomic_remove(path: str | Path) -> bool:
    """Remove a file or folder so that no half-deleted copy is ever visible under its name.

    It is first renamed to a hidden ``.partial`` name (which the runner sweeps if this process is
    killed before the deletion ends). Returns whether there was anything to remove."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return False
    gone = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    os.replace(path, gone)
    if gone.is_dir() and not gone.is_symlink():
        shutil.rmtree(gone)
    else:
        gone.unlink()
    return True


# Errors of the file system being written (full, file too large, read-only, quota), which OSError
# raises without a file name: reported as a DataError naming the output being written.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EDQUOT}


def _naming_write_errors(make):
    """Wrap an atomic_* context manager: a write error of the file system names the output."""

    @contextlib.contextmanager
    @functools.wraps(make)
    def wrapped(path, *args, **kwargs):
        try:
            with make(path, *args, **kwargs) as tmp:
                yield tmp
        except OSError as err:
            if err.errno not in _WRITE_ERRNOS:
                raise
            from seqvpr.errors import DataError

            raise DataError(path, f"cannot write: {err.strerror} (errno {err.errno}); the previous output is kept") from err

    return wrapped


atomic_path = _naming_write_errors(atomic_path)
atomic_dir = _naming_write_errors(atomic_dir)

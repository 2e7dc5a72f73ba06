"""One run per pipeline home, and the temporary folders a killed run leaves behind.

`home_lock` holds an exclusive `flock` on `<home>/.seqvpr/run.lock` for the whole `seqvpr run`;
the kernel drops it when the process dies, however it dies, so a lock is never stale. Every asset
step, whichever door started it (`seqvpr run` or `dagster dev`), holds `<home>/.seqvpr/steps.lock`
shared while it runs (`step_lock`). `sweep_temporaries` deletes the hidden temporary names that
seqvpr.atomic (`.partial`, `.old-`) and dataset acquisition (`.extracting`, `.link-`) use only
while it holds both locks exclusively (`no_steps_running`): no step of any run can be writing them.
Helper processes (a runner's worker, a decoding worker) start from a forkserver
(`forkserver_context`) and `leave_with` ends each soon after the process it works for, however
that one ended.
"""
from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from seqvpr.layout import Layout

LOCK_NAME = "run.lock"
STEP_LOCK_NAME = "steps.lock"
STATE_DIR = ".seqvpr"
# `.<name>.<random>.partial` (atomic files and folders, atomic_remove), `.<name>.<random>.extracting`
# (archive extraction), `.<name>.old-<pid>` (a folder being swapped out by atomic_dir or
# acquire.link_in_place), `.<name>.link-<pid>` (the link link_in_place is about to swap in).
TEMPORARY = re.compile(r"^\..+\.(partial|extracting|old-\d+|link-\d+)$")


def state_dir(home: str | Path) -> Path:
    return Path(home) / STATE_DIR


@contextlib.contextmanager
def home_lock(home: str | Path, on_wait: Callable[[str], None] | None = None) -> Iterator[int]:
    """Hold the home's run lock; if another run holds it, say so through ``on_wait`` and wait.

    Yields the lock's file descriptor, which child processes should close."""
    path = state_dir(home) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            if on_wait is not None:
                on_wait(f"another seqvpr run ({holder}) is using {home}; waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        yield fd
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def forkserver_context(preload: list[str]) -> multiprocessing.context.BaseContext:
    """The forkserver start method, with ``preload`` (module names) imported by the server if it is
    not running yet. Its children start from a process in which nothing but imports has run: a
    process forked after its parent ran a parallel torch operation (GNU OpenMP) or an OpenCV call
    hangs in its own first one, and CUDA state must not be forked either."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(preload)
    return context


def leave_with(pid: int, interval: float = 1.0) -> None:
    """Exit this process within ``interval`` seconds (s) of process ``pid`` ending: a daemon thread
    polls it. For processes started from a forkserver, which are not ``pid``'s children, so neither a
    parent-death signal nor a watchdog of the parent sees ``pid`` killed; the forkserver itself
    stays while any of its children does."""
    def watch() -> None:
        while True:
            time.sleep(interval)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)

    threading.Thread(target=watch, name=f"leave-with-{pid}", daemon=True).start()


def _lock_fd(home: str | Path, name: str) -> int:
    path = state_dir(home) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


@contextlib.contextmanager
def step_lock(home: str | Path) -> Iterator[None]:
    """Held (shared) by an asset step for as long as it may write temporaries in the home."""
    fd = _lock_fd(home, STEP_LOCK_NAME)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def no_steps_running(home: str | Path) -> Iterator[bool]:
    """Yields True while no asset step runs on the home (none can start meanwhile), False if one
    does (a run started from `dagster dev`, say): then its temporaries must be left alone."""
    fd = _lock_fd(home, STEP_LOCK_NAME)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)


def sweep_temporaries(home: str | Path) -> list[Path]:
    """Delete the temporary files and folders of dead runs in the home's output folders (data/,
    struct_files/, shards/, exports/); returns what was removed.

    Call only while holding `home_lock` and inside `no_steps_running` (when it yields True). Symlinks are never followed, so a user's dataset linked
    in as a local source is never looked into; nothing else in the home (a checkout, say) is."""
    layout = Layout.from_home(home)
    removed = []
    for root in (layout.data_root, layout.struct_root, layout.shard_root, layout.export_root):
        for folder, dirs, names in os.walk(root):
            for name in [*dirs, *names]:
                if TEMPORARY.match(name):
                    path = Path(folder) / name
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    else:
                        path.unlink()
                    removed.append(path)
            dirs[:] = [d for d in dirs if not TEMPORARY.match(d)]
    return removed

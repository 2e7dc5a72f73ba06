"""The raw-data stage: one dataset put at ``raw/<dataset>`` from one source (synthetic, local, url).

`acquire_dataset` (what the `*_raw` assets call) records which source filled ``raw/<dataset>``
in ``raw/.<dataset>.source.json`` (source plus seed and generator-code digest, local path, or
manifest digest). The same source again is a no-op (synthetic) or an idempotent resume
(local, url); a different source replaces the folder; a folder without a stamp (put there by
hand) is never deleted.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable

from seqvpr import stamps
from seqvpr.acquire.download import Progress, download
from seqvpr.acquire.extract import is_archive
from seqvpr.acquire.ingest import extract_archives, ingest_local, link_loose
from seqvpr.acquire.manifest import load_manifest
from seqvpr.atomic import atomic_dir
from seqvpr.errors import DataError
from seqvpr.hashing import file_sha256
from seqvpr.layout import DATASETS

log = logging.getLogger(__name__)


SOURCES = ("synthetic", "local", "url")


def claim_folder(raw: Path, wanted: dict) -> bool:
    """`seqvpr.stamps.claim_folder`, after refusing a local source that lies in what would be removed
    (or, for a pipeline home's raw folder, anywhere in that home, where the pipeline replaces folders)."""
    if wanted.get("source") == "local":
        from seqvpr.layout import Layout

        local, here = Path(wanted["path"]).resolve(), Path(os.path.abspath(raw))  # raw may link to a user's copy
        home = here.parents[2] if len(here.parents) > 2 else None
        guarded = home if home is not None and Layout.from_home(home).raw(here.name) == here else here
        if local == guarded or guarded in local.parents or local in guarded.parents:
            raise DataError(local, f"the local source lies inside the pipeline's folder {guarded}, where the pipeline "
                                   "replaces folders; keep your copy outside it (e.g. /datasets/<name>) and point path at it")
    return stamps.claim_folder(raw, wanted, hint="or use source=local with path pointing at it")


def _tree_size(root: Path) -> tuple[int, int]:
    """(files, bytes) below ``root``, following ``root`` itself if it is a symlink but no links inside."""
    files = size = 0
    for folder, _, names in os.walk(root.resolve()):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(folder, name)).st_size
    return files, size


def _progress_logger(log_info: Callable[[str], None], name: str, every_s: float = 10.0) -> Progress:
    last = [0.0]

    def report(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s or done == total:
            last[0] = now
            share = f" ({100 * done / total:.1f}%)" if total else ""
            log_info(f"{name}: {done / 2**20:.1f} MiB{share}")

    return report


def acquire_dataset(dataset: str, raw: str | Path, downloads: str | Path, truth: str | Path,
                    source: str = "synthetic", path: str = "", manifest: str = "", seed: int = 0,
                    scale: dict | None = None, log_info: Callable[[str], None] = log.info, **download_kw) -> dict:
    """Put ``dataset`` at ``raw`` from one source; returns a summary for the asset's metadata.

    synthetic: `seqvpr.synthetic.generate` (``scale``: the generator's size parameters) into a
        temporary folder swapped in whole (ground truth to ``truth``); skipped when a stamp says
        the same seed, scale and generator code made it.
    local: `ingest_local(path, raw, dataset)`.
    url: `download_manifest(manifest, downloads)`, then the archives are extracted into ``raw``
        and other files linked in.
    """
    raw, downloads, truth = Path(raw), Path(downloads), Path(truth)
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    summary = {"dataset": dataset, "source": source, "checksums_verified": 0, "archives_extracted": 0,
               "archives_skipped": 0, "linked": 0, "skipped": False}
    if source == "synthetic":
        from seqvpr.synthetic import world_stamp

        wanted = world_stamp(seed, scale or {})
        if claim_folder(raw, wanted):
            log_info(f"{dataset}: synthetic world for seed {seed} already generated at {raw}")
            summary["skipped"] = True
        else:
            from seqvpr.synthetic import generate

            log_info(f"{dataset}: generating the synthetic world (seed {seed}) into {raw}")
            with atomic_dir(raw) as tmp_raw, atomic_dir(truth) as tmp_truth:
                generate(dataset, tmp_raw, seed=seed, truth_root=tmp_truth, **(scale or {}))
    elif source == "local":
        if not path:
            raise ValueError("source=local needs path (the folder holding your copy of the dataset)")
        path = str(Path(path).expanduser())
        wanted = {"source": source, "path": str(Path(path).resolve())}
        claim_folder(raw, wanted)
        stamps.write_source_stamp(raw, wanted)  # ingest is resumable: a failed run may be continued
        log_info(f"{dataset}: ingesting the local copy at {path}")
        report = ingest_local(path, raw, dataset)
        summary.update(archives_extracted=len(report.extracted), archives_skipped=len(report.skipped),
                       linked=len(report.linked), mode=report.mode, notes=report.notes)
        for note in report.notes:
            log_info(note)
    elif source == "url":
        if not manifest:
            raise ValueError("source=url needs manifest (a JSON list of {url, filename, size, sha256})")
        entries = load_manifest(manifest)
        wanted = {"source": source, "manifest": file_sha256(Path(manifest))}
        claim_folder(raw, wanted)
        stamps.write_source_stamp(raw, wanted)  # downloads and extraction resume: a failed run may be continued
        paths = []
        for entry in entries:
            log_info(f"{dataset}: downloading {entry.filename} ({entry.size or '?'} bytes)")
            paths.append(download(entry.url, downloads / entry.filename, sha256=entry.sha256, size=entry.size,
                                  progress=_progress_logger(log_info, entry.filename), **download_kw))
        archives = [p for p in paths if is_archive(p)]
        report = extract_archives(archives, raw, dataset)
        link_loose([p for p in paths if p not in archives], raw, report)
        summary.update(checksums_verified=sum(e.sha256 is not None for e in entries),
                       archives_extracted=len(report.extracted), archives_skipped=len(report.skipped),
                       linked=len(report.linked), downloaded=len(paths))
    else:
        raise ValueError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    stamps.write_source_stamp(raw, wanted)
    summary["files"], summary["bytes"] = _tree_size(raw)
    log_info(f"{dataset}: {summary['files']} files, {summary['bytes'] / 2**20:.1f} MiB at {raw}")
    return summary

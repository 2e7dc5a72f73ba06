"""A user's local copy of a dataset, and the archives of the real distributions.

`ingest_local` takes a user's folder: if it is already in the dataset layout (a RobotCar run
folder, a nuScenes ``v1.0-*`` table folder, Nordland season folders) the destination becomes a
symlink to it (nothing is copied); otherwise every archive in it is extracted into the
destination and other top-level entries (camera models, GPS files) are symlinked in.

Real archive names and layouts (what `ingest_local` recognises):

Oxford RobotCar (robotcar-dataset.robots.ox.ac.uk/datasets/<run>/, see the SDK README in
    ori-mrg/robotcar-dataset-sdk): per run and sensor, ``.tar`` chunks of at most 5 GB covering
    the same time window for all sensors, e.g. ``2014-12-16-18-44-24_stereo_left_01.tar``,
    ``..._stereo_left_02.tar`` (or ``_stereo_centre_NN``), ``2014-12-16-18-44-24_gps.tar``. Members
    start with the run folder (``<run>/stereo/left/<timestamp>.png``, ``<run>/stereo.timestamps``,
    ``<run>/gps/ins.csv``), so all chunks are extracted into the same folder; any subset of chunks
    will do (the loader counts the frames of the others). Camera ``models/`` come from the SDK
    repository, not from the tars: a loose ``models`` folder next to the tars is linked in (or
    set the frames' ``models_dir``).
nuScenes (nuscenes.org/download; S3 names as in the devkit issues): ``v1.0-mini.tgz`` (maps/,
    samples/, sweeps/, v1.0-mini/) or ``v1.0-trainval_meta.tgz`` (maps/, v1.0-trainval/) plus
    ``v1.0-trainval01_blobs.tgz`` .. ``v1.0-trainval10_blobs.tgz`` (samples/, sweeps/; or the
    smaller ``v1.0-trainvalNN_keyframes.tgz``). All are extracted into one dataroot.
Nordland (NRK video frames; e.g. ``summer.tar.gz`` (members ``summer/images-NNNNN.png``) and
    ``winter.tar.gz`` (bare ``images-NNNNN.png``) on seqNet's Adelaide share, as
    gmberton/VPR-datasets-downloader's ``download_nordland.py`` unpacks them): one archive per
    season with frames ``images-NNNNN.png``. An archive whose single top-level
    folder is the season name is extracted into the dataset root; otherwise its members go
    into ``<root>/<season>/``, the season being the catalog season named in the archive's file
    name ("autumn" counts as fall).

"""
from __future__ import annotations

import os
import posixpath
import re
import shutil
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from seqvpr.acquire.extract import CORRUPT, ZIP_SUFFIXES, already_extracted, extract, is_archive
from seqvpr.datasets.catalog import NORDLAND_SEASONS
from seqvpr.errors import DataError
from seqvpr.layout import DATASETS

_ROBOTCAR_RUN = re.compile(r"^\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}$")


@dataclass
class IngestReport:
    """What an ingest did: linked the folder, or extracted archives (and linked loose entries)."""

    mode: str  # "linked" | "extracted"
    extracted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def in_dataset_layout(folder: Path, dataset: str) -> bool:
    """Does ``folder`` already look like the unpacked dataset (so it can be used in place)?"""
    if not folder.is_dir():
        return False
    subdirs = [p for p in folder.iterdir() if p.is_dir()]
    if dataset == "robotcar":
        return any(_ROBOTCAR_RUN.match(p.name) for p in subdirs)
    if dataset == "nuscenes":
        return any(p.name.startswith("v1.0-") and (p / "scene.json").is_file() for p in subdirs)
    if dataset == "nordland":
        return any(p.name in NORDLAND_SEASONS for p in subdirs)
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")


def _nordland_season(archive: Path) -> str:
    name = archive.name.lower().replace("autumn", "fall")
    seasons = [s for s in NORDLAND_SEASONS if s in name]
    if len(seasons) != 1:
        raise DataError(archive, f"cannot tell the Nordland season from the name (expected one of {', '.join(NORDLAND_SEASONS)})")
    return seasons[0]


def _top_level_names(archive: Path) -> set[str]:
    try:
        if archive.name.lower().endswith(ZIP_SUFFIXES):
            with zipfile.ZipFile(archive) as zf:
                names = zf.namelist()
        else:
            with tarfile.open(archive, "r:*") as tar:
                names = [m.name for m in tar]
    except CORRUPT as exc:
        raise DataError(archive, f"truncated or corrupt archive: {exc}") from exc
    return {posixpath.normpath(n).split("/")[0] for n in names}


def _archive_subfolder(archive: Path, dataset: str) -> str:
    """Where in the dataset root an archive's members go: the root, or a season folder for bare Nordland frames."""
    if dataset != "nordland":
        return ""
    season = _nordland_season(archive)
    return "" if _top_level_names(archive) == {season} else season


def _real_dir(dest: Path) -> None:
    """Make ``dest`` a real folder (a previous in-place ingest may have left a symlink there)."""
    if dest.is_symlink():
        dest.unlink()
    dest.mkdir(parents=True, exist_ok=True)


def extract_archives(archives: Iterable[Path], dest: str | Path, dataset: str) -> IngestReport:
    """Extract a dataset's archives (in name order) into ``dest``."""
    dest = Path(dest)
    _real_dir(dest)
    report = IngestReport("extracted")
    for archive in sorted(Path(a) for a in archives):
        # checked first so a re-run does not read the archive just to find its subfolder
        if already_extracted(archive, dest) or not extract(archive, dest, _archive_subfolder(archive, dataset)):
            report.skipped.append(archive.name)
        else:
            report.extracted.append(archive.name)
    return report


def link_in_place(src: Path, dest: Path) -> None:
    """Point ``dest`` at ``src`` with a symlink, replacing whatever ``dest`` was."""
    src = src.resolve()
    if dest.is_symlink() and dest.resolve() == src:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_link = dest.with_name(f".{dest.name}.link-{os.getpid()}")
    if tmp_link.is_symlink():
        tmp_link.unlink()
    tmp_link.symlink_to(src, target_is_directory=True)
    if dest.exists() and not dest.is_symlink():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
        os.replace(tmp_link, dest)
        shutil.rmtree(old)
    else:
        os.replace(tmp_link, dest)
    marker_dir = dest.parent / f".{dest.name}.extracted"
    if marker_dir.exists():
        shutil.rmtree(marker_dir)  # earlier extractions no longer describe dest


def link_loose(files: Iterable[Path], dest: Path, report: IngestReport) -> None:
    """Symlink non-archive files/folders (camera models, GPS files) into ``dest``, keeping what is there."""
    for loose in files:
        link = dest / loose.name
        if not link.exists() and not link.is_symlink():
            link.symlink_to(loose.resolve(), target_is_directory=loose.is_dir())
            report.linked.append(loose.name)


def _archive_target(archive: Path, dataset: str) -> str | None:
    """The top-level folder an archive's members land in, told from its name (None: not known)."""
    if dataset == "nordland":
        try:
            return _nordland_season(archive)
        except DataError:
            return None
    match = re.match(r"^(\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})_", archive.name)
    return match.group(1) if dataset == "robotcar" and match else None


def _what_is_there(src: Path, dataset: str) -> str:
    """For the message of a folder that is neither layout nor archives: what it holds, and the
    near-misses of the layout (season folders in another case, the nuScenes table folder itself)."""
    if dataset == "robotcar" and (src / "stereo.timestamps").is_file():
        return f"; it is the RobotCar run folder {src.name}/ itself: point path at its parent {src.parent}, the folder of runs"
    if dataset == "nordland" and src.name in NORDLAND_SEASONS:
        return f"; it is the season folder {src.name}/ itself: point path at its parent {src.parent}, the folder of seasons"
    if dataset == "nuscenes" and (src / "scene.json").is_file():
        return (f"; it is the nuScenes table folder {src.name}/ itself: point path at its parent {src.parent}, "
                f"the dataroot that holds maps/, samples/ and {src.name}/")
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in src.iterdir() if not p.name.startswith("."))
    hint = f"; it holds {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}" if names else "; it is empty"
    if dataset == "nordland":
        alike = [n for n in names if n.endswith("/") and n[:-1].lower().replace("autumn", "fall") in NORDLAND_SEASONS]
        if alike:
            hint += (f" (season folders are named {', '.join(NORDLAND_SEASONS)}, in lower case: rename "
                     f"{', '.join(alike)})")
    if dataset == "nuscenes" and any(p.is_dir() and p.name.startswith("v1.0-") for p in src.iterdir()):
        hint += " (a v1.0-* folder without scene.json: the metadata archive was not fully extracted)"
    return hint


def ingest_local(src: str | Path, dest: str | Path, dataset: str) -> IngestReport:
    """Use a local copy: link a folder that is already in the dataset layout, else extract its archives.

    A layout folder that also holds archives of parts it lacks (extracted ``summer/`` beside a packed
    ``winter.tar.gz``; runs beside other runs' tar chunks) is ingested as a folder of archives: they
    are extracted and the extracted parts linked in. Archives whose part is already there extracted,
    or whose part cannot be told from the name, are not extracted, with a note saying so."""
    src, dest = Path(src).expanduser(), Path(dest)
    if src.is_file():
        raise DataError(src, "is a file, not a folder: point path at the folder holding it"
                             + (" (its archives are extracted from there)" if is_archive(src) else ""))
    if not src.is_dir():
        raise DataError(src, "local dataset folder not found")
    entries = sorted(p for p in src.iterdir()
                     if not p.name.startswith(".") and not p.name.endswith((".part", ".verified.json")))
    archives = [p for p in entries if p.is_file() and is_archive(p)]
    if in_dataset_layout(src, dataset):
        targets = {a: _archive_target(a, dataset) for a in archives}
        if not archives or not all(t is not None and not (src / t).exists() for t in targets.values()):
            link_in_place(src, dest)
            notes = [f"{a}: not extracted, the folder is used as it is"
                     + (f" and already holds {t}/" if t is not None and (src / t).exists() else "")
                     for a, t in targets.items()]
            return IngestReport("linked", linked=[str(src.resolve())], notes=notes)
    if not archives:
        raise DataError(src, f"neither a {dataset} folder layout nor a folder of {dataset} archives"
                             + _what_is_there(src, dataset))
    report = extract_archives(archives, dest, dataset)
    link_loose([p for p in entries if p not in archives], dest, report)
    return report

"""Getting the real datasets onto disk: resumable checksummed downloads, safe extraction, local ingest.

Downloads
    `download` streams one URL to ``<dest>.part``, resumes a partial file with an HTTP Range request
    (a server that ignores Range and answers 200 instead of 206 makes it start over), retries
    connection errors and cut transfers with exponential back-off, verifies size and SHA-256 and
    only then renames the file into place. A verified file is remembered in a sidecar
    ``<dest>.verified.json`` (size, mtime, sha256) so a second call does not hash gigabytes again.

Manifest (JSON; what ``source="url"`` reads)
    A list of objects, one per file, all four keys required::

        [{"url": "https://host/path/v1.0-mini.tgz",   # http(s) URL (signed URLs are fine)
          "filename": "v1.0-mini.tgz",                 # plain file name, no folders
          "size": 4167696325,                          # bytes, integer >= 0, or null if unknown
          "sha256": "4a0c...e1"}]                      # 64 hex digits, or null to skip the check

    `download_manifest` fetches every entry into one folder (in manifest order) and returns the
    paths; the archives among them are then extracted with `extract_archives`.

Extraction
    `extract` unpacks tar (.tar, .tgz/.tar.gz, .tar.bz2, .tar.xz) and zip archives. It refuses any
    member that would land outside the target (absolute names, ``..``, symlinks or hard links
    pointing outside; Python's ``data`` tar filter runs as a second line of defence), extracts into
    a temporary folder next to the target and merges the entries into the target only when the
    whole archive read cleanly, so a truncated or corrupt archive leaves the target untouched. A
    marker ``<target parent>/.<target name>.extracted/<archive>.json`` (size, mtime, sha256, top-level
    entries) makes a second run a no-op; it lives outside the target so the dataset folder keeps its
    exact on-disk format.

Real archive names and layouts (what `ingest_local` recognises)
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

Local copies
    `ingest_local` takes a user's folder: if it is already in the dataset layout (a RobotCar run
    folder, a nuScenes ``v1.0-*`` table folder, Nordland season folders) the destination becomes a
    symlink to it (nothing is copied); otherwise every archive in it is extracted into the
    destination and other top-level entries (camera models, GPS files) are symlinked in.

The raw-data stage
    `acquire_dataset` (what the `*_raw` assets call) records which source filled ``raw/<dataset>``
    in ``raw/.<dataset>.source.json`` (source plus seed and generator-code digest, local path, or
    manifest digest). The same source again is a no-op (synthetic) or an idempotent resume
    (local, url); a different source replaces the folder; a folder without a stamp (put there by
    hand) is never deleted.
"""
from __future__ import annotations

import gzip
import json
import logging
import lzma
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import requests
import urllib3

from seqvpr import stamps
from seqvpr.atomic import atomic_dir, atomic_write_text
from seqvpr.datasets.catalog import NORDLAND_SEASONS
from seqvpr.errors import DataError
from seqvpr.hashing import file_sha256
from seqvpr.layout import DATASETS

log = logging.getLogger(__name__)

Progress = Callable[[int, "int | None"], None]

_CHUNK = 1 << 20
_RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
_TAR_SUFFIXES = (".tar", ".tgz", ".tar.gz", ".tbz2", ".tar.bz2", ".txz", ".tar.xz")
_ZIP_SUFFIXES = (".zip",)
# What reading a damaged archive raises (plain OSErrors such as a full disk are not the archive's fault).
_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ROBOTCAR_RUN = re.compile(r"^\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}$")


# --------------------------------------------------------------------------- hashing


def _verified_stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _known_sha256(path: Path) -> str:
    """sha256 of ``path``, taken from its sidecar stamp while size and mtime still match."""
    st = path.stat()
    stamp = _verified_stamp(path)
    if stamp.exists():
        try:
            rec = json.loads(stamp.read_text())
            if rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
                return rec["sha256"]
        except (ValueError, KeyError):
            pass  # unreadable stamp: hash again and rewrite it
    digest = file_sha256(path)
    _write_stamp(path, digest)
    return digest


def _write_stamp(path: Path, digest: str) -> None:
    st = path.stat()
    atomic_write_text(
        _verified_stamp(path),
        json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}, sort_keys=True),
    )


# --------------------------------------------------------------------------- download


class _Retry(Exception):
    """A transient failure (cut connection, 5xx, short body): try again after back-off."""


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total) of a Content-Range header such as ``bytes 100-199/1000`` or ``bytes */1000``."""
    m = re.match(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", value or "")
    if not m:
        return None, None
    first = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return first, total


def _fetch_once(session, url: str, part: Path, dest: Path, size: int | None, timeout_s: float,
                progress: Progress | None) -> None:
    """One attempt: continue ``part`` from its current length; returns when the body ended cleanly."""
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is not None and have == size and have > 0:
        return
    headers = {"Accept-Encoding": "identity"}  # byte ranges must count bytes of the file itself
    if have:
        headers["Range"] = f"bytes={have}-"
    with session.get(url, headers=headers, stream=True, timeout=timeout_s) as resp:
        status = resp.status_code
        if status == 416 and have:
            _, total = _content_range(resp.headers.get("Content-Range"))
            if total == have:
                return  # the part file already holds the whole resource
            part.unlink()
            raise _Retry(f"HTTP 416 for a {have}-byte partial file; starting over")
        if status in _RETRYABLE_STATUS:
            raise _Retry(f"HTTP {status}")
        if status not in (200, 206):
            raise DataError(dest, f"HTTP {status} from {url}")
        total = size
        if status == 206:
            first, full = _content_range(resp.headers.get("Content-Range"))
            if first != have:
                part.unlink()
                raise _Retry(f"server resumed at byte {first}, expected {have}; starting over")
            total = total if total is not None else full
            mode = "ab"
        else:
            if have:
                log.info("%s: server ignored the Range request; restarting from byte 0", url)
            have = 0
            mode = "wb"
            length = resp.headers.get("Content-Length")
            if total is None and length is not None and length.isdigit():
                total = int(length)
        with open(part, mode) as fh:
            # read1 hands over whatever arrived, so a cut loses no bytes already received
            while chunk := resp.raw.read1(_CHUNK, decode_content=False):
                fh.write(chunk)
                have += len(chunk)
                if progress is not None:
                    progress(have, total)
            fh.flush()
            os.fsync(fh.fileno())
    if total is not None and have < total:
        raise _Retry(f"transfer ended at byte {have} of {total}")


def download(url: str, dest: str | Path, sha256: str | None = None, size: int | None = None,
             retries: int = 5, backoff_s: float = 1.0, session: requests.Session | None = None,
             progress: Progress | None = None, timeout_s: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest``, resumably; ``dest`` appears only once size and sha256 are verified.

    ``retries`` counts consecutive failed attempts that brought no new bytes; an attempt that made
    progress resets the count, so a long download over a flaky link still finishes. The wait before
    the n-th consecutive retry is ``backoff_s * 2**(n-1)``.
    """
    dest = Path(dest)
    sha256 = sha256.lower() if sha256 else None
    if dest.exists():
        if (size is None or dest.stat().st_size == size) and (sha256 is None or _known_sha256(dest) == sha256):
            return dest
        log.info("%s: present but does not match the expected size/sha256; downloading again", dest)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    session = session or requests.Session()
    failures = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            _fetch_once(session, url, part, dest, size, timeout_s, progress)
            break
        except (_Retry, requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError) as exc:
            after = part.stat().st_size if part.exists() else 0
            failures = 0 if after > before else failures + 1
            if failures > retries:
                raise DataError(dest, f"download of {url} failed after {retries} retries: {exc}") from exc
            wait = backoff_s * 2 ** max(failures - 1, 0)
            log.info("%s: %s; retrying in %.2f s", url, exc, wait)
            time.sleep(wait)
    got_size = part.stat().st_size
    if size is not None and got_size != size:
        part.unlink()
        raise DataError(dest, f"size mismatch: expected {size} bytes got {got_size}")
    digest = file_sha256(part)
    if sha256 is not None and digest != sha256:
        part.unlink()
        raise DataError(dest, f"sha256 mismatch: expected {sha256} got {digest}")
    os.replace(part, dest)
    _write_stamp(dest, digest)
    return dest


# --------------------------------------------------------------------------- manifests


@dataclass(frozen=True)
class ManifestEntry:
    url: str
    filename: str
    size: int | None
    sha256: str | None


def load_manifest(source: str | Path | list) -> list[ManifestEntry]:
    """Parse and validate a manifest (a JSON file path or the already-loaded list)."""
    where = str(source) if isinstance(source, (str, Path)) else "<manifest>"
    if isinstance(source, (str, Path)):
        try:
            data = json.loads(Path(source).read_text())
        except FileNotFoundError as exc:
            raise DataError(where, "manifest not found") from exc
        except ValueError as exc:
            raise DataError(where, f"not valid JSON: {exc}") from exc
    else:
        data = source
    if not isinstance(data, list):
        raise DataError(where, "manifest must be a JSON list of {url, filename, size, sha256}")
    entries, seen = [], set()
    for i, item in enumerate(data):
        if not isinstance(item, dict) or set(item) != {"url", "filename", "size", "sha256"}:
            raise DataError(where, f"entry {i}: expected exactly the keys url, filename, size, sha256")
        url, name, size, digest = item["url"], item["filename"], item["size"], item["sha256"]
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise DataError(where, f"entry {i}: url must be http(s), got {url!r}")
        if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
            raise DataError(where, f"entry {i}: filename must be a plain file name, got {name!r}")
        if name in seen:
            raise DataError(where, f"entry {i}: duplicate filename {name!r}")
        seen.add(name)
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise DataError(where, f"entry {i}: size must be a non-negative integer or null, got {size!r}")
        if digest is not None and (not isinstance(digest, str) or not _SHA256.match(digest.lower())):
            raise DataError(where, f"entry {i}: sha256 must be 64 hex digits or null, got {digest!r}")
        entries.append(ManifestEntry(url, name, size, digest.lower() if digest else None))
    return entries


def download_manifest(manifest: str | Path | list, dest_dir: str | Path, **download_kw) -> list[Path]:
    """Download every manifest entry into ``dest_dir``; returns the verified paths in manifest order."""
    dest_dir = Path(dest_dir)
    return [download(e.url, dest_dir / e.filename, sha256=e.sha256, size=e.size, **download_kw)
            for e in load_manifest(manifest)]


# --------------------------------------------------------------------------- extraction


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(_TAR_SUFFIXES) or name.endswith(_ZIP_SUFFIXES)


def _marker(archive: Path, target: Path) -> Path:
    return target.parent / f".{target.name}.extracted" / f"{archive.name}.json"


def _already_extracted(archive: Path, target: Path) -> bool:
    marker = _marker(archive, target)
    if not marker.exists():
        return False
    try:
        rec = json.loads(marker.read_text())
        st = archive.stat()
        if rec["size"] != st.st_size:
            return False
        if rec["mtime_ns"] != st.st_mtime_ns and rec["sha256"] != _known_sha256(archive):
            return False
        return all((target / name).exists() or (target / name).is_symlink() for name in rec["entries"])
    except (ValueError, KeyError, TypeError):
        return False


def _check_member_name(archive: Path, name: str) -> str:
    """The member's normalised relative path; DataError if it is absolute or climbs out with '..'."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise DataError(archive, f"member {name!r} has an absolute path")
    norm = posixpath.normpath(name.replace("\\", "/"))
    if norm == ".." or norm.startswith("../") or ".." in name.replace("\\", "/").split("/"):
        raise DataError(archive, f"member {name!r} escapes the target with '..'")
    return norm


def _check_link(archive: Path, member: tarfile.TarInfo, norm: str) -> None:
    """A link must resolve inside the target: symlinks relative to their folder, hard links to the root."""
    target = member.linkname
    if target.startswith("/") or re.match(r"^[A-Za-z]:", target):
        raise DataError(archive, f"member {member.name!r} links to the absolute path {target!r}")
    base = posixpath.dirname(norm) if member.issym() else ""
    resolved = posixpath.normpath(posixpath.join(base, target))
    if resolved == ".." or resolved.startswith("../"):
        raise DataError(archive, f"member {member.name!r} links outside the target ({target!r})")


def _extract_tar(archive: Path, tmp: Path) -> int:
    count = 0
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            norm = _check_member_name(archive, member.name)
            if member.issym() or member.islnk():
                _check_link(archive, member, norm)
            tar.extract(member, tmp, filter="data")
            count += 1
    return count


def _extract_zip(archive: Path, tmp: Path) -> int:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            _check_member_name(archive, info.filename)
        for info in infos:
            zf.extract(info, tmp)
    return len(infos)


def _merge_into(src: Path, dst: Path) -> None:
    """Move the entries of ``src`` into ``dst``, merging folders that exist in both."""
    dst.mkdir(parents=True, exist_ok=True)
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        target = dst / entry.name
        if entry.is_dir(follow_symlinks=False) and target.is_dir() and not target.is_symlink():
            _merge_into(Path(entry.path), target)
        elif target.is_dir() and not target.is_symlink():
            raise DataError(target, f"is a folder but the archive holds a file of that name ({entry.path})")
        else:
            os.replace(entry.path, target)


def extract(archive: str | Path, target: str | Path, subfolder: str = "") -> bool:
    """Safely unpack ``archive`` into ``target`` (or its ``subfolder``); False when already extracted."""
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise DataError(archive, "archive not found")
    if not is_archive(archive):
        raise DataError(archive, "unknown archive type (expected .tar, .tgz, .tar.gz, .tar.bz2, .tar.xz or .zip)")
    if _already_extracted(archive, target):
        return False
    name = archive.name.lower()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".extracting", dir=target.parent))
    try:
        try:
            count = _extract_zip(archive, tmp) if name.endswith(_ZIP_SUFFIXES) else _extract_tar(archive, tmp)
        except tarfile.FilterError as exc:
            raise DataError(archive, f"unsafe member refused: {exc}") from exc
        except _CORRUPT as exc:
            raise DataError(archive, f"truncated or corrupt archive: {exc}") from exc
        entries = sorted(posixpath.join(subfolder, name) for name in os.listdir(tmp))
        _merge_into(tmp, target / subfolder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    st = archive.stat()
    atomic_write_text(_marker(archive, target), json.dumps(
        {"archive": archive.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
         "sha256": _known_sha256(archive), "members": count, "entries": entries}, indent=1, sort_keys=True))
    log.info("extracted %s (%d members) into %s", archive, count, target)
    return True


# --------------------------------------------------------------------------- ingest


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
        if archive.name.lower().endswith(_ZIP_SUFFIXES):
            with zipfile.ZipFile(archive) as zf:
                names = zf.namelist()
        else:
            with tarfile.open(archive, "r:*") as tar:
                names = [m.name for m in tar]
    except _CORRUPT as exc:
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
        if _already_extracted(archive, dest) or not extract(archive, dest, _archive_subfolder(archive, dataset)):
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


def _link_loose(files: Iterable[Path], dest: Path, report: IngestReport) -> None:
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
    _link_loose([p for p in entries if p not in archives], dest, report)
    return report


# --------------------------------------------------------------------------- the raw-data stage


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
        _link_loose([p for p in paths if p not in archives], raw, report)
        summary.update(checksums_verified=sum(e.sha256 is not None for e in entries),
                       archives_extracted=len(report.extracted), archives_skipped=len(report.skipped),
                       linked=len(report.linked), downloaded=len(paths))
    else:
        raise ValueError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    stamps.write_source_stamp(raw, wanted)
    summary["files"], summary["bytes"] = _tree_size(raw)
    log_info(f"{dataset}: {summary['files']} files, {summary['bytes'] / 2**20:.1f} MiB at {raw}")
    return summary

"""Safe extraction of tar and zip archives.

`extract` unpacks tar (.tar, .tgz/.tar.gz, .tar.bz2, .tar.xz) and zip archives. It refuses any
member that would land outside the target (absolute names, ``..``, symlinks or hard links
pointing outside; Python's ``data`` tar filter runs as a second line of defence), extracts into
a temporary folder next to the target and merges the entries into the target only when the
whole archive read cleanly, so a truncated or corrupt archive leaves the target untouched. A
marker ``<target parent>/.<target name>.extracted/<archive>.json`` (size, mtime, sha256, top-level
entries) makes a second run a no-op; it lives outside the target so the dataset folder keeps its
exact on-disk format.
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
import zipfile
import zlib
from pathlib import Path

from seqvpr.atomic import atomic_write_text
from seqvpr.acquire.download import known_sha256
from seqvpr.errors import DataError

log = logging.getLogger(__name__)

_TAR_SUFFIXES = (".tar", ".tgz", ".tar.gz", ".tbz2", ".tar.bz2", ".txz", ".tar.xz")
ZIP_SUFFIXES = (".zip",)
# What reading a damaged archive raises (plain OSErrors such as a full disk are not the archive's fault).
CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(_TAR_SUFFIXES) or name.endswith(ZIP_SUFFIXES)


def _marker(archive: Path, target: Path) -> Path:
    return target.parent / f".{target.name}.extracted" / f"{archive.name}.json"


def already_extracted(archive: Path, target: Path) -> bool:
    marker = _marker(archive, target)
    if not marker.exists():
        return False
    try:
        rec = json.loads(marker.read_text())
        st = archive.stat()
        if rec["size"] != st.st_size:
            return False
        if rec["mtime_ns"] != st.st_mtime_ns and rec["sha256"] != known_sha256(archive):
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
    if already_extracted(archive, target):
        return False
    name = archive.name.lower()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".extracting", dir=target.parent))
    try:
        try:
            count = _extract_zip(archive, tmp) if name.endswith(ZIP_SUFFIXES) else _extract_tar(archive, tmp)
        except tarfile.FilterError as exc:
            raise DataError(archive, f"unsafe member refused: {exc}") from exc
        except CORRUPT as exc:
            raise DataError(archive, f"truncated or corrupt archive: {exc}") from exc
        entries = sorted(posixpath.join(subfolder, name) for name in os.listdir(tmp))
        _merge_into(tmp, target / subfolder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    st = archive.stat()
    atomic_write_text(_marker(archive, target), json.dumps(
        {"archive": archive.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
         "sha256": known_sha256(archive), "members": count, "entries": entries}, indent=1, sort_keys=True))
    log.info("extracted %s (%d members) into %s", archive, count, target)
    return True

"""Resumable, checksummed downloads of one URL.

`download` streams one URL to ``<dest>.part``, resumes a partial file with an HTTP Range request
(a server that ignores Range and answers 200 instead of 206 makes it start over), retries
connection errors and cut transfers with exponential back-off, verifies size and SHA-256 and
only then renames the file into place. A verified file is remembered in a sidecar
``<dest>.verified.json`` (size, mtime, sha256) so a second call does not hash gigabytes again.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Callable

import requests
import urllib3

from seqvpr.atomic import atomic_write_text
from seqvpr.errors import DataError
from seqvpr.hashing import file_sha256

log = logging.getLogger(__name__)

Progress = Callable[[int, "int | None"], None]

_CHUNK = 1 << 20
_RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


def _verified_stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def known_sha256(path: Path) -> str:
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
        if (size is None or dest.stat().st_size == size) and (sha256 is None or known_sha256(dest) == sha256):
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

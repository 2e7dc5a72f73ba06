"""The manifest that ``source="url"`` reads (JSON), and downloading every file it lists.

A list of objects, one per file, all four keys required::

    [{"url": "https://host/path/v1.0-mini.tgz",   # http(s) URL (signed URLs are fine)
      "filename": "v1.0-mini.tgz",                 # plain file name, no folders
      "size": 4167696325,                          # bytes, integer >= 0, or null if unknown
      "sha256": "4a0c...e1"}]                      # 64 hex digits, or null to skip the check

`download_manifest` fetches every entry into one folder (in manifest order) and returns the
paths; the archives among them are then extracted with `extract_archives`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from seqvpr.acquire.download import download
from seqvpr.errors import DataError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


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

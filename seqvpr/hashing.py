"""SHA-256 of files, the identity the pipeline gives downloads, frames, shards and weights."""
import hashlib
from pathlib import Path

CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks so a checkpoint of hundreds of MB is never held whole."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()

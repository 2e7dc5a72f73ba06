"""Getting the real datasets onto disk, one module per job:

- `download`: one URL to a file, resumable (HTTP Range), retried, size- and SHA-256-checked.
- `manifest`: the JSON list of files that ``source="url"`` reads, and fetching all of them.
- `extract`: tar and zip archives unpacked safely (nothing outside the target, all or nothing).
- `ingest`: a user's local copy used in place or extracted, and the real distributions' archive
  names and layouts (Oxford RobotCar, nuScenes, Nordland).
- `sources`: the raw-data stage the `*_raw` assets call, `acquire_dataset`.
"""
from seqvpr.acquire.download import download
from seqvpr.acquire.extract import extract, is_archive
from seqvpr.acquire.ingest import IngestReport, extract_archives, in_dataset_layout, ingest_local, link_in_place
from seqvpr.acquire.manifest import ManifestEntry, download_manifest, load_manifest
from seqvpr.acquire.sources import SOURCES, acquire_dataset, claim_folder

__all__ = ["SOURCES", "IngestReport", "ManifestEntry", "acquire_dataset", "claim_folder", "download",
           "download_manifest", "extract", "extract_archives", "in_dataset_layout", "ingest_local", "is_archive",
           "link_in_place", "load_manifest"]

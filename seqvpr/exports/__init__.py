"""Drop-in exports: folders that other code bases read unchanged.

- ``seqnet`` (seqvpr/exports/seqnet.py): a seqNet working directory;
- ``adapt-stformer`` (adapt_stformer.py): Adapt-STformer's structFiles and raw_384 input arrays;
- ``gsv`` (vpr_datasets.py): the VPR-datasets-downloader image layout.

Each export is built in a temporary folder beside ``<home>/exports/<consumer>/<benchmark>/`` and
renamed into place at the end (seqvpr.atomic.atomic_dir): a killed export leaves no folder under
the final name, and ``export.json`` inside names the commands that consume it.
"""
from __future__ import annotations

from pathlib import Path

from seqvpr.atomic import atomic_dir, remove_stale_dirs
from seqvpr.errors import DataError
from seqvpr.exports import adapt_stformer, seqnet, vpr_datasets
from seqvpr.exports.common import descriptor_type, shard_descriptors
from seqvpr.layout import Layout
from seqvpr.splits import read_split

FORMATS = {"seqnet": seqnet, "adapt-stformer": adapt_stformer, "gsv": vpr_datasets}


def supported(consumer: str, benchmark: str) -> bool:
    return FORMATS[consumer].supports(benchmark)


def export(layout: Layout, consumer: str, benchmark: str, model_id: str | None = None,
           raw_inputs: bool = False) -> tuple[Path, dict]:
    """Write one export from the benchmark's split table (and its shards for seqNet, its
    normalised frames for the images and raw arrays). ``model_id``: the encoder's cache id, which
    names seqNet's descType. Returns the folder and its export.json content."""
    source = layout.split_table(benchmark)
    table, bench = read_split(source)
    if not supported(consumer, benchmark):
        raise DataError(source, f"no {consumer} export for benchmark {benchmark!r}")
    out_dir = layout.exports(consumer, benchmark)
    if "@" in str(out_dir):
        raise DataError(out_dir, "consumers split file paths on '@': the export path must not contain one")
    remove_stale_dirs(out_dir)
    if consumer == "seqnet":
        if model_id is None:
            raise DataError(source, "the seqNet export needs the encoder's model id to name its descType")
        descriptors = shard_descriptors(layout.shard_root / benchmark, table, bench)
    with atomic_dir(out_dir) as tmp:
        if consumer == "seqnet":
            info = seqnet.write_seqnet(tmp, table, bench, descriptors, descriptor_type(model_id), source)
        elif consumer == "adapt-stformer":
            info = adapt_stformer.write_adapt_stformer(tmp, table, bench, layout.data_root if raw_inputs else None, source)
        else:
            info = vpr_datasets.write_vpr_datasets(tmp, table, bench, layout.data_root, source)
    return out_dir, info

"""Drop-in exports: folders that other code bases read unchanged.

- ``seqnet`` (seqvpr/exports/seqnet.py): a seqNet working directory;
- ``adapt-stformer`` (adapt_stformer.py): Adapt-STformer's structFiles and raw_384 input arrays;
- ``gsv`` (vpr_datasets.py): the VPR-datasets-downloader image layout.

Each export is built in a temporary folder beside ``<home>/exports/<consumer>/<benchmark>/`` and
renamed into place at the end (seqvpr.atomic.atomic_dir): a killed export leaves no folder under
the final name, and ``export.json`` inside says first whether the consumer can load it, then
names the commands that consume it.
"""
from __future__ import annotations

from pathlib import Path

from seqvpr.atomic import atomic_dir
from seqvpr.errors import DataError
from seqvpr.exports import adapt_stformer, seqnet, vpr_datasets
from seqvpr.exports.common import descriptor_type, shard_descriptors, shard_model_id, split_rows
from seqvpr.layout import Layout
from seqvpr.splits import read_split

FORMATS = {"seqnet": seqnet, "adapt-stformer": adapt_stformer, "gsv": vpr_datasets}


def supported(consumer: str, benchmark: str) -> bool:
    return FORMATS[consumer].supports(benchmark)


def export(layout: Layout, consumer: str, benchmark: str, raw_inputs: bool = False) -> tuple[Path, dict]:
    """Write one export from the benchmark's split table (and its shards for seqNet, its
    normalised frames for the images and raw arrays). seqNet's descType names the encoder that
    built the shards, read from their manifests (``manifest["encoder"]["model_id"]``), so the
    descriptors can only be published under their own encoder's name. Returns the folder and its
    export.json content.

    The temporary folders of killed exports are not removed here: a concurrent export may be
    writing one. The callers that hold the home's lock sweep them (seqvpr.housekeeping)."""
    source = layout.split_table(benchmark)
    if not supported(consumer, benchmark):
        raise DataError(source, f"no {consumer} export for benchmark {benchmark!r}")
    table, bench = read_split(source)
    out_dir = layout.exports(consumer, benchmark)
    if consumer == "seqnet":
        desc_type = descriptor_type(shard_model_id([layout.shards(benchmark, p.split) for p in split_rows(table, bench)]))
        descriptors = shard_descriptors(layout.shard_root / benchmark, table, bench)
    with atomic_dir(out_dir) as tmp:
        if consumer == "seqnet":
            info = seqnet.write_seqnet(tmp, table, bench, descriptors, desc_type, source)
        elif consumer == "adapt-stformer":
            info = adapt_stformer.write_adapt_stformer(tmp, table, bench, layout.data_root if raw_inputs else None, source)
        else:
            info = vpr_datasets.write_vpr_datasets(tmp, table, bench, layout.data_root, source)
    return out_dir, info

"""Splits: which frames of a frame table form a benchmark's train/val/test database and query
sets, and their pairs; the split table on disk.

For a benchmark (`seqvpr.benchmarks`: traversals or conditions per split and role) it subsamples
every traversal by distance travelled (frames for Nordland), restricts splits to route sections
(RobotCar) or place-index ranges (Nordland), computes sequence bounds and pairs, and produces the
split table (schemas/split_table.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.frame_table import FRAME_TABLE_SCHEMA
from schemas.split_table import ROLES, SPLIT_TABLE_SCHEMA, SPLITS
from seqvpr.atomic import atomic_path
from seqvpr.benchmarks import BENCHMARKS, Benchmark, SplitSpec, config_fields, configure
from seqvpr.datasets.catalog import NORDLAND_SEASONS, NUSCENES_CONDITIONS, ROBOTCAR_TRAVERSALS
from seqvpr.datasets.frames import write_table
from seqvpr.errors import DataError
from seqvpr.geometry import assign_sections, cumulative_distance, route_fractions, sections_of, subsample_by_distance
from seqvpr.pairs import Pairs, compute_pairs
from seqvpr.seqbounds import run_bounds


@dataclass
class SplitResult:
    """The split table plus each split's pairs (negatives are kept out of the table: they are
    num_queries x negatives_per_query)."""

    table: pa.Table
    pairs: dict[str, Pairs] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # split -> what it needs that the data lacks


def _validate(frames: pd.DataFrame, source: Path | str, uses_place_index: bool) -> None:
    missing = [f.name for f in FRAME_TABLE_SCHEMA if f.name not in frames.columns]
    if missing:
        raise DataError(source, f"frame table lacks columns {missing}")
    if frames["frame_id"].duplicated().any():
        dup = frames.loc[frames["frame_id"].duplicated(), "frame_id"].iloc[0]
        raise DataError(source, f"duplicate frame_id {dup!r}")
    if uses_place_index:  # positions only label plots: Nordland frames seqNet does not locate have NaN ones
        negative = frames["place_index"].to_numpy() < 0
        if negative.any():
            row = frames[negative].iloc[0]
            raise DataError(source, f"frame {row['frame_id']!r} has place_index {row['place_index']}, not a Nordland-clean index")
        return
    numeric = frames[["easting", "northing", "heading_deg"]].to_numpy(dtype=np.float64)
    if not np.isfinite(numeric).all():
        raise DataError(source, "non-finite easting/northing/heading_deg")


def _travelled(frames: pd.DataFrame, uses_place_index: bool) -> np.ndarray:
    """Distance along each traversal (frames sorted by traversal, time)."""
    travelled = np.zeros(len(frames))
    for _, rows in frames.groupby("traversal", sort=False).indices.items():
        if uses_place_index:
            travelled[rows] = frames["place_index"].to_numpy()[rows].astype(np.float64)
        else:
            travelled[rows] = cumulative_distance(frames[["easting", "northing"]].to_numpy()[rows])
    return travelled


def _keep_separated(frames: pd.DataFrame, travelled: np.ndarray, separation: float) -> np.ndarray:
    keep = np.zeros(len(frames), dtype=bool)
    for _, rows in frames.groupby("traversal", sort=False).indices.items():
        keep[rows[subsample_by_distance(travelled[rows], separation)]] = True
    return keep


def _route_fraction(frames: pd.DataFrame, bench: Benchmark, source) -> np.ndarray:
    """Where each frame lies along the route reference traversal, as a fraction of its length
    (that of the nearest reference point); NaN when the benchmark has no route reference. When the
    reference run was not downloaded, the first database run present drives the same route instead,
    so the splits that can be built still are."""
    if bench.route_reference is None:
        return np.full(len(frames), np.nan)
    candidates = dict.fromkeys((bench.route_reference, *(run for spec in bench.splits for run in spec.db)))
    present = [run for run in candidates if run in set(frames["traversal"])]
    if not present:
        where = _known_sets(bench.dataset).get(bench.route_reference, "")
        raise DataError(source, f"route reference traversal {bench.route_reference!r} has no frames. {where}".strip())
    reference = frames[frames["traversal"] == present[0]]
    reference_xy = reference[["easting", "northing"]].to_numpy()
    return assign_sections(frames[["easting", "northing"]].to_numpy(), reference_xy, route_fractions(reference_xy))


def _in_route_ranges(route_fraction: np.ndarray, ranges: tuple[float, ...]) -> np.ndarray:
    """Frames whose route fraction lies in one of the ``[lo, hi)`` pairs of the flat list ``ranges``
    (the last pair's ``hi`` of 1.0 includes the route's end)."""
    inside = np.zeros(len(route_fraction), dtype=bool)
    for lo, hi in zip(ranges[::2], ranges[1::2]):
        inside |= (route_fraction >= lo) & ((route_fraction < hi) | (hi >= 1.0))
    return inside


def _in_index_range(frames: pd.DataFrame, index_range: tuple[int, int]) -> np.ndarray:
    """Rows whose place_index lies in ``[start, end)``."""
    place = frames["place_index"].to_numpy()
    return (place >= index_range[0]) & (place < index_range[1])


def _positions(rows: pd.DataFrame, uses_place_index: bool) -> np.ndarray:
    if uses_place_index:
        return rows["place_index"].to_numpy(dtype=np.float64).reshape(-1, 1)
    return rows[["easting", "northing"]].to_numpy(dtype=np.float64)


def _known_sets(dataset: str) -> dict[str, str]:
    """The catalog's sets of a dataset (seasons, runs, conditions) -> where a user gets one."""
    if dataset == "nordland":
        from seqvpr.datasets.nordland import missing_season_message

        return {season: missing_season_message(season) for season in NORDLAND_SEASONS}
    if dataset == "robotcar":
        return {run: f"RobotCar run {run} is not in the raw data; download its stereo and gps tars from "
                     f"robotcar-dataset.robots.ox.ac.uk/datasets/{run}/" for run in ROBOTCAR_TRAVERSALS}
    return {condition: f"no nuScenes frame with condition {condition!r}: no {condition} scene of the Singapore maps is "
                       "in the raw data (see the nuscenes_frames notes)" for condition in NUSCENES_CONDITIONS}


def _absent_sets(frames: pd.DataFrame, bench: Benchmark, spec: SplitSpec, source) -> list[str]:
    """Catalog sets the split needs that the frame table lacks; a name the catalog does not know
    (a typo) is an error."""
    needed = list(dict.fromkeys(spec.db + spec.query))
    absent = [name for name in needed if name not in set(frames[bench.select_by])]
    known = _known_sets(bench.dataset)
    unknown = [name for name in absent if name not in known]
    if unknown:
        raise DataError(source, f"{bench.name}/{spec.split}: no frames with {bench.select_by} in {unknown}")
    return [known[name] for name in absent]


def _role_rows(frames: pd.DataFrame, bench: Benchmark, spec: SplitSpec, names: tuple[str, ...]) -> pd.DataFrame:
    mask = frames["_keep"].to_numpy() & frames[bench.select_by].isin(names).to_numpy()
    if spec.sections:
        mask &= np.isin(frames["section"].to_numpy(), spec.sections)
    if spec.index_range is not None:
        mask &= _in_index_range(frames, spec.index_range)
    if spec.route_ranges:
        mask &= _in_route_ranges(frames["route_fraction"].to_numpy(), spec.route_ranges)
    rows = frames[mask].reset_index(drop=True)
    travelled = rows["travelled"].to_numpy()
    steps = np.abs(np.diff(travelled, prepend=travelled[:1])) if len(rows) else travelled
    bounds = run_bounds(list(zip(rows["traversal"], rows["section"])), steps, bench.max_step)
    rows["seq_start"], rows["seq_end"] = bounds[:, 0], bounds[:, 1]
    rows["order"] = np.arange(len(rows), dtype=np.int64)
    return rows


def build_split(frames: pa.Table | pd.DataFrame, bench: Benchmark, source: Path | str = "<frame table>") -> SplitResult:
    """Select, subsample, section and pair the frames of ``bench``; ``source`` names the frame
    table in error messages."""
    frames = frames.to_pandas() if isinstance(frames, pa.Table) else frames.copy()
    _validate(frames, source, bench.uses_place_index)
    frames = frames.sort_values(["traversal", "timestamp_us", "frame_index"], kind="stable").reset_index(drop=True)
    frames["travelled"] = _travelled(frames, bench.uses_place_index)
    frames["_keep"] = _keep_separated(frames, frames["travelled"].to_numpy(), bench.separation)
    frames["route_fraction"] = _route_fraction(frames, bench, source)
    frames["section"] = (sections_of(frames["route_fraction"].to_numpy(), bench.n_sections) if bench.n_sections
                         else np.zeros(len(frames))).astype(np.int32)

    parts, pairs, missing = [], {}, {}
    for split in SPLITS:
        spec = bench.split(split)
        if spec is None:
            continue
        absent = _absent_sets(frames, bench, spec, source)
        if absent:
            missing[split] = f"{bench.name}/{split} needs {' and '.join(spec.db + spec.query)}: " + "; ".join(absent)
            continue
        db = _role_rows(frames, bench, spec, spec.db)
        query = _role_rows(frames, bench, spec, spec.query)
        split_pairs = compute_pairs(
            _positions(db, bench.uses_place_index),
            _positions(query, bench.uses_place_index),
            bench.rules_for(split),
            db_heading=db["heading_deg"].to_numpy(),
            query_heading=query["heading_deg"].to_numpy(),
        )
        pairs[split] = split_pairs
        empty = [np.zeros(0, dtype=np.int64)] * len(db)
        db["positives"], db["nontrivial_positives"] = empty, empty
        query["positives"] = split_pairs.positives
        query["nontrivial_positives"] = split_pairs.nontrivial_positives
        for role, rows in zip(ROLES, (db, query)):
            rows["benchmark"], rows["split"], rows["role"] = bench.name, split, role
            parts.append(rows)
    if not parts:
        raise DataError(source, "no split of the benchmark can be built: " + " | ".join(missing.values()))
    table = pd.concat(parts, ignore_index=True)
    return SplitResult(pa.Table.from_pandas(table[SPLIT_TABLE_SCHEMA.names], schema=SPLIT_TABLE_SCHEMA, preserve_index=False),
                       pairs, missing)


def role_rows(table: pa.Table, split: str, role: str) -> pd.DataFrame:
    """The rows of one (split, role) of a split table, in ``order``."""
    df = table.to_pandas()
    rows = df[(df["split"] == split) & (df["role"] == role)]
    return rows.sort_values("order").reset_index(drop=True)


CONFIG_METADATA_KEY = b"seqvpr.benchmark"


def write_split(result: SplitResult, bench_name: str, values: dict, table_path: Path) -> list[Path]:
    """Write the split table (with the benchmark name and settings in its parquet metadata, so
    later stages rebuild the exact Benchmark) and one ``<benchmark>_negatives_<split>.npy`` per
    split beside it. Returns the paths written."""
    table_path = Path(table_path)
    meta = json.dumps({"benchmark": bench_name, "config": values, "missing": result.missing}, sort_keys=True).encode()
    write_table(result.table.replace_schema_metadata({CONFIG_METADATA_KEY: meta}), table_path)
    written = [table_path]
    for split, pairs in sorted(result.pairs.items()):
        path = negatives_path(table_path, split)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, pairs.negatives, allow_pickle=False)
        written.append(path)
    return written


def negatives_path(table_path: Path, split: str) -> Path:
    """num_queries x negatives_per_query int64 (-1 padded) negative candidates of one split."""
    table_path = Path(table_path)
    return table_path.with_name(f"{table_path.stem}_negatives_{split}.npy")


def missing_splits(table_path: Path) -> dict[str, str]:
    """The splits a split table lacks because the raw data lacks their sets, with what they need."""
    meta = (pq.read_schema(table_path).metadata or {}).get(CONFIG_METADATA_KEY)
    return json.loads(meta).get("missing", {}) if meta else {}


def split_settings(bench: Benchmark) -> dict:
    """The benchmark's effective split settings as a shard manifest records them: name, dataset,
    distance unit and every `<benchmark>_split` setting (defaults included)."""
    return {"benchmark": bench.name, "dataset": bench.dataset,
            "distance_unit": "frames" if bench.uses_place_index else "metres",
            **{name: value for name, (_, value) in config_fields(bench).items()}}


def read_split(table_path: Path) -> tuple[pa.Table, Benchmark]:
    """The split table and the Benchmark (with the settings) that produced it."""
    table_path = Path(table_path)
    if not table_path.exists():
        raise DataError(table_path, "split table missing: materialise the split asset first")
    table = pq.read_table(table_path)
    if table.schema.names != SPLIT_TABLE_SCHEMA.names:
        raise DataError(table_path, f"columns {table.schema.names} differ from the split table schema")
    meta = (table.schema.metadata or {}).get(CONFIG_METADATA_KEY)
    if meta is None:
        raise DataError(table_path, "no benchmark settings in the parquet metadata")
    info = json.loads(meta)
    if info["benchmark"] not in BENCHMARKS:
        raise DataError(table_path, f"unknown benchmark {info['benchmark']!r}")
    return table.cast(SPLIT_TABLE_SCHEMA), configure(BENCHMARKS[info["benchmark"]], info["config"])

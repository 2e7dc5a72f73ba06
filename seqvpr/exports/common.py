"""What every export shares: the split rows, the frame descriptors from the shards, the consumer's
own positives re-derived from what we wrote, and the folder swap that makes an export atomic."""
from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.neighbors import NearestNeighbors

from schemas.shard import DESCRIPTOR_FILES, MANIFEST
from schemas.split_table import ROLES, SPLITS
from seqvpr.benchmarks import Benchmark
from seqvpr.datasets.nordland import clean_list
from seqvpr.errors import DataError
from seqvpr.splits import role_rows

# seqvpr.embed.embed.global_descriptor: L2-normalised mean of the CCT384 tokens (tests pin this).
DESCRIPTOR_POOLING = "mean"
EXPORT_INFO = "export.json"


def descriptor_type(model_id: str) -> str:
    """seqNet's ``--descType`` folder name for our frame descriptors: the encoder's cache id
    (weights, layers kept, preprocessing) and the pooling, e.g. ``cct384-<hash>-mean``."""
    return f"{model_id}-{DESCRIPTOR_POOLING}"


def shard_model_id(split_dirs: list[Path]) -> str:
    """The encoder identity the shards were built with: ``manifest["encoder"]["model_id"]`` of
    every split's ``manifest.json`` (written by seqvpr/shards.py; at least one split), which must
    agree.

    Raises DataError naming the manifest when it is missing, has no encoder identity (shards
    written before the manifest recorded it), or names another encoder than the other splits."""
    found: dict[str, Path] = {}
    for split_dir in split_dirs:
        path = Path(split_dir) / MANIFEST
        if not path.exists():
            raise DataError(path, "shard manifest missing: materialise the shards first")
        try:
            model_id = json.loads(path.read_text())["encoder"]["model_id"]
        except (KeyError, TypeError, json.JSONDecodeError) as error:
            raise DataError(path, f"no encoder identity (manifest['encoder']['model_id'], {type(error).__name__}): "
                                  "rebuild the shards") from None
        if not isinstance(model_id, str) or not model_id:
            raise DataError(path, f"encoder model_id {model_id!r} is not a name: rebuild the shards")
        found.setdefault(model_id, path)
    if len(found) > 1:
        raise DataError(next(iter(found.values())).parent.parent,
                        f"the splits' shards were built by different encoders {sorted(found)}: rebuild the shards")
    return next(iter(found))


@dataclass(frozen=True)
class SplitRows:
    """The database and query rows of one split, each in ``order``."""

    split: str
    db: pd.DataFrame
    query: pd.DataFrame


def split_rows(table: pa.Table, bench: Benchmark) -> list[SplitRows]:
    """Every split of the split table that the benchmark defines, in train, val, test order."""
    present = set(table.column("split").to_pylist())
    return [SplitRows(s, role_rows(table, s, "db"), role_rows(table, s, "query"))
            for s in SPLITS if s in present and bench.split(s) is not None]


# Rows of every per-season Nordland array the consumers index by place: seqNet's
# structFiles/imageNamesFiles/nordland_clean_imageNames.txt has 27,592 names.
NORDLAND_CLEAN_ROWS = len(clean_list())
# The fixed Nordland ranges of seqNet's get_datasets.py (oravus/seqNet 6b83d36: np.arange(15000),
# np.arange(15100,18100), np.arange(18200,21200)); Adapt-STformer's uses the train and test ones.
NORDLAND_RANGES = {"train": (0, 15000), "test": (15100, 18100), "val": (18200, 21200)}


def nordland_seasons(bench: Benchmark) -> list[str]:
    """Every season a split of the benchmark names. seqNet and Adapt-STformer open two or four
    seasons whatever the split (their get_datasets.py), so each gets a full-length array."""
    return sorted({name for spec in bench.splits for name in (*spec.db, *spec.query)})


def check_places(places: np.ndarray, season: str, source) -> None:
    """Place indices must be rows of the Nordland-clean list."""
    bad = places[(places < 0) | (places >= NORDLAND_CLEAN_ROWS)]
    if len(bad):
        raise DataError(source, f"season {season}: place_index {int(bad[0])} is not a row of Nordland-clean [0, {NORDLAND_CLEAN_ROWS})")


def covers_exactly(part: SplitRows, index_range: tuple[int, int]) -> bool:
    """Whether both roles of a Nordland split hold exactly the places ``[start, end)`` in order:
    what seqNet's and Adapt-STformer's fixed-range slicing reads (their struct files are not)."""
    want = np.arange(*index_range)
    return all(np.array_equal(rows["place_index"].to_numpy(), want) for rows in (part.db, part.query))


def shard_keys(split_dir: Path) -> list[str]:
    """Sample keys of a split's shards in shard order (tar headers only, no payload is read)."""
    manifest_path = Path(split_dir) / MANIFEST
    if not manifest_path.exists():
        raise DataError(manifest_path, "shard manifest missing: materialise the shards first")
    keys = []
    for shard in json.loads(manifest_path.read_text())["shards"]:
        path = Path(split_dir) / shard["name"]
        try:
            with tarfile.open(path) as tar:
                keys += [m.name.split(".", 1)[0] for m in tar.getmembers() if m.name.endswith(".json")]
        except (tarfile.TarError, EOFError, OSError) as err:
            raise DataError(path, f"missing, truncated or corrupt shard ({err}): rebuild the shards") from err
    return keys


def shard_descriptors(shard_root: Path, table: pa.Table, bench: Benchmark) -> dict[tuple[str, str], np.ndarray]:
    """(split, role) -> float32 N x D descriptors aligned with the split table's rows, read from
    ``shards/<benchmark>/<split>/{db,query}_descriptors.npy`` after checking that the shards hold
    exactly the split table's frames in its order (stale shards would silently misalign)."""
    out = {}
    for part in split_rows(table, bench):
        split_dir = Path(shard_root) / part.split
        expected = part.db["frame_id"].tolist() + part.query["frame_id"].tolist()
        if shard_keys(split_dir) != expected:
            raise DataError(split_dir, "shards do not hold the split table's frames in its order: re-materialise the shards")
        for role, rows in zip(ROLES, (part.db, part.query)):
            path = split_dir / DESCRIPTOR_FILES[role]
            array = np.load(path).astype(np.float32, copy=False)
            if array.ndim != 2 or len(array) != len(rows):
                raise DataError(path, f"expected {len(rows)} descriptor rows, got shape {array.shape}")
            out[(part.split, role)] = array
    return out


def radius_positives(db_xy: np.ndarray, query_xy: np.ndarray, radius: float) -> list[np.ndarray]:
    """Positives as seqNet, Adapt-STformer and VPR-methods-evaluation derive them: sklearn's
    ``radius_neighbors`` (boundary included), here sorted for comparison."""
    if len(db_xy) == 0:
        return [np.zeros(0, dtype=np.int64) for _ in range(len(query_xy))]
    knn = NearestNeighbors().fit(np.asarray(db_xy, dtype=np.float64))
    found = knn.radius_neighbors(np.asarray(query_xy, dtype=np.float64), radius=radius, return_distance=False)
    return [np.sort(np.asarray(f, dtype=np.int64)) for f in found]


def count_positive_mismatches(derived: list[np.ndarray], ours) -> int:
    """Queries whose derived positive set differs from the split table's."""
    return sum(1 for a, b in zip(derived, ours) if not np.array_equal(np.sort(np.asarray(b, dtype=np.int64)), a))


# export.json's first keys: whether the consumer can load the folder as written, and if not, why
# and how to make it loadable. Every other key follows in sorted order.
FIRST_KEYS = ("consumer_can_load", "cannot_load_because", "to_make_it_loadable")


def _sorted(value):
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_sorted(v) for v in value]
    return value


def write_info(folder: Path, info: dict) -> None:
    """``export.json``: whether the consumer can load it (first), the consumer, the commands that
    read this folder, and what was checked. Written last, inside the temporary folder, so only a
    complete export has one."""
    ordered = {k: _sorted(info[k]) for k in FIRST_KEYS if k in info}
    ordered.update(_sorted({k: v for k, v in info.items() if k not in FIRST_KEYS}))
    (Path(folder) / EXPORT_INFO).write_text(json.dumps(ordered, indent=1) + "\n")


def save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.lib.format.write_array(fh, np.ascontiguousarray(array), allow_pickle=False)


def single_traversal(names: tuple[str, ...], split: str, role: str, consumer: str, source) -> str:
    """The one traversal (or season) a consumer's file naming can express for a split's role."""
    if len(names) != 1:
        raise DataError(source, f"{consumer} names one traversal per {split} {role}, the benchmark has {list(names)}")
    return names[0]

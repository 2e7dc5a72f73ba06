"""Benchmark splits and seqNet struct files: `<benchmark>_split` and `<benchmark>_struct_files`.

One factory builds both assets and their checks for every benchmark in seqvpr.benchmarks.BENCHMARKS;
each split asset's Config is generated from the benchmark's defaults (seqvpr.benchmarks.config_fields)
so the Dagster UI shows them.
"""

import dataclasses
from collections import Counter
from typing import Annotated, Optional

import numpy as np
import pyarrow.parquet as pq
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from pydantic import Field, model_validator

from assets.plots import png_markdown, pyplot
from pipelines.resources import PipelineHome
from schemas.split_table import SPLITS
from seqvpr.atomic import atomic_dir, atomic_remove
from seqvpr.benchmarks import BENCHMARKS, config_fields, configure
from seqvpr.datasets.catalog import NORDLAND_SEASONS, NUSCENES_CONDITIONS, ROBOTCAR_TRAVERSALS
from seqvpr.errors import DataError, unknown_name
from seqvpr.splits import build_split, missing_splits, negatives_path, read_split, role_rows, write_split
from seqvpr.structfile import struct_names, write_struct_files


MAX_DISTANCE = 1000.0
# The names a benchmark's traversal lists may hold (its `select_by` column): runs, seasons or conditions.
KNOWN_SETS = {"robotcar": tuple(ROBOTCAR_TRAVERSALS), "nordland": NORDLAND_SEASONS, "nuscenes": NUSCENES_CONDITIONS}


def _constrained(name: str, kind) -> object:
    """The field's type with the ranges every setting of its kind must keep.

    Numbers are distances, angles, counts or seeds: finite and never negative (`*_deg` at most
    180, `*_per_*` counts at least 1); radii at most MAX_DISTANCE (1000 m, or 1000 Nordland frames):
    a place-recognition radius that large makes every frame a positive and leaves no query a
    negative (the field's radii are 1-40); `*_range` is a [start, end) of place indices,
    `*_route_ranges` [lo, hi) pairs of route fractions; traversal lists are not empty. Generic by
    name and kind, so new settings of seqvpr.benchmarks are covered."""
    if kind in (float, float | None):
        top = 180 if name.endswith("_deg") else MAX_DISTANCE if name.endswith("radius") else None
        number = Annotated[float, Field(ge=0, le=top, allow_inf_nan=False)]
        return Optional[number] if kind == float | None else number
    if kind is int:
        return Annotated[int, Field(ge=1 if "_per_" in name else 0)]
    if kind == list[float]:  # flat [lo, hi) pairs of route fractions
        return Annotated[list[Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]], Field(min_length=2)]
    if kind == list[int] and name.endswith("_range"):  # [start, end) of Nordland-clean indices
        return Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=2, max_length=2)]
    if kind == list[str]:
        return Annotated[kind, Field(min_length=1)]
    return kind


def _check_ranges_and_sections(config):
    """Cross-field rules: ranges run forward, sections exist among the benchmark's `n_sections`,
    traversal lists name the dataset's runs / seasons / conditions ("did you mean"), and no split
    uses one traversal as both database and query (every query would match itself, and both roles'
    frames would share sample keys)."""
    values = config.model_dump()
    known = KNOWN_SETS[BENCHMARKS[config._benchmark].dataset]
    for name, value in values.items():
        if name.endswith("_range") and not value[0] < value[1]:
            raise ValueError(f"{name} must be [start, end) with start < end, got {value}")
        if name.endswith("_route_ranges") and (len(value) % 2 or not all(lo < hi for lo, hi in zip(value[::2], value[1::2]))):
            raise ValueError(f"{name} must be [lo, hi) pairs of route fractions with lo < hi, got {value}")
        if name.endswith("_sections") and isinstance(value, list) and not all(1 <= s <= values.get("n_sections", 0) for s in value):
            raise ValueError(f"{name} must be section numbers 1..n_sections ({values.get('n_sections', 0)}), got {value}")
        if name.endswith(("_db", "_query")) and isinstance(value, list):
            for item in value:
                if item not in known:
                    raise ValueError(f"{name}: {unknown_name('name', item, known)}")
        if name.endswith("_db") and (shared := sorted(set(value) & set(values.get(f"{name[:-3]}_query", [])))):
            raise ValueError(f"{name} and {name[:-3]}_query share {shared}: a split needs different database and "
                             "query traversals")
    return config


def split_config_class(benchmark: str) -> type[Config]:
    """A Config subclass whose fields and defaults are the benchmark's settings, with their ranges."""
    fields = config_fields(BENCHMARKS[benchmark])
    annotations = {name: _constrained(name, kind) for name, (kind, _) in fields.items()}
    namespace = {"__annotations__": annotations, "__module__": __name__,
                 "__doc__": f"Settings of the {benchmark} benchmark (metres; Nordland: frames).",
                 "_benchmark": benchmark,
                 "_check_ranges_and_sections": model_validator(mode="after")(_check_ranges_and_sections)}
    namespace.update({name: default for name, (_, default) in fields.items()})
    return type(f"{''.join(p.title() for p in benchmark.split('_'))}SplitConfig", (Config,), namespace)


def pairs_plot(table, max_pairs_per_split: int = 8) -> str:
    """Markdown with an embedded PNG: db/query trajectories per split and a few positive pairs."""
    plt = pyplot()
    splits = [s for s in SPLITS if s in set(table.column("split").to_pylist())]
    fig, axes = plt.subplots(1, max(len(splits), 1), figsize=(4 * max(len(splits), 1), 3.5), dpi=80, squeeze=False)
    for ax, split in zip(axes[0], splits):
        db, query = role_rows(table, split, "db"), role_rows(table, split, "query")
        ax.plot(db["easting"], db["northing"], ".", ms=2, label=f"db ({len(db)})")
        ax.plot(query["easting"], query["northing"], ".", ms=2, label=f"query ({len(query)})")
        with_pos = [i for i, p in enumerate(query["positives"]) if len(p)]
        for i in with_pos[:: max(1, len(with_pos) // max_pairs_per_split)][:max_pairs_per_split]:
            j = query["positives"][i][0]
            ax.plot([query["easting"][i], db["easting"][j]], [query["northing"][i], db["northing"][j]], "k-", lw=1)
        ax.set_title(split)
        ax.set_xlabel("easting [m]")
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(fontsize=6, markerscale=3)
    return png_markdown(fig, "pairs")


def filled_splits(table) -> list[str]:
    """Splits with both database and query frames; any other split has no struct file and no shards."""
    present = set(zip(table.column("split").to_pylist(), table.column("role").to_pylist()))
    return [s for s in SPLITS if (s, "db") in present and (s, "query") in present]


def _counts(table) -> dict:
    return dict(sorted(Counter(f"{s}/{r}" for s, r in zip(table.column("split").to_pylist(), table.column("role").to_pylist())).items()))


def _without_positives(table) -> dict:
    return {
        split: int(sum(1 for p in role_rows(table, split, "query")["positives"] if len(p) == 0))
        for split in SPLITS
        if split in set(table.column("split").to_pylist())
    }


def build_split_assets(benchmark: str):
    """`<benchmark>_split`, `<benchmark>_struct_files` and the split's asset checks."""
    bench = BENCHMARKS[benchmark]
    SplitConfig = split_config_class(benchmark)

    @asset(
        name=f"{benchmark}_split",
        group_name="splits",
        deps=[AssetKey(f"{bench.dataset}_frame_table")],
        description=f"{benchmark}: frames per split and role, sequence bounds and pairs (schemas/split_table.py).",
    )
    def split_asset(context: AssetExecutionContext, config: SplitConfig, home: PipelineHome) -> MaterializeResult:
        layout = home.layout()
        source = layout.frame_table(bench.dataset)
        values = config.model_dump()
        result = build_split(pq.read_table(source), configure(bench, values), source)
        written = write_split(result, benchmark, values, layout.split_table(benchmark))
        for split in [s for s in SPLITS if s not in filled_splits(result.table)]:  # an emptied split's negatives are stale
            if atomic_remove(stale := negatives_path(layout.split_table(benchmark), split)):
                context.log.warning(f"{benchmark}/{split}: split is empty now; removed {stale.name}")
        missing = _without_positives(result.table)
        context.log.info(f"{benchmark}: {_counts(result.table)}, queries without positives {missing}")
        for need in result.missing.values():
            context.log.error(need)
        return MaterializeResult(
            metadata={
                "missing_splits": MetadataValue.json(result.missing),
                "counts": MetadataValue.json(_counts(result.table)),
                "queries_without_positives": MetadataValue.json(missing),
                "pairs": MetadataValue.md(pairs_plot(result.table)),
                "path": MetadataValue.path(str(written[0])),
            }
        )

    @asset(
        name=f"{benchmark}_struct_files",
        group_name="splits",
        deps=[split_asset],
        description=f"{benchmark}: seqNet struct files, seqBounds, splitInds (schemas/struct_file.py).",
    )
    def struct_asset(context: AssetExecutionContext, home: PipelineHome) -> MaterializeResult:
        layout = home.layout()
        table, configured = read_split(layout.split_table(benchmark))
        filled = filled_splits(table)
        empty = [spec.split for spec in configured.splits if spec.split not in filled]
        if not filled:
            raise DataError(layout.split_table(benchmark), "every split has no database or no query frames with "
                                                            "these settings (sections, ranges, frame_separation)")
        if empty:
            context.log.warning(f"{benchmark}: no struct file for the empty split(s) {empty}")
        out_dir = layout.struct_files(benchmark)
        # The whole folder is swapped in at once, so files named for old thresholds or for splits
        # that are now empty never linger.
        with atomic_dir(out_dir) as tmp:
            kept = dataclasses.replace(configured, splits=tuple(s for s in configured.splits if s.split in filled))
            outputs = write_struct_files(table, kept, tmp)
        files = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())
        context.log.info(f"{benchmark}: wrote {files}")
        return MaterializeResult(
            metadata={
                "empty_splits": MetadataValue.json(empty),
                "struct_files": MetadataValue.json([p.name for p in outputs.struct_files]),
                "files": MetadataValue.json(files),
                "path": MetadataValue.path(str(out_dir)),
            }
        )

    @asset_check(asset=struct_asset, name="struct_files_match_split")
    def struct_check(home: PipelineHome) -> AssetCheckResult:
        """Exactly one struct file per non-empty split, with the split table's image and query counts."""
        from scipy.io import loadmat

        layout = home.layout()
        table, configured = read_split(layout.split_table(benchmark))
        folder = layout.struct_files(benchmark)
        expected = {struct_names(configured, split)[0]: split for split in filled_splits(table)}
        found = sorted(p.name for p in folder.glob("*.db"))
        problems = [f"{name}: not a struct file of the current split table" for name in found if name not in expected]
        problems += [f"{name}: missing" for name in sorted(set(expected) - set(found))]
        for name in sorted(set(expected) & set(found)):
            struct = loadmat(folder / name)["dbStruct"][0, 0]
            counts = (int(struct["numImages"][0, 0]), int(struct["numQueries"][0, 0]))
            split = expected[name]
            wanted = (len(role_rows(table, split, "db")), len(role_rows(table, split, "query")))
            if counts != wanted:
                problems.append(f"{name}: {counts} images/queries, the split table has {wanted}")
        return AssetCheckResult(passed=not problems, severity=AssetCheckSeverity.ERROR,
                                metadata={"problems": MetadataValue.json(problems)})

    @asset_check(asset=split_asset, name="every_query_has_a_positive")
    def positives_check(home: PipelineHome) -> AssetCheckResult:
        table, _ = read_split(home.layout().split_table(benchmark))
        missing = _without_positives(table)
        return AssetCheckResult(
            passed=not any(missing.values()),
            severity=AssetCheckSeverity.WARN,
            metadata={"queries_without_positives": MetadataValue.json(missing)},
        )

    @asset_check(asset=split_asset, name="every_split_present")
    def present_check(home: PipelineHome) -> AssetCheckResult:
        missing = missing_splits(home.layout().split_table(benchmark))
        # WARN: the splits that are there are right and their struct files, shards and exports are
        # built; the missing one is named with where to get its data (a partial local copy).
        return AssetCheckResult(passed=not missing, severity=AssetCheckSeverity.WARN,
                                description=" | ".join(missing.values()) or None,
                                metadata={"missing_splits": MetadataValue.json(missing)})

    @asset_check(asset=split_asset, name="sequences_within_bounds")
    def bounds_check(home: PipelineHome) -> AssetCheckResult:
        table, _ = read_split(home.layout().split_table(benchmark))
        bad = {}
        for split in sorted(set(table.column("split").to_pylist())):
            for role in ("db", "query"):
                rows = role_rows(table, split, role)
                order = rows["order"].to_numpy()
                start, end = rows["seq_start"].to_numpy(), rows["seq_end"].to_numpy()
                broken = (start > order) | (end <= order) | (end > len(rows))
                # Every row of a run must report the same run.
                broken |= (start[np.clip(start, 0, len(rows) - 1)] != start) | (end[np.clip(end - 1, 0, len(rows) - 1)] != end)
                if broken.any():
                    bad[f"{split}/{role}"] = int(broken.sum())
        return AssetCheckResult(passed=not bad, metadata={"rows_outside_bounds": MetadataValue.json(bad)})

    @asset_check(asset=split_asset, name="counts_match_frame_table")
    def counts_check(home: PipelineHome) -> AssetCheckResult:
        layout = home.layout()
        table, configured = read_split(layout.split_table(benchmark))
        frames = pq.read_table(layout.frame_table(bench.dataset))
        known = set(frames.column("frame_id").to_pylist())
        unknown = sorted(set(table.column("frame_id").to_pylist()) - known)
        expected = _counts(build_split(frames, configured, layout.frame_table(bench.dataset)).table)
        actual = _counts(table)
        return AssetCheckResult(
            passed=not unknown and expected == actual,
            metadata={
                "frames_not_in_frame_table": MetadataValue.json(unknown[:20]),
                "expected_counts": MetadataValue.json(expected),
                "counts": MetadataValue.json(actual),
            },
        )

    return [split_asset, struct_asset], [positives_check, present_check, bounds_check, counts_check, struct_check]


split_assets, split_checks = [], []
for _name in BENCHMARKS:
    _assets, _checks = build_split_assets(_name)
    split_assets += _assets
    split_checks += _checks

"""The benchmarks as the papers split them: which traversals (RobotCar runs, Nordland seasons) or
conditions (nuScenes day/night) form each split's database and queries, the route sections or
place-index ranges they keep, the frame separation, the pair rules and the struct-file names
(`BENCHMARKS`), and their user-facing settings (`config_fields`, `configure`), from which each
`<benchmark>_split` asset's Dagster Config is generated. Building a split from a frame table is
`seqvpr.splits`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from seqvpr.pairs import PairRules


@dataclass(frozen=True)
class SplitSpec:
    """One split: the database and query traversals (or conditions), optionally restricted to
    route sections (1-based), to the place indices ``[start, end)`` (Nordland: indices into the
    Nordland-clean list) or to ``route_ranges``: flat ``[lo, hi)`` pairs of fractions of the route
    reference traversal's length. ``radius`` / ``nontrivial_radius`` override the benchmark's for this split."""

    split: str
    db: tuple[str, ...]
    query: tuple[str, ...]
    sections: tuple[int, ...] = ()
    index_range: tuple[int, int] | None = None
    route_ranges: tuple[float, ...] = ()
    radius: float | None = None
    nontrivial_radius: float | None = None


@dataclass(frozen=True)
class Benchmark:
    """Everything that defines a benchmark's frames and pairs.

    ``separation`` and the radii are metres, or frames when ``uses_place_index`` (Nordland, whose
    positions are the 1-D place_index: radius 1 pairs query i with frames i-1, i and i+1). A run of a
    sequence ends where consecutive selected frames are more than ``max_step`` apart.
    """

    name: str
    dataset: str
    select_by: str  # frame-table column naming the sets: "traversal" or "condition"
    splits: tuple[SplitSpec, ...]
    separation: float
    rules: PairRules
    uses_place_index: bool = False
    n_sections: int = 0
    route_reference: str | None = None
    max_step: float = 20.0
    struct_stem: str = ""
    struct_dataset: str | None = None
    struct_file: str = ""  # file name template ({db}, {query}, {split}); empty: seqNet's pattern

    def split(self, name: str) -> SplitSpec | None:
        return next((s for s in self.splits if s.split == name), None)

    def rules_for(self, split: str) -> PairRules:
        """The pair rules of one split: its radii, and negatives at least as far as its positives."""
        spec = self.split(split)
        radius = self.rules.radius if spec is None or spec.radius is None else spec.radius
        nontrivial = self.rules.nontrivial_radius if spec is None or spec.nontrivial_radius is None else spec.nontrivial_radius
        return dataclasses.replace(self.rules, radius=radius, nontrivial_radius=nontrivial,
                                   negative_radius=max(self.rules.negative_radius, radius))


# Defaults follow the Adapt-STformer paper and the seqNet struct files.
# Nordland: seqNet's get_datasets.py (oravus/seqNet): train np.arange(15000), test
# np.arange(15100, 18100), val np.arange(18200, 21200) of Nordland-clean indices; its struct files
# nordland_train_d-40_d2-10.db (posDistThr 40, nonTrivPosDistSqThr 100) and
# nordland_{val,test}_d-1_d2-1.db (1, 1; the consumers' radius search is inclusive, so frames i-1,
# i and i+1 are positives of query i); summer/winter for training ("nordland-sw"), spring/fall
# ("nordland-sf") for the test.
BENCHMARKS: dict[str, Benchmark] = {
    "nordland": Benchmark(
        name="nordland",
        dataset="nordland",
        select_by="condition",
        splits=(
            SplitSpec("train", ("summer",), ("winter",), index_range=(0, 15000), radius=40, nontrivial_radius=10),
            SplitSpec("val", ("summer",), ("winter",), index_range=(18200, 21200)),
            SplitSpec("test", ("spring",), ("fall",), index_range=(15100, 18100)),
        ),
        separation=1,
        rules=PairRules(radius=1, nontrivial_radius=1, negative_radius=10),
        uses_place_index=True,
        max_step=1,
        struct_stem="nordland",
    ),
    # Oxford-easy: STformer's "Oxford2" as the Adapt-STformer code base builds it (all six sections, 2 m).
    "oxford_easy": Benchmark(
        name="oxford_easy",
        dataset="robotcar",
        select_by="traversal",
        splits=(
            SplitSpec("train", ("2014-12-16-09-14-09",), ("2014-12-17-18-18-43",), sections=(1, 2, 3, 4, 5, 6)),
            SplitSpec("test", ("2014-11-18-13-20-12",), ("2014-12-16-18-44-24",), sections=(1, 2, 3, 4, 5, 6)),
        ),
        separation=2.0,
        rules=PairRules(radius=10.0, nontrivial_radius=5.0, negative_radius=10.0),
        n_sections=6,
        route_reference="2014-12-16-09-14-09",
        struct_stem="oxford-easy",
        struct_file="oxford2_{db}-{query}_{split}.db",  # Adapt-STformer's get_datasets.py
    ),
    # Oxford-hard as the Adapt-STformer paper defines it: sections 1-2 train, 3-4 test, 1 m.
    "oxford_hard": Benchmark(
        name="oxford_hard",
        dataset="robotcar",
        select_by="traversal",
        splits=(
            SplitSpec("train", ("2014-11-18-13-20-12",), ("2014-12-16-18-44-24",), sections=(1, 2)),
            SplitSpec("test", ("2014-12-16-09-14-09",), ("2014-12-17-18-18-43",), sections=(3, 4)),
        ),
        separation=1.0,
        rules=PairRules(radius=10.0, nontrivial_radius=5.0, negative_radius=10.0),
        n_sections=6,
        route_reference="2014-11-18-13-20-12",
        struct_stem="oxford-hard",
        struct_file="oxford_hard_{split}.db",  # Adapt-STformer's get_datasets.py
    ),
    # seqNet's own Oxford split (oravus/seqNet structFiles/oxford-v1.0_*): 2 m subsampling
    # (imagenames_subsampled-2m), train posDistThr 20, test 10, nonTriv 5. Its splitInds hold index
    # ranges of the database run's 4,599 frames: test [2410, 3983], train [0, 2387) and (4006, 4598];
    # here the same ranges as fractions of the database run's length.
    "oxford_seqnet": Benchmark(
        name="oxford_seqnet",
        dataset="robotcar",
        select_by="traversal",
        splits=(
            SplitSpec("train", ("2015-03-17-11-08-44",), ("2014-12-16-18-44-24",),
                      route_ranges=(0.0, 2387 / 4599, 4007 / 4599, 1.0), radius=20.0),
            SplitSpec("test", ("2015-03-17-11-08-44",), ("2014-12-16-18-44-24",), route_ranges=(2410 / 4599, 3984 / 4599)),
        ),
        separation=2.0,
        rules=PairRules(radius=10.0, nontrivial_radius=5.0, negative_radius=10.0),
        route_reference="2015-03-17-11-08-44",
        struct_stem="oxford-v1.0",
    ),
    "nuscenes": Benchmark(
        name="nuscenes",
        dataset="nuscenes",
        select_by="condition",
        splits=(SplitSpec("test", ("day",), ("night",)),),
        separation=0.0,
        rules=PairRules(radius=10.0, nontrivial_radius=5.0, negative_radius=10.0, max_heading_deg=30.0),
        struct_stem="nuscenes",
        # Adapt-STformer's get_positives loads saved_positives/nuscene_positives_<dataset>.pkl
        # (the heading-aware positives) only for this dataset name.
        struct_dataset="nuscene_large",
        struct_file="nuscene_large.db",  # Adapt-STformer's get_datasets.py
    ),
}


def config_fields(bench: Benchmark) -> dict[str, tuple[type, object]]:
    """Flat, user-facing settings of a benchmark: name -> (type, default). The Dagster Config of
    each `<benchmark>_split` asset is generated from this."""
    rules = bench.rules
    fields: dict[str, tuple[type, object]] = {
        "frame_separation": (float, float(bench.separation)),
        "radius": (float, float(rules.radius)),
        "nontrivial_radius": (float, float(rules.nontrivial_radius)),
        "negative_radius": (float, float(rules.negative_radius)),
        "max_heading_deg": (float | None, rules.max_heading_deg),
        "negatives_per_query": (int, rules.negatives_per_query),
        "seed": (int, rules.seed),
        "max_step": (float, float(bench.max_step)),
        "n_sections": (int, bench.n_sections),
    }
    for spec in bench.splits:
        fields[f"{spec.split}_db"] = (list[str], list(spec.db))
        fields[f"{spec.split}_query"] = (list[str], list(spec.query))
        if bench.n_sections:
            fields[f"{spec.split}_sections"] = (list[int], list(spec.sections))
        if spec.index_range is not None:
            fields[f"{spec.split}_range"] = (list[int], list(spec.index_range))
        if spec.route_ranges:
            fields[f"{spec.split}_route_ranges"] = (list[float], list(spec.route_ranges))
        fields[f"{spec.split}_radius"] = (float | None, spec.radius)
        fields[f"{spec.split}_nontrivial_radius"] = (float | None, spec.nontrivial_radius)
    return fields


def configure(bench: Benchmark, values: dict) -> Benchmark:
    """The benchmark with the settings of ``config_fields`` replaced by ``values``."""
    rules = dataclasses.replace(
        bench.rules,
        radius=values.get("radius", bench.rules.radius),
        nontrivial_radius=values.get("nontrivial_radius", bench.rules.nontrivial_radius),
        negative_radius=values.get("negative_radius", bench.rules.negative_radius),
        max_heading_deg=values.get("max_heading_deg", bench.rules.max_heading_deg),
        negatives_per_query=values.get("negatives_per_query", bench.rules.negatives_per_query),
        seed=values.get("seed", bench.rules.seed),
    )
    splits = []
    for spec in bench.splits:
        s = spec.split
        index_range = values.get(f"{s}_range", spec.index_range)
        splits.append(
            SplitSpec(
                split=s,
                db=tuple(values.get(f"{s}_db", spec.db)),
                query=tuple(values.get(f"{s}_query", spec.query)),
                sections=tuple(values.get(f"{s}_sections", spec.sections)),
                index_range=tuple(index_range) if index_range is not None else None,
                route_ranges=tuple(values.get(f"{s}_route_ranges", spec.route_ranges)),
                radius=values.get(f"{s}_radius", spec.radius),
                nontrivial_radius=values.get(f"{s}_nontrivial_radius", spec.nontrivial_radius),
            )
        )
    return dataclasses.replace(
        bench,
        splits=tuple(splits),
        rules=rules,
        separation=values.get("frame_separation", bench.separation),
        max_step=values.get("max_step", bench.max_step),
        n_sections=values.get("n_sections", bench.n_sections),
    )

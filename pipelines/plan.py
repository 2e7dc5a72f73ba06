"""Which asset partitions a `seqvpr run` considers, and which must finish before each may start."""
from __future__ import annotations

import re
from dataclasses import dataclass

BARE_NAME = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class Task:
    key: str
    partition: str | None

    @property
    def name(self) -> str:
        return f"{self.key}[{self.partition}]" if self.partition else self.key


def _closure(graph, keys: set, start: set, direction: str) -> set:
    """`start` plus every asset reachable from it upstream ("parent_keys") or downstream ("child_keys")."""
    reached, frontier = set(start), list(start)
    while frontier:
        for other in getattr(graph.get(frontier.pop()), direction):
            if other in keys and other not in reached:
                reached.add(other)
                frontier.append(other)
    return reached


def selected(defs, names: list[str]) -> set:
    """Asset keys matching each of ``names``: a bare name selects the assets whose names start with
    it (`nordland_` is every Nordland asset); anything else is Dagster's selection syntax
    (`key:oxford_*_split`, `group:splits`, `+nordland_shards`, `tag:heavy`, `kind:parquet`, ...)."""
    from dagster import AssetSelection

    graph = defs.resolve_asset_graph()
    keys = {k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable}
    found = set()
    for name in names:
        if BARE_NAME.match(name):
            found |= {k for k in keys if k.to_user_string().startswith(name)}
        else:
            found |= set(AssetSelection.from_string(name).resolve(graph)) & keys
    return found


def plan(defs, selection: list[str] | None = None, rebuild_from: list[str] | None = None) -> dict[Task, list[Task]]:
    """Task -> the tasks it waits for, in dependency order.

    selection: these assets and everything upstream of them (default: all but training/evaluation);
    rebuild_from: only these assets and what is downstream of them (and selected), e.g. after a
    config change, so upstream products are reused as they are. A partition waits for the same
    partition of an upstream asset partitioned alike, and for every partition of any other."""
    graph = defs.resolve_asset_graph()
    keys = [k for k in graph.toposorted_asset_keys if graph.get(k).is_materializable]
    if selection:
        wanted = _closure(graph, set(keys), selected(defs, selection), "parent_keys")
    else:
        wanted = {k for k in keys if graph.get(k).group_name != "training"}
    if rebuild_from:
        wanted &= _closure(graph, set(keys), selected(defs, rebuild_from), "child_keys")
    tasks: dict = {}
    by_key: dict = {}
    for key in (k for k in keys if k in wanted):
        node = graph.get(key)
        partitions = node.partitions_def.get_partition_keys() if node.partitions_def else [None]
        by_key[key] = [Task(key.to_user_string(), p) for p in partitions]
        for task in by_key[key]:
            waits = []
            for parent in sorted(p for p in node.parent_keys if p in by_key):
                same = graph.get(parent).partitions_def == node.partitions_def and task.partition is not None
                waits += [t for t in by_key[parent] if not same or t.partition == task.partition]
            tasks[task] = waits
    return tasks

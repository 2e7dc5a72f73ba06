"""Check a run's YAML config and asset names before any work starts.

Every problem is collected (not just the first), each naming where it is in the YAML and, for a
misspelt name, the closest known one. Values are checked by the asset's own Config class and the
resources' classes (pydantic), so the ranges live beside the settings they constrain.
"""
from __future__ import annotations

import difflib
import inspect
from pathlib import Path

import pydantic

TOP_LEVEL = ("ops", "resources")
PATH_SETTINGS = ("path", "checkpoint", "manifest", "resnet18_gem_checkpoint", "vgg16_netvlad_checkpoint")


class ConfigError(ValueError):
    """The run config or the command line names something unknown or holds a value out of range."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid run config:\n" + "\n".join(f"  - {p}" for p in problems))


def _did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown(kind: str, where: str, name: str, known) -> str:
    return f"{where}: unknown {kind} {name!r}{_did_you_mean(name, known)}"


def config_class(asset_def):
    """The pydantic Config class an asset takes, or None."""
    parameter = inspect.signature(asset_def.op.compute_fn.decorated_fn).parameters.get("config")
    return parameter.annotation if parameter is not None else None


def _pydantic_problems(where: str, cls, values: dict) -> list[str]:
    problems = [_unknown("setting", where, name, cls.model_fields) for name in values if name not in cls.model_fields]
    if problems:
        return problems
    try:
        cls(**values)
    except pydantic.ValidationError as err:
        for error in err.errors():
            field = ".".join(str(p) for p in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{where}{'.' + field if field else ''}: {message} (got {error.get('input')!r})"
                            if field else f"{where}: {message}")
    return problems


def _section(where: str, entry) -> tuple[dict | None, list[str]]:
    """The `config:` mapping of an `ops.<asset>` or `resources.<name>` entry."""
    if not isinstance(entry, dict):
        return None, [f"{where}: expected a mapping with `config:`, got {entry!r}"]
    extra = [_unknown("key", where, key, ["config"]) for key in entry if key != "config"]
    values = entry.get("config") or {}
    if not isinstance(values, dict):
        return None, extra + [f"{where}.config: expected a mapping of settings, got {values!r}"]
    return values, extra


def _missing_paths(where: str, values: dict) -> list[str]:
    """Settings that name a file or folder (PATH_SETTINGS) must name one that exists."""
    return [f"{where}.{name}: no such file or folder: {values[name]}" for name in PATH_SETTINGS
            if isinstance(values.get(name), str) and values[name] and not Path(values[name]).expanduser().exists()]


def _local_source_problem(where: str, values: dict, home: Path) -> list[str]:
    if values.get("source") != "local" or not values.get("path"):
        return []
    path = Path(values["path"]).resolve()
    if path == home or home in path.parents or path in home.parents:
        return [f"{where}.path: {path} lies inside the pipeline home {home}, whose folders the pipeline replaces; "
                "keep your copy outside it and point path at it"]
    return []


def asset_names(defs) -> list[str]:
    graph = defs.resolve_asset_graph()
    return [k.to_user_string() for k in graph.toposorted_asset_keys if graph.get(k).is_materializable]


def validate(defs, run_config, home: str | Path, selection: list[str] | None = None,
             rebuild_from: list[str] | None = None) -> None:
    """Raise ConfigError listing every problem of the run config and the selected asset names."""
    home = Path(home).resolve()
    names = asset_names(defs)
    problems = []
    for flag, prefixes in (("--select", selection), ("--rebuild-from", rebuild_from)):
        problems += [_unknown("asset", flag, p, names) for p in prefixes or [] if not any(n.startswith(p) for n in names)]
    if not isinstance(run_config, dict):
        raise ConfigError(problems + [f"the config must be a mapping with {' and/or '.join(TOP_LEVEL)}, got {run_config!r}"])
    problems += [_unknown("top-level key", "config", key, TOP_LEVEL) for key in run_config if key not in TOP_LEVEL]
    assets = {a.key.to_user_string(): a for a in defs.assets}
    for key, entry in (run_config.get("ops") or {}).items():
        where = f"ops.{key}"
        if key not in names:
            problems.append(_unknown("asset", "ops", key, names))
            continue
        values, found = _section(where, entry)
        problems += found
        if values is None:
            continue
        cls = config_class(assets[key])
        if cls is None:
            problems += [f"{where}.config: {key} takes no settings"] if values else []
            continue
        problems += _pydantic_problems(f"{where}.config", cls, values)
        problems += _missing_paths(f"{where}.config", values) + _local_source_problem(f"{where}.config", values, home)
    for name, entry in (run_config.get("resources") or {}).items():
        where = f"resources.{name}"
        if name == "home":
            problems.append(f"{where}: the pipeline home is set with --home (or $SEQVPR_HOME), not in the config")
        elif name not in defs.resources:
            problems.append(_unknown("resource", "resources", name, [r for r in defs.resources if r != "home"]))
        else:
            values, found = _section(where, entry)
            problems += found
            if values is not None:
                problems += _pydantic_problems(f"{where}.config", type(defs.resources[name]), values)
                problems += _missing_paths(f"{where}.config", values)
    if problems:
        raise ConfigError(problems)

"""Check a run's YAML config and asset names before any work starts.

The YAML is read as the launchpad reads it (Dagster's YAML loader; a key given twice is refused).
Every problem is collected (not just the first), each naming where it is in the YAML and, for a
misspelt name, the closest known one. Each section is checked by Dagster's own config check (types,
`{env: VAR}` where Dagster accepts it, i.e. in the resources' settings), then by the asset's Config
class and the resources' classes (pydantic), so the ranges live beside the settings they constrain.
"""
from __future__ import annotations

import difflib
import inspect
from pathlib import Path

import pydantic

from pipelines.plan import BARE_NAME, selected
from pipelines.state import resolve_env

TOP_LEVEL = ("ops", "resources")
PATH_SETTINGS = ("path", "checkpoint", "manifest", "resnet18_gem_checkpoint", "vgg16_netvlad_checkpoint")


class ConfigError(ValueError):
    """The run config or the command line names something unknown or holds a value out of range."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid run config:\n" + "\n".join(f"  - {p}" for p in problems))


def load_config(path: str | Path) -> dict:
    """The YAML run config at ``path``, read with Dagster's loader; ConfigError names the line of a
    duplicate key or of a syntax error, or the reason the file cannot be read."""
    import yaml
    from dagster_shared.yaml_utils import DagsterYamlLoader

    class Loader(DagsterYamlLoader):
        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise ConfigError([f"{path}, line {line}: {key!r} given twice (first on line {seen[key]})"])
                seen[key] = line
            return super().construct_mapping(node, deep=deep)

    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError([f"{path}: cannot read the config: {err.strerror or err}"]) from None
    try:
        config = yaml.load(text, Loader=Loader)
    except yaml.YAMLError as err:
        raise ConfigError([f"{path}: not valid YAML: {' '.join(str(err).split())}"]) from None
    return {} if config is None else config


def _did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown(kind: str, where: str, name: str, known) -> str:
    return f"{where}: unknown {kind} {name!r}{_did_you_mean(name, known)}"


def config_class(asset_def):
    """The pydantic Config class an asset takes, or None."""
    parameter = inspect.signature(asset_def.op.compute_fn.decorated_fn).parameters.get("config")
    return parameter.annotation if parameter is not None else None


def _dagster_problems(where: str, config_type, values: dict) -> tuple[dict | None, list[str]]:
    """Dagster's own check of a section, as at launch: (the values with `{env: VAR}` resolved and
    defaults filled in, or None; the problems, one line each)."""
    from dagster._config import process_config

    result = process_config(config_type, values)
    if result.success:
        return result.value, []
    problems = []
    for error in result.errors:
        message = error.message.split("PostProcessingError: ", 1)[-1].split("\n", 1)[0]
        message = message.replace("at path root:", "at ").replace("at the root", "")
        problems.append(f"{where}: {message.strip()}")
    return None, problems


def _pydantic_problems(where: str, cls, values: dict, config_type=None) -> list[str]:
    problems = [_unknown("setting", where, name, cls.model_fields) for name in values if name not in cls.model_fields]
    if problems:
        return problems
    if config_type is not None:
        processed, problems = _dagster_problems(where, config_type, values)
        if problems:  # pydantic's message where it refuses the value too (it names the allowed values)
            return problems if resolve_env(values) != values else _pydantic_problems(where, cls, values) or problems
        if resolve_env(values) != values:  # else the user's own values, so messages quote them as written
            values = processed
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
        for prefix in prefixes or []:
            if BARE_NAME.match(prefix):
                problems += [] if any(n.startswith(prefix) for n in names) else [_unknown("asset", flag, prefix, names)]
                continue
            try:
                found = selected(defs, [prefix])
            except Exception as err:  # Dagster's parser names the position of the problem
                problems.append(f"{flag}: {prefix!r} is neither an asset name nor Dagster's selection syntax: "
                                f"{' '.join(str(err).split())}")
                continue
            problems += [] if found else [f"{flag}: {prefix!r} selects no asset"]
    if not isinstance(run_config, dict):
        raise ConfigError(problems + [f"the config must be a mapping with {' and/or '.join(TOP_LEVEL)}, got {run_config!r}"])
    problems += [_unknown("top-level key", "config", key, TOP_LEVEL) for key in run_config if key not in TOP_LEVEL]
    for section in TOP_LEVEL:
        if not isinstance(run_config.get(section) or {}, dict):
            kind = "asset names" if section == "ops" else "resource names"
            problems.append(f"{section}: expected a mapping of {kind} to {{config: {{...}}}}, "
                            f"got a {type(run_config[section]).__name__}: {run_config[section]!r}")
    if problems:
        raise ConfigError(problems)
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
        problems += _pydantic_problems(f"{where}.config", cls, values, assets[key].op.config_schema.config_type)
        problems += _missing_paths(f"{where}.config", resolve_env(values)) + _local_source_problem(f"{where}.config", values, home)
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
                config_type = defs.resources[name].get_resource_definition().config_schema.config_type
                problems += _pydantic_problems(f"{where}.config", type(defs.resources[name]), values, config_type)
                problems += _missing_paths(f"{where}.config", resolve_env(values))
    if problems:
        raise ConfigError(problems)

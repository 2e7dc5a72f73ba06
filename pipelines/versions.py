"""What makes an asset fresh, in Dagster's own terms, declared here once for every asset.

- **Code version**: a digest of the code the asset runs: its own module and every module of this
  project it imports (transitively; imports inside functions too), the resource classes it uses
  (their methods' imports), and the modules it imports by name at run time (`RUNS_ALSO`). Modules
  are hashed as syntax trees (`ast.dump`), so comments and formatting do not count.
- **Data version**: a SHA-256 of what the materialisation wrote: the files below every path its
  metadata names (contents; names and sizes only for raw datasets, which may be hundreds of GB), so
  a byte-identical rebuild leaves everything downstream synced.
- **Settings digest** (metadata `settings_digest`): the asset's Config and the settings of the
  resources it uses (the home as its resolved folder). Dagster does not compare settings; the
  runner (pipelines/state.py) does.
- **Outputs** (metadata `outputs`): per path, the number of files and a digest of their names and
  sizes, which the runner compares with the disk before it skips the asset.
- **Checks** run in the asset's own step, as blocking check specs: a rebuild from the UI runs them,
  and a failed ERROR check fails the step.

`with_versions` applies all of this to the asset definitions of `assets/` when the code location
is built (pipelines/definitions.py), with each asset's kinds and tags (pipelines/kinds.py); the asset
modules stay plain `@asset`s.
"""
from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import inspect
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("assets", "pipelines", "schemas", "seqvpr")
RESOURCES_MODULE = "pipelines.resources"
# Modules an asset imports by name at run time, which its import statements do not show.
RUNS_ALSO = {"assets.frames": lambda name: [f"seqvpr.datasets.{name.removesuffix('_frames')}"] if name.endswith("_frames") else []}
# Metadata paths that name a folder shared with other assets or partitions, not this one's outputs.
SHARED_PATHS = ("cache",)
# Groups whose outputs are versioned by file names and sizes only (whole datasets).
LISTED_GROUPS = ("sources",)


# --------------------------------------------------------------------------- code versions


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def source(module: str) -> str:
    return _module_file(module).read_text()


@functools.lru_cache(maxsize=None)
def _tree(module: str) -> ast.Module:
    return ast.parse(source(module))


def _project_modules(node, module: str) -> set[str]:
    """Project modules that the import statements below ``node`` name (packages included)."""
    found = set()
    for item in ast.walk(node):
        names = []
        if isinstance(item, ast.Import):
            names = [alias.name for alias in item.names]
        elif isinstance(item, ast.ImportFrom):
            base = item.module or ""
            if item.level:
                parent = module.split(".")[: len(module.split(".")) - item.level + (1 if _module_file(module).name == "__init__.py" else 0)]
                base = ".".join(parent + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in item.names]
        for name in names:
            parts = name.split(".")
            if parts[0] in PACKAGES:
                found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1) if _module_file(".".join(parts[:i]))}
    return found


def _resource_classes(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def _digest(node) -> str:
    return hashlib.sha256(ast.dump(node).encode()).hexdigest()


@functools.lru_cache(maxsize=None)
def _unit(module: str) -> tuple[str, frozenset]:
    """(digest of the module's syntax tree, the project modules it imports); `pipelines.resources`
    counts as its statements outside classes."""
    tree = _tree(module)
    if module == RESOURCES_MODULE:
        tree = ast.Module(body=[node for node in tree.body if not isinstance(node, ast.ClassDef)], type_ignores=[])
    return _digest(tree), frozenset(_project_modules(tree, module))


@functools.lru_cache(maxsize=None)
def _resource_unit(name: str) -> tuple[str, frozenset]:
    node = _resource_classes(_tree(RESOURCES_MODULE))[name]
    return _digest(node), frozenset(_project_modules(node, RESOURCES_MODULE))


def clear_caches() -> None:
    """Forget the sources read (after an edit, in a long-lived process)."""
    for cached in (_tree, _unit, _resource_unit):
        cached.cache_clear()


def code_closure(modules: list[str], resource_classes: list[str] = ()) -> dict[str, str]:
    """Module (or `pipelines.resources:<Class>`) -> digest of its syntax tree, for ``modules``, the
    resource classes named and every project module they import, transitively. `pipelines.resources`
    counts as its statements outside classes; each resource class counts only where it is used."""
    units: dict[str, str] = {}
    pending = list(modules)
    for name in resource_classes:
        units[f"{RESOURCES_MODULE}:{name}"], imports = _resource_unit(name)
        pending += sorted(imports)
    while pending:
        module = pending.pop()
        if module not in units:
            units[module], imports = _unit(module)
            pending += sorted(imports)
    return units


def asset_code_version(asset_def) -> str:
    """The code version of one asset definition (see the module docstring)."""
    fn = asset_def.op.compute_fn.decorated_fn
    name = asset_def.key.to_user_string()
    modules = [fn.__module__, *RUNS_ALSO.get(fn.__module__, lambda _: [])(name)]
    classes = sorted({type(p.annotation).__name__ if not isinstance(p.annotation, type) else p.annotation.__name__
                      for p in inspect.signature(fn).parameters.values()} & set(_resource_classes(_tree(RESOURCES_MODULE))))
    units = code_closure(modules, classes)
    digest = hashlib.sha256()
    for unit in sorted(units):
        digest.update(unit.encode() + b"\0" + units[unit].encode() + b"\0")
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------- settings


def resource_settings(resource) -> dict:
    """A resource's settings as they reach an asset; the home as its resolved folder."""
    from pipelines.resources import PipelineHome

    if isinstance(resource, PipelineHome):
        return {"home": str(resource.layout().data_root.parent)}
    return json.loads(json.dumps(resource.model_dump(), sort_keys=True, default=str))


def settings_digest(config: dict | None, resources: dict[str, dict]) -> str:
    """Digest of an asset's Config values and the settings of the resources it uses."""
    text = json.dumps({"config": config, "resources": resources}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- outputs and data versions


def _files(path: Path) -> list[Path]:
    """Every file below ``path`` (the path itself when it is a file; a linked root is followed, links
    inside are not), temporary names of seqvpr.atomic excluded."""
    from seqvpr.housekeeping import TEMPORARY

    if path.is_file():
        return [path]
    found = []
    for folder, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not TEMPORARY.match(d) and not os.path.islink(os.path.join(folder, d)))
        found += [Path(folder) / n for n in sorted(names) if not TEMPORARY.match(n)]
    return found


def listing(path: str | Path) -> dict:
    """{"files": count, "listing": digest of relative names and sizes} of the files below ``path``."""
    path = Path(path)
    digest, count = hashlib.sha256(), 0
    for file in _files(path):
        with contextlib.suppress(FileNotFoundError):
            digest.update(f"{file.relative_to(path) if file != path else file.name}\0{file.stat().st_size}\0".encode())
            count += 1
    return {"files": count, "listing": digest.hexdigest()[:16] if path.exists() else "missing"}


def output_paths(metadata: dict) -> list[str]:
    """The paths a materialisation's metadata names as its own outputs."""
    from dagster import PathMetadataValue

    return sorted(str(v.value) for k, v in metadata.items() if isinstance(v, PathMetadataValue) and k not in SHARED_PATHS)


def data_version(paths: list[str], contents: bool = True) -> str:
    from seqvpr.hashing import file_sha256

    digest = hashlib.sha256()
    for root in map(Path, paths):
        digest.update(f"{root.name}\0".encode())
        for file in _files(root):
            rel = file.relative_to(root) if file != root else file.name
            digest.update(f"{rel}\0{file.stat().st_size}\0{file_sha256(file) if contents else ''}\0".encode())
    return digest.hexdigest()[:24]


# --------------------------------------------------------------------------- the step


def _run_check(check_fn, spec, arguments: dict):
    from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue

    wanted = inspect.signature(check_fn).parameters
    try:
        result = check_fn(**{k: v for k, v in arguments.items() if k in wanted})
    except Exception as err:  # a check that cannot read the outputs has found them wrong
        return AssetCheckResult(check_name=spec.name, passed=False, severity=AssetCheckSeverity.ERROR,
                                metadata={"problems": MetadataValue.json([f"{type(err).__name__}: {err}"])})
    return AssetCheckResult(check_name=spec.name, passed=result.passed, severity=result.severity,
                            metadata=result.metadata, description=result.description)


def with_versions(asset_def, check_defs=()):
    """The asset with its code version, a step that records data version, settings and outputs, and
    ``check_defs`` (plain `@asset_check`s of this asset) run in its step as blocking checks."""
    from dagster import AssetCheckSpec, DataVersion, MaterializeResult, MetadataValue, multi_asset

    from pipelines.kinds import asset_kinds, asset_tags
    from seqvpr.housekeeping import step_lock

    fn = asset_def.op.compute_fn.decorated_fn
    signature = inspect.signature(fn)
    (spec,) = asset_def.specs
    name = spec.key.to_user_string()
    spec = spec.replace_attributes(code_version=asset_code_version(asset_def), kinds=asset_kinds(name),
                                   tags={**spec.tags, **asset_tags(name)})
    checks = [(check.op.compute_fn.decorated_fn, s) for check in check_defs for s in check.check_specs]
    check_specs = [AssetCheckSpec(s.name, asset=s.asset_key, description=s.description, blocking=True) for _, s in checks]
    contents = spec.group_name not in LISTED_GROUPS

    @functools.wraps(fn)
    def step(*args, **kwargs):
        arguments = signature.bind(*args, **kwargs).arguments
        resources = {k: v for k, v in arguments.items() if k in asset_def.required_resource_keys}
        config = arguments.get("config")
        home = resources.get("home")
        with step_lock(home.layout().data_root.parent) if home is not None else contextlib.nullcontext():
            result = fn(*args, **kwargs)
            metadata = dict(result.metadata or {})
            paths = output_paths(metadata)
            settings = {"config": config.model_dump() if config is not None else None,
                        "resources": {k: resource_settings(r) for k, r in sorted(resources.items())}}
            metadata.update({
                "outputs": MetadataValue.json({p: listing(p) for p in paths}),
                "settings": MetadataValue.json(json.loads(json.dumps(settings, default=str))),
                "settings_digest": settings_digest(settings["config"], settings["resources"]),
            })
            check_results = [_run_check(check_fn, s, arguments) for check_fn, s in checks]
            return MaterializeResult(metadata=metadata, data_version=DataVersion(data_version(paths, contents)),
                                     check_results=list(result.check_results or []) + check_results,
                                     tags=result.tags)

    return multi_asset(specs=[spec], check_specs=check_specs or None, name=asset_def.op.name,
                       op_tags=asset_def.op.tags, partitions_def=asset_def.partitions_def,
                       description=asset_def.op.description)(step)

"""Is an asset partition fresh? Read from the Dagster instance, the one record of what was built.

An asset partition is skipped only when its latest materialisation for this home (homes may share
one Dagster instance), whichever door started it:
- exists and was made with the settings this run would use (`settings_digest`, pipelines/versions.py),
- is not stale for Dagster (same code version; upstream data versions unchanged since),
- left every output it recorded on disk as it was (same files, same sizes),
- and its blocking checks, run in the same step, did not fail.
"""
from __future__ import annotations

from pathlib import Path

from pipelines.versions import listing, resource_settings, settings_digest


def resolve_env(value):
    """A config value with Dagster's `{env: VAR}` replaced by the variable's value (validate.py
    has already refused unset variables)."""
    import os

    if isinstance(value, dict):
        if set(value) == {"env"} and isinstance(value["env"], str):
            return os.environ.get(value["env"])
        return {k: resolve_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env(v) for v in value]
    return value


def job_resources(run_config: dict, home: str) -> dict:
    """The `resources:` section a run passes to its job: the YAML's, and the home."""
    return {**(run_config.get("resources") or {}), "home": {"config": {"home": home}}}


def configured_resource(defs, name: str, run_config: dict, home: str):
    """The resource as a job of the code location builds it from `defs` and the run config."""
    resource = defs.resources[name]
    values = resolve_env((job_resources(run_config, home).get(name) or {}).get("config") or {})
    return type(resource)(**{**resource.model_dump(exclude_unset=True), **values})


def expected_settings(defs, asset_def, run_config: dict, home: str) -> str:
    """The settings digest a materialisation of ``asset_def`` made by this run would record."""
    from pipelines.validate import config_class

    name = asset_def.key.to_user_string()
    cls = config_class(asset_def)
    values = resolve_env(((run_config.get("ops") or {}).get(name) or {}).get("config") or {})
    config = cls(**values).model_dump() if cls is not None else None
    resources = {k: resource_settings(configured_resource(defs, k, run_config, home))
                 for k in sorted(asset_def.required_resource_keys) if k in defs.resources}
    return settings_digest(config, resources)


def _loading_context():
    from dagster._core.loader import LoadingContext

    class Loading(LoadingContext):
        """The smallest LoadingContext: Dagster's stale-status resolver asks for one."""

        def __init__(self, instance):
            self._instance, self._loaders = instance, {}

        instance = property(lambda self: self._instance)
        loaders = property(lambda self: self._loaders)

    return Loading


HOME_LOOKBACK = 100  # materialisations of one asset partition searched for this home's latest


class InstanceState:
    """Freshness of asset partitions for one run's settings, read from ``instance``."""

    def __init__(self, instance, defs, run_config: dict, home: str):
        self.instance, self.defs, self.run_config, self.home = instance, defs, run_config, home
        # the home as each materialisation records it (metadata "settings"), to tell this home's apart
        self.recorded_home = resource_settings(configured_resource(defs, "home", run_config, home))["home"]

    def _latest(self, key, partition):
        """This home's latest materialisation of the asset partition, or None. Several homes may
        share one Dagster instance (one DAGSTER_HOME): their materialisations of the same asset key
        interleave, so the newest record whose recorded home (metadata ``settings``) is this run's
        is the one that describes this home's files; one from another home says nothing about them.
        Looks back over the last HOME_LOOKBACK records (beyond: "never built", a rebuild)."""
        from dagster import AssetRecordsFilter

        records = self.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None),
            limit=HOME_LOOKBACK).records
        for record in records:
            settings = record.asset_materialization.metadata.get("settings")
            recorded = ((getattr(settings, "value", None) or {}).get("resources") or {}).get("home") or {}
            if recorded.get("home") == self.recorded_home:
                return record.asset_materialization
        return None

    def why_stale(self, name: str, partition: str | None) -> str | None:
        """None when the asset partition is fresh, else what makes it stale, in a few words."""
        from dagster import AssetKey
        from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
        from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

        key = AssetKey.from_user_string(name)
        asset_def = self.defs.get_assets_def(key)
        latest = self._latest(key, partition)
        if latest is None:
            return "never built"
        metadata = {k: getattr(v, "value", v) for k, v in latest.metadata.items()}
        if metadata.get("settings_digest") != expected_settings(self.defs, asset_def, self.run_config, self.home):
            return "settings changed"
        resolver = CachingStaleStatusResolver(self.instance, self.defs.resolve_asset_graph(),
                                              _loading_context()(self.instance))
        if resolver.get_status(key, partition) == StaleStatus.STALE:
            causes = resolver.get_stale_causes(key, partition)
            return causes[0].reason if causes else "stale"
        for path, recorded in (metadata.get("outputs") or {}).items():
            now = listing(path)
            if now != recorded:
                return f"{Path(path).name}: {'missing' if now['listing'] == 'missing' else 'files changed since it was built'}"
        check_keys = list(asset_def.check_keys)
        for check_key, record in self.instance.event_log_storage.get_latest_asset_check_execution_by_key(check_keys).items():
            evaluation = record.event.dagster_event.event_specific_data if record.event and record.event.dagster_event else None
            if record.status == AssetCheckExecutionRecordStatus.PLANNED:
                return f"check {check_key.name} did not finish"
            if record.status == AssetCheckExecutionRecordStatus.FAILED and getattr(evaluation, "severity", None) is not None \
                    and evaluation.severity.value == "ERROR":
                return f"check {check_key.name} failed"
        return None

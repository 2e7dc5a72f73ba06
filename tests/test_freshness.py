"""Dagster's event log is the one record of what is fresh, whichever door built it.

A tiny Nordland home is built once with `seqvpr run`; then runs are launched as the UI launches
them (a run of the code location's `nordland_job` through the Dagster instance, with its own run
config, no runner code) and as `seqvpr run` does, and each must see what the other did. Also: a
byte-identical rebuild leaves everything downstream synced, outputs deleted or truncated by hand
make their asset rerun (N43, N44), and a code edit makes stale only the assets that run the module.
"""
from __future__ import annotations

import copy
import os

import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, DagsterInstance, execute_job
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.definitions.reconstruct import build_reconstructable_job

from pipelines.definitions import defs
from pipelines.run import run
from pipelines.state import _loading_context
from seqvpr.layout import Layout

TINY = {"ops": {"nordland_raw": {"config": {"scale": {"frames": 3, "width": 32, "height": 24}}}},
        "resources": {"encoder": {"config": {"num_layers": 1}}}}
NORDLAND = ["key:nordland_*export", "nordland_struct_files"]  # every Nordland dataset product (Dagster selection syntax)
JOB_ASSETS = ["nordland_split", "nordland_struct_files", "nordland_shards", "nordland_adapt_stformer_export",
              "nordland_gsv_export", "nordland_seqnet_export"]


def _with_separation(separation: float) -> dict:
    config = copy.deepcopy(TINY)
    config["ops"]["nordland_split"] = {"config": {"frame_separation": separation}}
    return config


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("fresh") / "home"
    os.environ["DAGSTER_HOME"] = str(home / ".dagster_home")
    run(str(home), 2, TINY, selection=NORDLAND)
    return home


def launch_from_ui(home, ops: dict | None = None, assets: list[str] | None = None):
    """What the launchpad does: a run of `nordland_job` (or of some of its assets) with a run config."""
    config = {"resources": {"home": {"config": {"home": str(home)}}, "encoder": {"config": {"num_layers": 1}}}}
    if ops:
        config["ops"] = {name: {"config": values} for name, values in ops.items()}
    job = build_reconstructable_job("pipelines.jobs", "resolve_job", reconstructable_args=("nordland_job",))
    with DagsterInstance.get() as instance:
        result = execute_job(job, instance, run_config=config,
                             asset_selection=[AssetKey(a) for a in assets] if assets else None)
        assert result.success
        assert instance.get_run_by_id(result.run_id).job_name == "nordland_job"


def stale_in_dagster(names: list[str]) -> set[str]:
    """The assets Dagster itself (its UI) shows as stale."""
    with DagsterInstance.get() as instance:
        resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(), _loading_context()(instance))
        return {n for n in names if resolver.get_status(AssetKey(n)) != StaleStatus.FRESH}


def _ran(tasks) -> dict[str, str]:
    return {t.name: t.reason for t in tasks if not t.fresh}


def test_a_split_rebuilt_from_the_ui_is_seen_by_the_runner(home):
    layout = Layout.from_home(home)
    rows = pq.read_metadata(layout.split_table("nordland")).num_rows
    launch_from_ui(home, {"nordland_split": {"frame_separation": 2.0}}, assets=["nordland_split"])
    assert pq.read_metadata(layout.split_table("nordland")).num_rows < rows
    assert {"nordland_struct_files", "nordland_shards"} <= stale_in_dagster(JOB_ASSETS)
    ran = _ran(run(str(home), 2, _with_separation(2.0), selection=NORDLAND))
    assert "nordland_split" not in ran, ran  # built from the UI with these settings
    assert set(JOB_ASSETS[1:]) <= set(ran), ran
    assert ran["nordland_struct_files"] == "has a new dependency data version"
    assert stale_in_dagster(JOB_ASSETS) == set()


def test_the_runners_settings_win_and_the_ui_sees_the_runners_rebuild(home):
    """The runner rebuilds a split made from the UI with other settings (and the embeddings of the
    frames it now holds: the benchmark job, unpartitioned, does not embed); the UI then shows what
    is downstream as stale, and its benchmark job brings everything back in sync for both."""
    ran = _ran(run(str(home), 2, TINY, selection=["nordland_struct_files", "nordland_embeddings"]))
    assert ran["nordland_split"] == "settings changed" and "nordland_struct_files" in ran
    assert stale_in_dagster(JOB_ASSETS) == {"nordland_shards", "nordland_adapt_stformer_export", "nordland_gsv_export"}
    launch_from_ui(home)
    assert stale_in_dagster(JOB_ASSETS) == set()
    assert _ran(run(str(home), 2, TINY, selection=NORDLAND)) == {}


def test_a_byte_identical_rebuild_leaves_downstream_synced(home):
    with DagsterInstance.get() as instance:
        before = instance.get_latest_materialization_event(AssetKey("nordland_split")).asset_materialization.tags
    launch_from_ui(home, assets=["nordland_split"])
    with DagsterInstance.get() as instance:
        after = instance.get_latest_materialization_event(AssetKey("nordland_split")).asset_materialization.tags
    assert after["dagster/data_version"] == before["dagster/data_version"]
    assert stale_in_dagster(JOB_ASSETS) == set()
    assert _ran(run(str(home), 2, TINY, selection=NORDLAND)) == {}


def test_outputs_deleted_or_truncated_by_hand_are_rebuilt(home):
    """N44: one struct file of several deleted; N43: a split's only shard deleted; a shard cut short."""
    layout = Layout.from_home(home)
    struct_file = next(layout.struct_files("nordland").glob("*.db"))
    struct_file.unlink()
    ran = _ran(run(str(home), 2, TINY, selection=["nordland_struct_files"]))
    assert ran == {"nordland_struct_files": "nordland: files changed since it was built"}, ran
    assert struct_file.is_file()
    shard = next(layout.shard_root.joinpath("nordland").rglob("*.tar"))
    shard.unlink()
    assert set(_ran(run(str(home), 2, TINY, selection=["nordland_shards"]))) == {"nordland_shards"}
    assert shard.is_file()
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    assert set(_ran(run(str(home), 2, TINY, selection=["nordland_shards"]))) == {"nordland_shards"}
    assert _ran(run(str(home), 2, TINY, selection=NORDLAND)) == {}


def test_a_code_edit_makes_stale_only_the_assets_that_run_the_module(monkeypatch):
    from pipelines import versions

    graph = defs.resolve_asset_graph()

    def code_versions():
        versions.clear_caches()
        return {k.to_user_string(): versions.asset_code_version(defs.get_assets_def(k)) for k in graph.get_all_asset_keys()}

    declared = {k.to_user_string(): defs.get_assets_def(k).code_versions_by_key[k] for k in graph.get_all_asset_keys()}
    assert code_versions() == declared
    source = versions.source
    for module, expected in (("seqvpr.datasets.robotcar", lambda n: n == "robotcar_frames"),
                             ("seqvpr.datasets.nuscenes", lambda n: n == "nuscenes_frames"),
                             ("seqvpr.train", lambda n: n.endswith(("_checkpoint", "_results", "_frame_descriptors")))):
        monkeypatch.setattr(versions, "source", lambda m, module=module: source(m) + ("\nEDITED = 1\n" if m == module else ""))
        edited = code_versions()
        assert {n for n in declared if edited[n] != declared[n]} == {n for n in declared if expected(n)}, module
    monkeypatch.setattr(versions, "source", lambda m: source(m) + "\n# a comment changes nothing\n")
    assert code_versions() == declared
    versions.clear_caches()


def test_runner_runs_are_recorded_under_named_jobs_and_can_be_re_executed(home):
    """Every run of `seqvpr run` is a run of a job of the code location, with the origin the UI needs
    to re-execute it; re-executed (Dagster's Python API, with the parent's tags as the UI copies
    them), it rebuilds the same asset partition."""
    from dagster import ReexecutionOptions, RunsFilter

    jobs = {job.name for job in defs.resolve_all_job_defs()}
    with DagsterInstance.get() as instance:
        names = {r.job_name for r in instance.get_runs() if r.job_name != "nordland_job"}  # nordland_job: launch_from_ui
        assert names and names <= jobs and "__ephemeral_asset_job__" not in names
        parent = instance.get_runs(RunsFilter(job_name="nordland_frames_job"), limit=1)[0]
        origin = parent.remote_job_origin
        assert origin.job_name == "nordland_frames_job"
        assert origin.repository_origin.code_location_origin.location_name == "pipelines.definitions"  # workspace.yaml
        job = build_reconstructable_job("pipelines.jobs", "resolve_job", reconstructable_args=("nordland_frames_job",))
        result = execute_job(job, instance, tags={"dagster/partition": parent.tags["dagster/partition"]},
                             reexecution_options=ReexecutionOptions(parent_run_id=parent.run_id))
        assert result.success
        (event,) = result.get_asset_materialization_events()
        assert event.asset_key == AssetKey("nordland_frames") and event.partition == parent.tags["dagster/partition"]


RUNS_QUERY = """
query { runsOrError { ... on Runs { results { runId jobName status assetSelection { path } } } } }
"""
RUN_QUERY = """
query($runId: ID!) { runOrError(runId: $runId) { ... on Run { runId jobName status parentRunId assetSelection { path } } } }
"""
REEXECUTE = """
mutation($reexecutionParams: ReexecutionParams) {
  launchPipelineReexecution(reexecutionParams: $reexecutionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId jobName } }
    ... on PythonError { message }
  }
}
"""


def test_a_runner_run_is_re_executed_through_the_uis_graphql_api(home):
    """As the UI does it: the workspace of workspace.yaml (its code server a subprocess, as under
    `dagster dev`) and Dagster's GraphQL schema. The runner's runs are listed under the named jobs;
    "Re-execute all" on the run that built the struct files launches a run of the same job (through
    the home's run coordinator and launcher) that writes the deleted struct file again."""
    import time
    from pathlib import Path

    from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

    workspace = str(Path(__file__).resolve().parents[1] / "workspace.yaml")
    jobs = {job.name for job in defs.resolve_all_job_defs()}
    struct_file = next(Layout.from_home(home).struct_files("nordland").glob("*.db"))
    with DagsterInstance.get() as instance, define_out_of_process_context(workspace, None, instance) as context:
        runs = execute_dagster_graphql(context, RUNS_QUERY).data["runsOrError"]["results"]
        assert runs and {r["jobName"] for r in runs} <= jobs, {r["jobName"] for r in runs}
        (parent, *_) = [r for r in runs if r["jobName"] == "prepare_job" and r["status"] == "SUCCESS"
                        and r["assetSelection"] == [{"path": ["nordland_struct_files"]}]]
        struct_file.unlink()
        launched = execute_dagster_graphql(context, REEXECUTE, {"reexecutionParams": {
            "parentRunId": parent["runId"], "strategy": "ALL_STEPS"}}).data["launchPipelineReexecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        deadline = time.monotonic() + 120
        while (child := execute_dagster_graphql(context, RUN_QUERY, {"runId": run_id}).data["runOrError"])[
                "status"] not in ("SUCCESS", "FAILURE", "CANCELED"):
            assert time.monotonic() < deadline, child
            time.sleep(0.5)
    assert child == {"runId": run_id, "jobName": "prepare_job", "status": "SUCCESS", "parentRunId": parent["runId"],
                     "assetSelection": [{"path": ["nordland_struct_files"]}]}
    assert struct_file.is_file()


def test_every_partitioned_asset_has_the_job_seqvpr_run_launches():
    """`seqvpr run` materialises a partitioned asset through job_name's job: it must exist (the
    checkpoints, partitioned by model, once had none and every training run failed at launch)."""
    from pipelines.jobs import job_name

    names = {job.name for job in defs.resolve_all_job_defs()}
    partitioned = [a for a in defs.resolve_all_asset_specs() if a.partitions_def is not None]
    assert any(a.group_name == "training" for a in partitioned)
    for spec in partitioned:
        assert job_name(spec.key.to_user_string(), True, spec.group_name) in names, spec.key

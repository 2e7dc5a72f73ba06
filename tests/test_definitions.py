"""The code location loads: `dagster definitions validate` passes and every job resolves."""
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey

from pipelines.definitions import defs

ROOT = Path(__file__).resolve().parents[1]


def test_dagster_definitions_validate(tmp_path):
    dagster = Path(sys.executable).with_name("dagster")
    result = subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "DAGSTER_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr


def test_asset_graph_and_jobs():
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    for dataset in ("robotcar", "nuscenes", "nordland"):
        assert {f"{dataset}_raw", f"{dataset}_frames", f"{dataset}_frame_table", f"{dataset}_embeddings"} <= keys
    for benchmark in ("nordland", "oxford_easy", "oxford_hard", "nuscenes"):
        assert {f"{benchmark}_split", f"{benchmark}_struct_files", f"{benchmark}_shards", f"{benchmark}_results"} <= keys
    jobs = {job.name for job in defs.resolve_all_job_defs()}
    assert {"prepare_job", "train_evaluate_job", "robotcar_frames_job", "nordland_embeddings_job",
            "robotcar_frames_dask_job", "oxford_hard_job"} <= jobs
    assert defs.resolve_job_def("robotcar_frames_dask_job").executor_def.name == "dask"
    benchmark = {k.to_user_string() for k in defs.resolve_job_def("oxford_hard_job").asset_layer.selected_asset_keys}
    assert benchmark == {"oxford_hard_split", "oxford_hard_struct_files", "oxford_hard_shards",
                         "oxford_hard_adapt_stformer_export", "oxford_hard_gsv_export"}


def test_every_asset_declares_a_code_version_and_runs_its_checks_in_its_step():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assets_def = defs.get_assets_def(key)
        assert len(assets_def.code_versions_by_key[key] or "") == 16, key
        assert all(spec.blocking for spec in assets_def.check_specs), key
    shards = defs.get_assets_def(AssetKey("oxford_hard_shards"))
    assert {s.name for s in shards.check_specs} == {"one_sample_per_frame", "manifest_hashes_match", "manifest_matches_settings"}
    assert not list(defs.asset_checks or []), "a check outside its asset's step is a step and a process of its own"


@pytest.mark.filterwarnings("ignore:Parameter `include_sources`")  # Dagster's own parser of `tag:`
def test_every_asset_shows_its_kinds_and_the_heavy_stages_are_selectable_by_tag():
    """Kinds and tags come from pipelines/kinds.py; Dagster's own selection syntax reads them, as
    `seqvpr run --select` and the UI do."""
    from pipelines.plan import selected

    graph = defs.resolve_asset_graph()
    kinds = {k.to_user_string(): graph.get(k).kinds for k in graph.get_all_asset_keys()}
    assert all(kinds.values()), [name for name, k in kinds.items() if not k]
    assert kinds["robotcar_frame_table"] == {"parquet"} and kinds["oxford_easy_struct_files"] == {"matlab"}
    assert kinds["nordland_shards"] == {"webdataset"} and kinds["oxford_easy_ablation_checkpoint"] == {"pytorch"}
    heavy = {k.to_user_string() for k in selected(defs, ["tag:heavy"])}
    assert heavy == {f"{d}_{stage}" for d in ("robotcar", "nuscenes", "nordland") for stage in ("frames", "embeddings")} \
        | {f"{b}_{stage}" for b in ("nordland", "nuscenes", "oxford_easy", "oxford_hard", "oxford_seqnet")
           for stage in ("shards", "frame_descriptors")}
    assert {k.to_user_string() for k in selected(defs, ["kind:matlab"])} >= {"nordland_struct_files",
                                                                              "oxford_seqnet_seqnet_export"}

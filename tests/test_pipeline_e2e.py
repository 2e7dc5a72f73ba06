"""The whole pipeline on a tiny synthetic world through the headless runner: the `seqvpr run`
command's output, struct files and shards loaded with independent readers, a forced re-run is
byte-identical, an unchanged rerun does no work (read from the Dagster instance), and a new frame
separation only rebuilds downstream products (no new embeddings for frames already embedded); a
split the settings empty loses its old shards. Runs are recorded under the code location's named
jobs and can be re-executed."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from scipy.io import loadmat

from pipelines.resources import PipelineHome
from pipelines.run import plan, run
from seqvpr.benchmarks import BENCHMARKS
from seqvpr.layout import Layout
from seqvpr.structfile import struct_names

TINY = {
    "ops": {
        "robotcar_raw": {"config": {"scale": {"frames_per_traversal": 0, "route_length_m": 40, "camera_hz": 2, "width": 64, "height": 48}}},
        "nuscenes_raw": {"config": {"scale": {"scenes_per_location": 2, "samples_per_scene": 5, "width": 64, "height": 48}}},
        "nordland_raw": {"config": {"scale": {"frames": 10, "width": 64, "height": 48}}},
    },
    "resources": {"encoder": {"config": {"num_layers": 1, "batch_size": 16}}},
}


def _default_task_count() -> int:
    """Asset partitions of the default run (every dataset product, no training)."""
    return len(plan())


def _digests(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")

    os.environ["DAGSTER_HOME"] = str(home / ".dagster_home")
    config = home.parent / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    seqvpr = Path(sys.executable).with_name("seqvpr")
    result = subprocess.run([str(seqvpr), "run", "--home", str(home), "--workers", "2", "--config", str(config)],
                            capture_output=True, text=True, timeout=900, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stdout + result.stderr
    (home.parent / "run_output.txt").write_text(result.stdout + result.stderr)
    return home


def test_default_run_prints_a_short_report_ending_with_the_summary_table(home):
    """Under 120 lines: a line per finished partition and the summary table; Dagster's logs are in a file."""
    output = (home.parent / "run_output.txt").read_text()
    lines = output.splitlines()
    assert len(lines) < 120, output
    assert not any(word in output for word in ("DEBUG", "alembic", "Warning", "dagster.yaml"))
    table_start = next(i for i, line in enumerate(lines) if line.startswith("asset ") and "| partitions |" in line)
    table = lines[table_start + 2:-1]
    assert {row.split("|")[0].strip() for row in table} >= {"nordland_raw", "robotcar_frames", "oxford_hard_shards"}
    assert next(row for row in table if row.startswith("robotcar_frames ")).split("|")[1].strip() == "5 run"
    total = _default_task_count()
    assert lines[-1].startswith(f"{total} asset partitions ({total} run, 0 fresh)")
    assert sum(1 for line in lines if line.startswith("  + ")) == total
    log = next((home / "logs").glob("run-*.log")).read_text()
    assert "DagsterExecutionStepExecutionError" not in log and "STEP_SUCCESS" in log
    assert (home / ".dagster_home" / "dagster.yaml").exists()


def test_struct_files_and_shards_of_every_benchmark(home):
    layout = Layout.from_home(home)
    for benchmark in ("nordland", "oxford_easy", "oxford_hard", "oxford_seqnet", "nuscenes"):
        test_file = layout.struct_files(benchmark) / struct_names(BENCHMARKS[benchmark], "test")[0]
        assert test_file.is_file(), benchmark
        struct = loadmat(test_file)["dbStruct"][0, 0]
        manifest = json.loads((layout.shards(benchmark, "test") / "manifest.json").read_text())
        assert manifest["samples"] == int(struct["numImages"][0, 0]) + int(struct["numQueries"][0, 0])


def test_unchanged_rerun_does_no_work_and_a_forced_one_is_byte_identical(home):
    layout = Layout.from_home(home)
    before = {**_digests(layout.struct_root), **_digests(layout.shard_root)}
    assert all(task.fresh for task in run(str(home), workers=2, run_config=TINY))
    shutil.rmtree(layout.struct_files("nordland"))  # an output removed by hand is not fresh any more
    again = run(str(home), workers=2, run_config=TINY)
    assert [task.name for task in again if not task.fresh] == ["nordland_struct_files"]  # same bytes: nothing downstream
    forced = run(str(home), workers=2, run_config=TINY, rebuild_from=["nordland_raw", "robotcar_raw", "nuscenes_raw"])
    assert len(forced) == _default_task_count() and not any(task.fresh for task in forced)
    assert {**_digests(layout.struct_root), **_digests(layout.shard_root)} == before


def test_new_frame_separation_embeds_nothing_new(home):
    layout = Layout.from_home(home)
    cache = [p for p in layout.data_root.joinpath("embeddings").rglob("*.chunk")]
    assert cache
    frames_before = {p: p.stat().st_mtime_ns for p in (layout.data_root / "frames").rglob("*.tif")}
    assert frames_before
    old_struct = _digests(layout.struct_files("oxford_hard"))
    config = {**TINY, "ops": {**TINY["ops"], "oxford_hard_split": {"config": {"frame_separation": 5.0}}}}
    run(str(home), workers=2, run_config=yaml.safe_load(yaml.safe_dump(config)), rebuild_from=["oxford_hard_split"])
    assert {p: p.stat().st_mtime_ns for p in (layout.data_root / "frames").rglob("*.tif")} == frames_before  # not rewritten
    assert sorted(layout.data_root.joinpath("embeddings").rglob("*.chunk")) == sorted(cache)
    assert _digests(layout.struct_files("oxford_hard")) != old_struct


def test_changed_setting_reruns_only_what_it_feeds(home):
    """No --rebuild-from: the changed split, its struct files and shards run, and what reads the split's
    frames (the RobotCar embedding index, embedding nothing new, and the other Oxford benchmarks'
    shards and exports made from it); raw data, frames, other splits, Nordland and nuScenes are fresh."""
    config = {**TINY, "ops": {**TINY["ops"], "oxford_hard_split": {"config": {"frame_separation": 3.0}}}}
    tasks = run(str(home), workers=2, run_config=config)
    ran = {task.key for task in tasks if not task.fresh}
    assert {"oxford_hard_split", "oxford_hard_struct_files", "oxford_hard_shards"} <= ran
    fed = {key for key in ran if key.startswith("oxford_hard_") or key == "robotcar_embeddings"
           or (key.startswith(("oxford_easy_", "oxford_seqnet_")) and key.endswith(("_shards", "_export")))}
    assert ran == fed, ran - fed
    assert all(task.written.get("embedded", 0) == 0 for task in tasks if task.key == "robotcar_embeddings")
    assert not any(task.failed_checks for task in tasks)


def test_split_emptied_by_new_settings_loses_its_old_shards(home):
    """`frame_separation: 1e9` keeps each run's first frame (section 1), so an Oxford-easy test split
    of section 6 is empty: its shards and struct file go, the checks pass; old shards put back make
    the one-sample-per-frame check fail."""
    from assets.shards import shard_assets_and_checks

    layout = Layout.from_home(home)
    test_shards = layout.shards("oxford_easy", "test")
    stale = home.parent / "stale_test_shards"
    shutil.copytree(test_shards, stale)
    config = {**TINY, "ops": {**TINY["ops"], "oxford_easy_split": {"config": {"frame_separation": 1e9, "test_sections": [6]}}}}
    tasks = run(str(home), workers=2, run_config=config)
    assert {"oxford_easy_split", "oxford_easy_struct_files", "oxford_easy_shards"} <= {t.key for t in tasks if not t.fresh}
    assert not any(task.failed_checks for task in tasks)
    assert not test_shards.exists() and layout.shards("oxford_easy", "train").exists()
    assert not list(layout.struct_files("oxford_easy").glob("*_test.db"))
    shutil.copytree(stale, test_shards)
    check = next(c for c in shard_assets_and_checks
                 if any(k.name == "one_sample_per_frame" and k.asset_key.to_user_string() == "oxford_easy_shards"
                        for k in getattr(c, "check_keys", [])))
    result = check(home=PipelineHome(home=str(home)))
    assert not result.passed and "test: shards left from a run" in str(result.metadata["problems"].value)


"""The headless runner as a user meets it: validation before any work, the failure line, the home's
run lock, workers that die with the runner, and the sweep of a dead run's temporary folders.

Runs go through the real `seqvpr run` command in a subprocess where the behaviour is about
processes (lock, SIGKILL), and through `pipelines.run.run` in-process otherwise; only the cheap
`nordland_raw` / `robotcar_raw` assets run, on tiny synthetic worlds.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from pipelines.run import RunFailed, run
from pipelines.validate import ConfigError
from seqvpr.housekeeping import home_lock

REPO = Path(__file__).resolve().parents[1]
NORDLAND_TINY = {"ops": {"nordland_raw": {"config": {"scale": {"frames": 3, "width": 32, "height": 24}}}}}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / ".dagster_home"))
    return tmp_path / "home"


def _seqvpr(home: Path, *args: str, config: dict | None = None, **popen) -> subprocess.Popen:
    command = [str(Path(sys.executable).with_name("seqvpr")), "run", "--home", str(home), *args]
    if config is not None:
        path = home.parent / f"config-{time.monotonic_ns()}.yaml"
        path.write_text(yaml.safe_dump(config))
        command += ["--config", str(path)]
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


# --------------------------------------------------------------------------- validation before any work


def _config_problems(home: Path, config: dict, **names) -> str:
    with pytest.raises(ConfigError) as err:
        run(str(home), 1, config, **names)
    assert not (home / "data").exists() and not (home / ".seqvpr").exists(), "work started before validation"
    return str(err.value)


@pytest.mark.parametrize("config, names, expected", [
    ({"ops": {"oxford_hard_splits": {"config": {"frame_separation": 2.0}}}}, {},
     "ops: unknown asset 'oxford_hard_splits' (did you mean 'oxford_hard_split'?)"),
    ({"resources": {"encoder": {"config": {"chekpoint": "/weights.pth"}}}}, {},
     "resources.encoder.config: unknown setting 'chekpoint' (did you mean 'checkpoint'?)"),
    ({"ops": {"oxford_hard_split": {"config": {"frame_seperation": 2.0}}}}, {},
     "ops.oxford_hard_split.config: unknown setting 'frame_seperation' (did you mean 'frame_separation'?)"),
    ({"op": {}}, {}, "config: unknown top-level key 'op' (did you mean 'ops'?)"),
    ({}, {"selection": ["nordlnd_shards"]}, "--select: unknown asset 'nordlnd_shards' (did you mean 'nordland_shards'?)"),
    ({}, {"rebuild_from": ["oxford_hard_splitt"]}, "--rebuild-from: unknown asset 'oxford_hard_splitt' (did you mean 'oxford_hard_split'?)"),
    ({"ops": {"oxford_hard_split": {"config": {"radius": -10}}}}, {},
     "ops.oxford_hard_split.config.radius: Input should be greater than or equal to 0 (got -10)"),
    ({"ops": {"oxford_hard_split": {"config": {"frame_separation": float("nan")}}}}, {},
     "ops.oxford_hard_split.config.frame_separation: Input should be a finite number (got nan)"),
    ({"ops": {"oxford_easy_split": {"config": {"nontrivial_radius": -1.0}}}}, {},
     "ops.oxford_easy_split.config.nontrivial_radius: Input should be greater than or equal to 0"),
    ({"ops": {"nordland_split": {"config": {"negatives_per_query": -1}}}}, {},
     "ops.nordland_split.config.negatives_per_query: Input should be greater than or equal to 1 (got -1)"),
    ({"ops": {"oxford_hard_split": {"config": {"test_sections": [7, 8]}}}}, {},
     "test_sections must be section numbers 1..n_sections (6), got [7, 8]"),
    ({"ops": {"nordland_split": {"config": {"test_range": [0.9, 0.2]}}}}, {},
     "test_range must be [start, end) with start < end, got [0.9, 0.2]"),
    ({"ops": {"nuscenes_split": {"config": {"max_heading_deg": 400.0}}}}, {},
     "ops.nuscenes_split.config.max_heading_deg: Input should be less than or equal to 180"),
    ({"ops": {"nordland_split": {"config": {"test_db": []}}}}, {}, "ops.nordland_split.config.test_db: List should have at least 1 item"),
    ({"ops": {"nordland_frame_table": {"config": {"size": 3}}}}, {}, "ops.nordland_frame_table.config: nordland_frame_table takes no settings"),
    ({"ops": {"nordland_raw": {"settings": {}}}}, {}, "ops.nordland_raw: unknown key 'settings'"),
], ids=lambda value: str(value)[:60])
def test_bad_setting_is_refused_before_any_work(home, config, names, expected):
    assert expected in _config_problems(home, config, **names)


def test_every_problem_is_reported_at_once(home):
    config = {"ops": {"oxford_hard_split": {"config": {"radius": -10, "negative_radius": -1}}, "nordlnd_raw": {}},
              "resources": {"encoder": {"config": {"chekpoint": "x"}}}}
    message = _config_problems(home, config)
    assert all(part in message for part in ("radius", "negative_radius", "nordlnd_raw", "chekpoint")), message


def test_local_source_inside_the_home_is_refused_before_any_work(home):
    config = {"ops": {"robotcar_raw": {"config": {"source": "local", "path": str(home / "data" / "raw" / "robotcar")}}}}
    assert "lies inside the pipeline home" in _config_problems(home, config)


def test_cli_reports_a_typo_in_one_line_and_exits_2(home):
    proc = _seqvpr(home, "--select", "nordlnd_shards")
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, output
    assert "unknown asset 'nordlnd_shards' (did you mean 'nordland_shards'?)" in output
    assert "Traceback" not in output and len(output.splitlines()) <= 3, output


# --------------------------------------------------------------------------- the failure line


def test_failure_line_names_the_file_and_the_problem(home, tmp_path):
    empty = tmp_path / "my_robotcar"
    empty.mkdir()
    config = {"ops": {"robotcar_raw": {"config": {"source": "local", "path": str(empty)}}}}
    with pytest.raises(RunFailed) as err:
        run(str(home), 1, config, selection=["robotcar_raw"])
    first_line = str(err.value).splitlines()[0]
    assert first_line == (f"robotcar_raw failed: DataError: {empty}: neither a robotcar folder layout "
                          "nor a folder of robotcar archives"), first_line
    assert "DagsterExecutionStepExecutionError" not in str(err.value)
    log = Path(str(err.value).rsplit("(full log: ", 1)[1].rstrip(")"))
    assert log.parent == home / "logs" and "DagsterExecutionStepExecutionError" in log.read_text()


# --------------------------------------------------------------------------- one run per home, no process left behind


def test_second_run_on_a_home_waits_for_the_first(home):
    home.mkdir()
    with home_lock(home):
        proc = _seqvpr(home, "--select", "nordland_raw", config=NORDLAND_TINY)
        deadline = time.monotonic() + 60
        first = proc.stdout.readline()
        waiting = proc.stdout.readline()
        assert "waiting for it to finish" in waiting and f"pid {os.getpid()}" in waiting, first + waiting
        time.sleep(1.0)
        assert proc.poll() is None and not (home / "data" / "raw" / "nordland").exists(), "ran beside the lock holder"
        assert time.monotonic() < deadline
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    assert (home / "data" / "raw" / "nordland").is_dir()


def test_sigkill_of_the_runner_leaves_no_process_behind(home):
    """Kill `seqvpr run` while its workers normalise frames: every worker dies too."""
    config = {"ops": {"nordland_raw": {"config": {"scale": {"frames": 60, "width": 320, "height": 240}}}}}
    proc = _seqvpr(home, "--select", "nordland_frames", "--workers", "2", config=config)
    runner = psutil.Process(proc.pid)
    deadline = time.monotonic() + 120
    workers: list[psutil.Process] = []
    while len(workers) < 2:
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the runner started no workers"
        workers = [c for c in runner.children(recursive=True) if c.is_running()]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    gone, alive = psutil.wait_procs(workers, timeout=10)
    for orphan in alive:  # never leave them behind, even when the test fails
        orphan.kill()
    proc.stdout.close()
    assert not alive, f"workers left running: {[p.pid for p in alive]}"


def test_rerun_sweeps_the_temporaries_of_a_dead_run_and_nothing_else(home, tmp_path):
    raw_parent = home / "data" / "raw"
    leftovers = [raw_parent / ".nordland.abc123.partial", raw_parent / ".robotcar.x1.extracting",
                 home / "shards" / "nordland" / ".test.q9.partial", home / "struct_files" / ".nordland.old-4242",
                 home / "data" / "tables" / ".nordland.parquet.zz.partial"]
    for path in leftovers[:-1]:
        (path / "inner").mkdir(parents=True)
        (path / "inner" / "half.png").write_bytes(b"half")
    leftovers[-1].parent.mkdir(parents=True)
    leftovers[-1].write_bytes(b"half a table")
    kept = [home / "data" / "downloads" / "nordland" / "summer.tar.gz.part", home / "data" / "notes.partial.txt"]
    for path in kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"resumable")
    users = tmp_path / "users_dataset"
    (users / ".mine.1.partial").mkdir(parents=True)
    (home / "data" / "linked").symlink_to(users)  # a link into a user's folder is never followed
    run(str(home), 1, NORDLAND_TINY, selection=["nordland_raw"])
    assert [p for p in leftovers if p.exists()] == []
    assert all(p.read_bytes() == b"resumable" for p in kept)
    assert (users / ".mine.1.partial").is_dir()

"""The headless runner as a user meets it: a typo on the command line, the failure line, the home's
run lock, workers that die with the runner, and the sweep of a dead run's temporary folders
(bad settings in the YAML: tests/test_bad_inputs.py).

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
import torch
import yaml

from pipelines.run import RunFailed, run
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


# --------------------------------------------------------------------------- the command line


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
                          "nor a folder of robotcar archives; it is empty"), first_line
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


def _command_line(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # gone, or a zombie: a short-lived helper
        return ""


def test_sigkill_of_the_runner_leaves_no_process_behind(home):
    """Kill `seqvpr run` while its workers normalise frames: every worker dies too, and the
    forkserver they were started from."""
    config = {"ops": {"nordland_raw": {"config": {"scale": {"frames": 60, "width": 320, "height": 240}}}}}
    proc = _seqvpr(home, "--select", "nordland_frames", "--workers", "2", config=config)
    runner = psutil.Process(proc.pid)
    deadline = time.monotonic() + 120
    workers: list[psutil.Process] = []
    while len(workers) < 2:
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the runner started no workers"
        servers = [c for c in runner.children() if "forkserver" in _command_line(c)]
        workers = [c for s in servers for c in s.children() if c.is_running()]  # pipelines/workers.py
        time.sleep(0.05)
    processes = runner.children(recursive=True)  # the workers, their forkserver and its resource tracker
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    gone, alive = psutil.wait_procs(processes, timeout=10)
    for orphan in alive:  # never leave them behind, even when the test fails
        orphan.kill()
    proc.stdout.close()
    assert not alive, f"processes left running: {[(p.pid, _command_line(p)) for p in alive]}"


def test_rerun_sweeps_the_temporaries_of_a_dead_run_and_nothing_else(home, tmp_path):
    raw_parent = home / "data" / "raw"
    leftovers = [raw_parent / ".nordland.abc123.partial", raw_parent / ".robotcar.x1.extracting",
                 home / "shards" / "nordland" / ".test.q9.partial", home / "struct_files" / ".nordland.old-4242",
                 home / "exports" / "seqnet" / ".nordland.old-4242",
                 home / "data" / "tables" / ".nordland.parquet.zz.partial"]
    for path in leftovers[:-1]:
        (path / "inner").mkdir(parents=True)
        (path / "inner" / "half.png").write_bytes(b"half")
    leftovers[-1].parent.mkdir(parents=True)
    leftovers[-1].write_bytes(b"half a table")
    users = tmp_path / "users_dataset"
    (users / ".mine.1.partial").mkdir(parents=True)
    half_swapped = raw_parent / ".robotcar.link-4242"
    half_swapped.symlink_to(users, target_is_directory=True)
    leftovers.append(half_swapped)
    kept = [home / "data" / "downloads" / "nordland" / "summer.tar.gz.part", home / "data" / "notes.partial.txt"]
    for path in kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"resumable")
    (home / "data" / "linked").symlink_to(users)  # a link into a user's folder is never followed
    run(str(home), 1, NORDLAND_TINY, selection=["nordland_raw"])
    assert [p for p in leftovers if p.exists() or p.is_symlink()] == []
    assert all(p.read_bytes() == b"resumable" for p in kept)
    assert (users / ".mine.1.partial").is_dir()


def test_a_failed_error_check_fails_the_task_and_a_warning_does_not(tmp_path):
    """Read from a real Dagster run of a throwaway asset with one ERROR and one WARN check."""
    from dagster import AssetCheckResult, AssetCheckSeverity, DagsterInstance, asset, asset_check, materialize

    from pipelines.report import TaskResult, collect

    @asset
    def thing():
        return 1

    @asset_check(asset=thing)
    def must_hold():
        return AssetCheckResult(passed=False, metadata={"problems": ["test: shards left from an earlier run"]})

    @asset_check(asset=thing)
    def nice_to_have():
        return AssetCheckResult(passed=False, severity=AssetCheckSeverity.WARN, metadata={"problems": ["2 queries without positives"]})

    with DagsterInstance.ephemeral() as instance:
        both = collect(materialize([thing, must_hold, nice_to_have], instance=instance, raise_on_error=False), TaskResult("thing", None))
        warned = collect(materialize([thing, nice_to_have], instance=instance, raise_on_error=False), TaskResult("thing", None))
    assert both.error == "asset check must_hold failed: ['test: shards left from an earlier run']"
    assert warned.error is None and warned.failed_checks == ["nice_to_have (WARN): ['2 queries without positives']"]


def test_a_resource_setting_reaches_only_the_assets_that_use_it():
    """Published baseline features change the settings of the frame descriptors and of what trains
    and evaluates on them, not of the dataset products; an encoder setting those of the assets that
    use the encoder (downstream assets follow through Dagster's data versions)."""
    from pipelines.definitions import defs
    from pipelines.state import expected_settings

    graph = defs.resolve_asset_graph()

    def digests(config):
        return {k.to_user_string(): expected_settings(defs, defs.get_assets_def(k), config, "/home")
                for k in graph.get_all_asset_keys()}

    before = digests({})
    published = digests({"resources": {"baselines": {"config": {"baseline_features": "published"}}}})
    assert {n for n in before if before[n] != published[n]} == {n for n in before if n.endswith(("_frame_descriptors", "_checkpoint", "_results"))}
    encoder = digests({"resources": {"encoder": {"config": {"num_layers": 2}}}})
    changed = {n for n in before if before[n] != encoder[n]}
    assert {"nordland_embeddings", "nordland_shards"} <= changed
    # the seqNet export reads the encoder identity from the shards' manifest, not from the resource:
    # it follows an encoder change through the shards' data version
    assert "nordland_seqnet_export" not in changed
    assert not changed & {"nordland_raw", "nordland_frames", "nordland_split", "nordland_struct_files"}
    assert digests({"ops": {"nordland_split": {"config": {"frame_separation": 1}}}}) == before, "the default, spelt out"
    assert digests({}) != {n: expected_settings(defs, defs.get_assets_def(k), {}, "/other")
                           for n, k in ((k.to_user_string(), k) for k in graph.get_all_asset_keys())}


# --------------------------------------------------------------------------- config as the launchpad reads it


@pytest.mark.parametrize("text, expected", [
    ("ops:\n  - oxford_hard_split\n", "ops: expected a mapping of asset names to {config: {...}}, got a list: ['oxford_hard_split']"),
    ("resources:\n  - encoder\n", "resources: expected a mapping of resource names to {config: {...}}, got a list"),
    ("ops:\n  nordland_split:\n    config: {frame_separation: 2}\n  nordland_split:\n    config: {radius: 3}\n",
     "line 4: 'nordland_split' given twice (first on line 2)"),
    ("ops: [unclosed\n", "not valid YAML"),
    ("ops:\n  nordland_split:\n    config: {frame_separation: {env: SEP}}\n",
     "ops.nordland_split.config: Invalid scalar at frame_separation."),
    ("resources:\n  encoder:\n    config: {num_layers: '3'}\n",  # pydantic would take it; Dagster's launchpad does not
     'resources.encoder.config: Invalid scalar at num_layers. Value "3"'),
    ("resources:\n  encoder:\n    config: {checkpoint: {env: SEQVPR_TEST_UNSET}}\n",
     'resources.encoder.config: You have attempted to fetch the environment variable "SEQVPR_TEST_UNSET" which is not set.'),
    ("ops:\n  nordland_split:\n    config: {frame_separation: -1.0}\n",
     "ops.nordland_split.config.frame_separation: Input should be greater than or equal to 0 (got -1.0)"),
])
def test_config_errors_exit_2_with_one_clear_line_before_any_work(tmp_path, capsys, text, expected):
    from pipelines.run import main

    config = tmp_path / "c.yaml"
    config.write_text(text)
    assert main(["--home", str(tmp_path / "home"), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err, err
    assert not (tmp_path / "home" / "data").exists()


def test_env_values_are_accepted_where_dagster_accepts_them(tmp_path, monkeypatch):
    from pipelines.definitions import defs
    from pipelines.validate import validate

    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"w")
    monkeypatch.setenv("SEQVPR_TEST_WEIGHTS", str(weights))
    validate(defs, {"resources": {"encoder": {"config": {"checkpoint": {"env": "SEQVPR_TEST_WEIGHTS"}}}}}, tmp_path)


# --------------------------------------------------------------------------- UI runs and runner runs on one home


def test_the_sweep_leaves_the_temporaries_of_a_running_ui_step_alone(home, capsys):
    """A step started from `dagster dev` holds the step lock (as every asset step does): its
    `.partial` folder survives a `seqvpr run` started meanwhile, which says why and runs."""
    from seqvpr.housekeeping import step_lock

    writing = home / "data" / "raw" / ".nordland.ui1.partial"
    (writing / "inner").mkdir(parents=True)
    with step_lock(home):
        run(str(home), 1, NORDLAND_TINY, selection=["nordland_raw"])
    output = capsys.readouterr().out
    assert "a step started from dagster dev is running on this home: temporary files left as they are" in output
    assert writing.is_dir() and (home / "data" / "raw" / "nordland").is_dir()
    run(str(home), 1, NORDLAND_TINY, selection=["nordland_raw"])  # once it has finished, the sweep runs
    assert not writing.exists()


def test_two_runs_on_one_new_shared_dagster_home_both_work_and_leave_it_usable(tmp_path):
    """N63: two homes, one new DAGSTER_HOME, started at the same moment: both succeed, and so does
    a later run (two processes creating the instance's tables at once used to break it for good)."""
    shared = tmp_path / "dagster_shared"
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(NORDLAND_TINY))
    env = {**{k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}, "DAGSTER_HOME": str(shared)}
    command = [str(Path(sys.executable).with_name("seqvpr")), "run", "--select", "nordland_raw", "--config", str(config)]
    procs = [subprocess.Popen(command + ["--home", str(tmp_path / name)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for name in ("A", "B")]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    again = subprocess.run(command + ["--home", str(tmp_path / "A")], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "1 asset partitions (0 run, 1 fresh)" in again.stdout, again.stdout + again.stderr
    # each home's freshness is read from its own materialisations, whichever home built last
    other = subprocess.run(command + ["--home", str(tmp_path / "B")], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert other.returncode == 0 and "1 asset partitions (0 run, 1 fresh)" in other.stdout, other.stdout + other.stderr


def test_a_ui_run_with_settings_out_of_range_is_refused_at_launch(tmp_path, monkeypatch):
    """The instance `seqvpr run` creates checks a launched run's settings, ranges included, before
    it starts: `frame_separation: -1.0` fails the run with one line naming the setting, no step runs."""
    from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus
    from dagster._core.run_coordinator.base import SubmitRunContext

    from pipelines.definitions import defs
    from pipelines.launch import ValidatingRunCoordinator
    from pipelines.run import dagster_home

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "instance"))
    dagster_home(str(tmp_path / "home"))
    config = {"ops": {"nordland_split": {"config": {"frame_separation": -1.0}}},
              "resources": {"home": {"config": {"home": str(tmp_path / "home")}}}}
    with DagsterInstance.get() as instance:
        assert isinstance(instance.run_coordinator, ValidatingRunCoordinator)
        created = instance.create_run_for_job(job_def=defs.resolve_job_def("nordland_job"), run_config=config)
        refused = instance.run_coordinator.submit_run(SubmitRunContext(created, workspace=None))
        assert refused.status == DagsterRunStatus.FAILURE
        events = [e.dagster_event for e in instance.all_logs(created.run_id) if e.dagster_event]
        failure = next(e for e in events if e.event_type == DagsterEventType.RUN_FAILURE)
        assert "ops.nordland_split.config.frame_separation: Input should be greater than or equal to 0 (got -1.0)" in failure.message
        assert not any(e.event_type == DagsterEventType.STEP_START for e in events)


def test_workers_start_clean_after_the_caller_ran_parallel_torch(tmp_path):
    """A worker forked from a process whose OpenMP thread pool has run hangs in its own first
    parallel torch operation (GNU OpenMP does not survive fork); the runner is often such a process
    (a session or test that trained first), so its workers come from a forkserver."""
    from pipelines.workers import worker_pool

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    frames = torch.randn(2000, 2000)
    expected = torch.nn.functional.gelu(frames)  # this process's OpenMP pool runs
    torch.set_num_threads(threads)
    pool = worker_pool(1, str(tmp_path / "worker.log"))  # one worker: every core, several threads
    try:
        result = pool.submit(torch.nn.functional.gelu, frames).result(timeout=120)
    except TimeoutError:
        for process in pool._processes.values():
            process.kill()
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    assert torch.equal(result, expected)

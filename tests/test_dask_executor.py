"""The heavy partitioned stage on a Dask cluster, as users run it: a `distributed.LocalCluster`
(two worker processes on 127.0.0.1) started in its own process, and the real `seqvpr run
--dask-address` on a fresh home, whose Nordland seasons run as concurrent Dagster runs of
`nordland_frames_dask_job`. Every partition must run on the cluster and be written (N21's
collapse: dagster-dask keyed every run's step alike, and Dask ran one of the four)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance, RunsFilter

from seqvpr.layout import Layout

REPO = Path(__file__).resolve().parents[1]
SEASONS = ("spring", "summer", "fall", "winter")
TINY = {"ops": {"nordland_raw": {"config": {"scale": {"frames": 3, "width": 32, "height": 24}}},
                "nordland_frames": {"config": {"size": 32}}}}
CLUSTER = """
import sys, time
from distributed import LocalCluster
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                       scheduler_port=int(sys.argv[1]), dashboard_address=None)
print("ready", cluster.scheduler_address, flush=True)
while True:
    time.sleep(1)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster():
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CLUSTER), str(port)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("ready tcp://127.0.0.1:"), line
        yield f"tcp://127.0.0.1:{port}"
    finally:  # the whole session: the workers and what they started (Dagster's compute-log `tail -F`s) go too
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_seqvpr_run_on_a_dask_cluster_runs_every_concurrent_partition(tmp_path, cluster):
    home = tmp_path / "home"
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    result = subprocess.run([str(Path(sys.executable).with_name("seqvpr")), "run", "--home", str(home), "--config",
                             str(config), "--workers", "4", "--select", "nordland_frame_table", "--dask-address", cluster],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    layout = Layout.from_home(home)
    per_season = 4 * 3 + 3 + 3  # the training stretch (4 x frames), then val and test
    for season in SEASONS:  # every season written, each with its own frames
        table = pq.read_table(layout.partition_table("nordland", season))
        assert table.num_rows == per_season and set(table.column("traversal").to_pylist()) == {season}, season
        assert len(list(layout.frames("nordland", season).glob("*.tif"))) == per_season, season
        assert f"+ nordland_frames[{season}] in " in result.stdout
    assert pq.read_metadata(layout.frame_table("nordland")).num_rows == 4 * per_season
    os.environ["DAGSTER_HOME"] = str(home / ".dagster_home")
    try:
        with DagsterInstance.get() as instance:
            runs = instance.get_runs(RunsFilter(job_name="nordland_frames_dask_job"))
            assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(SEASONS)
            assert all(r.is_success for r in runs)
            records = sorted((instance.get_run_record_by_id(r.run_id) for r in runs), key=lambda r: r.start_time)
            assert any(b.start_time < a.end_time for a, b in zip(records, records[1:])), "the runs did not overlap"
            for r in runs:  # each run's own step ran, in a Dask worker, not in the runner's process
                events = [e for e in instance.all_logs(r.run_id) if e.dagster_event]
                starts = [e for e in events if e.dagster_event.event_type == DagsterEventType.STEP_START]
                run_start = next(e for e in events if e.dagster_event.event_type == DagsterEventType.RUN_START)
                assert len(starts) == 1 and starts[0].dagster_event.pid != run_start.dagster_event.pid, r.tags["dagster/partition"]
    finally:
        del os.environ["DAGSTER_HOME"]

"""The heavy partitioned stage runs on a Dask cluster (worker processes on 127.0.0.1) through the
dagster-dask executor, and gives byte-identical outputs to the in-process run."""
import hashlib

import pytest
from distributed import LocalCluster

from pipelines.run import dask_task, materialize_task
from seqvpr.layout import Layout
from seqvpr.synthetic import generate

PARTITIONS = ["singapore-onenorth", "singapore-queenstown"]
TINY = {"scenes_per_location": 1, "samples_per_scene": 4, "width": 96, "height": 64}


def _digest(home):
    """Hash of every normalised frame and partition table below a home."""
    data = Layout.from_home(home).data_root
    files = sorted(p for sub in ("frames", "tables") for p in (data / sub).rglob("*") if p.is_file())
    return {str(p.relative_to(data)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture()
def homes(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    homes = []
    for name in ("local", "dask"):
        home = tmp_path / name
        generate("nuscenes", Layout.from_home(home).raw("nuscenes"), seed=5, truth_root=tmp_path / "truth", **TINY)
        homes.append(str(home))
    return homes


def test_partitions_on_local_dask_cluster_match_in_process_run(homes):
    local_home, dask_home = homes
    for partition in PARTITIONS:
        materialize_task("nuscenes_frames", partition, local_home, {})
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as cluster:
        for partition in PARTITIONS:
            transitions = cluster.scheduler.transition_counter
            dask_task("nuscenes_frames", partition, dask_home, {}, cluster.scheduler_address)
            assert cluster.scheduler.transition_counter > transitions, "the step did not go through the cluster"
    local, remote = _digest(local_home), _digest(dask_home)
    assert any(name.startswith("tables/nuscenes/") for name in remote)
    assert sum(name.endswith(".png") for name in remote) >= 8
    assert remote == local

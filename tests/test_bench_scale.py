"""The real-size options of the synthetic worlds and benchmarks/bench_scale.py at a tiny size."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from scipy.io import loadmat

from seqvpr.datasets import nordland as nordland_loader
from seqvpr.geometry import cumulative_distance
from seqvpr.synthetic import generate
from seqvpr.synthetic import robotcar as synthetic_robotcar
from seqvpr.synthetic.nordland import REAL_SEASON_FRAMES, whole_line

REPO = Path(__file__).resolve().parents[1]
CLEAN_NAMES = REPO / "seqvpr" / "datasets" / "data" / "nordland_clean_imageNames.txt"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_scale", REPO / "benchmarks" / "bench_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nordland_whole_line_frames_filter_through_the_clean_list(tmp_path):
    summary = generate("nordland", tmp_path / "raw", truth_root=tmp_path / "truth", season_frames=260,
                       width=16, height=16, seasons="winter")
    files = sorted(p.name for p in (tmp_path / "raw" / "winter").iterdir())
    assert files == [f"images-{n:05d}.png" for n in range(260)] and summary["frames_per_season"] == 260
    clean = set(CLEAN_NAMES.read_text().split())  # seqNet's list, read here without the loader
    rows, skipped, _notes = nordland_loader.season_rows(tmp_path / "raw", "winter", tmp_path / "frames", tmp_path)
    assert len(rows) == len(clean & set(files)) and skipped["not_in_clean_list"] == 260 - len(rows)
    assert 0 < len(rows) < 260  # the clean list starts at frame 202


def test_whole_line_is_continuous_at_real_length():
    xy = whole_line(REAL_SEASON_FRAMES)
    steps = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    assert xy.shape == (REAL_SEASON_FRAMES, 2) and np.isfinite(xy).all()
    assert steps.max() < 100 and 500_000 < steps.sum() < 1_200_000  # metres: the line is about 730 km long
    with pytest.raises(ValueError, match="season_frames must be in"):
        generate("nordland", "/nonexistent/raw", season_frames=REAL_SEASON_FRAMES + 1)


def test_robotcar_long_route_and_chosen_runs(tmp_path):
    route = synthetic_robotcar._stretch(12_000)
    assert 12_000 <= cumulative_distance(route)[-1] < 13_300  # up to the first point past 12 km
    assert np.linalg.norm(np.diff(route, axis=0), axis=1).max() < 1200  # copies joined by a straight road
    small = dict(route_length_m=30, camera_hz=2, width=32, height=24)
    generate("robotcar", tmp_path / "one", truth_root=tmp_path / "t1", runs="2014-12-16-18-44-24", **small)
    generate("robotcar", tmp_path / "all", truth_root=tmp_path / "t2", **small)
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["2014-12-16-18-44-24"]
    run = "2014-12-16-18-44-24/stereo.timestamps"
    assert (tmp_path / "one" / run).read_text() == (tmp_path / "all" / run).read_text()  # independent of the others
    with pytest.raises(ValueError, match="runs must name"):
        generate("robotcar", tmp_path / "bad", runs="2020-01-01-00-00-00", **small)


def test_nuscenes_trainval_version_loads_in_the_devkit(tmp_path):
    from nuscenes.nuscenes import NuScenes

    generate("nuscenes", tmp_path / "raw", truth_root=tmp_path / "truth", scenes_per_location=1, samples_per_scene=3,
             sweeps_per_sample=0, width=32, height=24, version="v1.0-trainval")
    nusc = NuScenes(version="v1.0-trainval", dataroot=str(tmp_path / "raw"), verbose=False)
    assert len(nusc.scene) == 3 and len(nusc.sample) == 9


def test_bench_scale_runs_every_stage_at_a_tiny_size(tmp_path, capsys):
    bench = _bench()
    results = bench.main(["--work", str(tmp_path), "--fractions", "0.002", "--datasets", "robotcar", "--pixels", "32x24",
                          "--in-process", "--model", "seqnet"])
    assert [r["stage"] for r in results] == list(bench.STAGES)
    assert all(r["frames"] > 0 and r["seconds"] >= 0 and "failed" not in r for r in results)
    home = tmp_path / "f1_500"
    split = pq.read_table(home / "data" / "splits" / "oxford_easy.parquet").to_pandas()
    test_rows = int((split["split"] == "test").sum())
    manifest = json.loads((home / "shards" / "oxford_easy" / "test" / "manifest.json").read_text())
    assert manifest["samples"] == test_rows == {r["stage"]: r["frames"] for r in results}["shards"]
    assert manifest["encoder"]["weights"] == "null-model-0"  # FrameEmbedder's null-model mode, its own namespace
    assert (home / "data" / "embeddings" / manifest["encoder"]["model_id"]).is_dir()
    frame = Image.open(home / "data" / split[split["split"] == "test"]["image_path"].iloc[0])
    assert frame.size == (384, 384)  # the embedded dataset's frames are normalised at the real size
    struct = loadmat(next((home / "struct_files" / "oxford_easy").glob("*test*.db")))["dbStruct"][0, 0]
    assert int(struct["numImages"][0, 0]) + int(struct["numQueries"][0, 0]) == test_rows
    table = capsys.readouterr().out
    assert table.count("| robotcar |") == len(bench.STAGES)

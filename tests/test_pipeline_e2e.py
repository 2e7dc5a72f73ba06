"""The whole pipeline on a tiny synthetic world through the headless runner: struct files and
shards load with independent readers, a re-run is byte-identical, and a new frame separation only
rebuilds downstream products (no new embeddings for frames already embedded)."""
import hashlib
import json

import pytest
import yaml
from scipy.io import loadmat

from pipelines.run import run
from seqvpr.layout import Layout
from seqvpr.splits import BENCHMARKS
from seqvpr.structfile import struct_names

TINY = {
    "ops": {
        "robotcar_raw": {"config": {"scale": {"frames_per_traversal": 0, "route_length_m": 40, "camera_hz": 2, "width": 64, "height": 48}}},
        "nuscenes_raw": {"config": {"scale": {"scenes_per_location": 2, "samples_per_scene": 5, "width": 64, "height": 48}}},
        "nordland_raw": {"config": {"scale": {"frames": 10, "width": 64, "height": 48}}},
    },
    "resources": {"encoder": {"config": {"num_layers": 1, "batch_size": 16}}},
}


def _digests(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    import os

    os.environ["DAGSTER_HOME"] = str(home / ".dagster_home")
    (home / ".dagster_home").mkdir()
    run(str(home), workers=2, run_config=TINY)
    return home


def test_struct_files_and_shards_of_every_benchmark(home):
    layout = Layout.from_home(home)
    for benchmark in ("nordland", "oxford_easy", "oxford_hard", "oxford_seqnet", "nuscenes"):
        test_file = layout.struct_files(benchmark) / struct_names(BENCHMARKS[benchmark], "test")[0]
        assert test_file.is_file(), benchmark
        struct = loadmat(test_file)["dbStruct"][0, 0]
        manifest = json.loads((layout.shards(benchmark, "test") / "manifest.json").read_text())
        assert manifest["samples"] == int(struct["numImages"][0, 0]) + int(struct["numQueries"][0, 0])


def test_rerun_is_byte_identical(home):
    layout = Layout.from_home(home)
    before = {**_digests(layout.struct_root), **_digests(layout.shard_root)}
    run(str(home), workers=2, run_config=TINY)
    assert {**_digests(layout.struct_root), **_digests(layout.shard_root)} == before


def test_new_frame_separation_embeds_nothing_new(home):
    layout = Layout.from_home(home)
    cache = [p for p in layout.data_root.joinpath("embeddings").rglob("*.npy")]
    frames_before = {p: p.stat().st_mtime_ns for p in (layout.data_root / "frames").rglob("*.png")}
    old_struct = _digests(layout.struct_files("oxford_hard"))
    config = {**TINY, "ops": {**TINY["ops"], "oxford_hard_split": {"config": {"frame_separation": 5.0}}}}
    run(str(home), workers=2, run_config=yaml.safe_load(yaml.safe_dump(config)), rebuild_from=["oxford_hard_split"])
    assert {p: p.stat().st_mtime_ns for p in (layout.data_root / "frames").rglob("*.png")} == frames_before  # not rewritten
    assert sorted(layout.data_root.joinpath("embeddings").rglob("*.npy")) == sorted(cache)
    assert _digests(layout.struct_files("oxford_hard")) != old_struct

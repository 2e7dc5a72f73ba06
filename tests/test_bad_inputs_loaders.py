"""Loader-level bad inputs (issue 14): each gives a DataError naming the file, a counted skip, or
loads as it should; never a bare traceback or a silent drop."""
import json
import shutil

import numpy as np
import pytest

from seqvpr.datasets import nordland, nuscenes, robotcar
from seqvpr.errors import DataError
from seqvpr.synthetic import generate

RUN, OTHER_RUN = "2015-03-17-11-08-44", "2014-12-16-09-14-09"


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    base = tmp_path_factory.mktemp("worlds")
    generate("robotcar", base / "robotcar", seed=7, truth_root=base / "truth_rc", frames_per_traversal=6, width=32, height=24)
    generate("nuscenes", base / "nuscenes", seed=7, truth_root=base / "truth_ns", scenes_per_location=2,
             samples_per_scene=3, sweeps_per_sample=0, width=32, height=24)
    generate("nordland", base / "nordland", seed=7, truth_root=base / "truth_nl", frames=2, width=32, height=24,
             seasons="summer")
    return base


def _copy(worlds, dataset, tmp_path):
    shutil.copytree(worlds / dataset, tmp_path / dataset)
    if dataset == "robotcar":
        shutil.copytree(worlds / "robotcar-dataset-sdk", tmp_path / "robotcar-dataset-sdk")
    return tmp_path / dataset


def test_ins_csv_of_another_run_is_an_error_naming_it(worlds, tmp_path):
    raw = _copy(worlds, "robotcar", tmp_path)
    ins = raw / RUN / "gps" / "ins.csv"
    shutil.copy(raw / OTHER_RUN / "gps" / "ins.csv", ins)
    with pytest.raises(DataError, match=rf"^{ins}: INS covers \d+\.\.\d+ but run {RUN}'s images are \d+\.\.\d+: "
                                        r"an ins.csv of another run\?"):
        robotcar.normalise_partition(raw, RUN, tmp_path / "out", tmp_path, size=16)


def test_lut_full_of_nan_is_an_error_not_black_frames(worlds, tmp_path):
    raw = _copy(worlds, "robotcar", tmp_path)
    lut = tmp_path / "robotcar-dataset-sdk" / "models" / "stereo_wide_left_distortion_lut.bin"
    np.full(2 * 32 * 24, np.nan).tofile(lut)
    with pytest.raises(DataError, match=rf"^{lut}: 1536 of its 1536 values are NaN or infinite"):
        robotcar.normalise_partition(raw, RUN, tmp_path / "out", tmp_path, size=16)


def test_ins_csv_with_a_utf8_bom_reads_like_without(worlds, tmp_path):
    raw = _copy(worlds, "robotcar", tmp_path)
    plain = robotcar.normalise_partition(raw, RUN, tmp_path / "plain", tmp_path, size=16).table
    ins = raw / RUN / "gps" / "ins.csv"
    ins.write_bytes(b"\xef\xbb\xbf" + ins.read_bytes())
    (raw / RUN / "stereo.timestamps").write_bytes(b"\xef\xbb\xbf" + (raw / RUN / "stereo.timestamps").read_bytes())
    bom = robotcar.normalise_partition(raw, RUN, tmp_path / "plain", tmp_path, size=16).table
    assert bom.num_rows == 6 and bom.drop(["image_path"]).equals(plain.drop(["image_path"]))


def test_upper_case_png_frame_is_loaded(worlds, tmp_path):
    raw = _copy(worlds, "nordland", tmp_path)
    (raw / "summer" / "images-00203.png").rename(raw / "summer" / "images-00203.PNG")
    result = nordland.normalise_partition(raw, "summer", tmp_path / "out", tmp_path, size=16)
    assert result.dropped == {} and result.table.num_rows == 4 * 2 + 2 * 2  # training stretch 4 x 2 frames, val and test 2 each
    assert "summer/images-00203.PNG" in result.table.column("source_file").to_pylist()


def _scene_location(raw, scene):
    tables = {name: json.loads((raw / "v1.0-mini" / f"{name}.json").read_text()) for name in ("log",)}
    return next(log["location"] for log in tables["log"] if log["token"] == scene["log_token"])


def test_nuscenes_scene_with_zero_key_frames_is_counted(worlds, tmp_path):
    raw = _copy(worlds, "nuscenes", tmp_path)
    scenes = json.loads((raw / "v1.0-mini" / "scene.json").read_text())
    empty = dict(scenes[0], token="f" * 32, name="scene-0999", nbr_samples=0, first_sample_token="", last_sample_token="")
    (raw / "v1.0-mini" / "scene.json").write_text(json.dumps(scenes + [empty]))
    location = _scene_location(raw, scenes[0])
    result = nuscenes.normalise_partition(raw, location, tmp_path / "out", tmp_path, size=16)
    assert result.dropped == {"scenes_without_key_frames": 1} and result.table.num_rows == 2 * 3


def test_nuscenes_scenes_of_blobs_not_downloaded_are_counted(worlds, tmp_path):
    raw = _copy(worlds, "nuscenes", tmp_path)
    scenes = json.loads((raw / "v1.0-mini" / "scene.json").read_text())
    location = _scene_location(raw, scenes[0])
    sample_data = json.loads((raw / "v1.0-mini" / "sample_data.json").read_text())
    samples = {s["token"]: s for s in json.loads((raw / "v1.0-mini" / "sample.json").read_text())}
    for record in sample_data:
        if samples[record["sample_token"]]["scene_token"] == scenes[0]["token"]:
            (raw / record["filename"]).unlink()
    result = nuscenes.normalise_partition(raw, location, tmp_path / "out", tmp_path, size=16)
    assert result.dropped == {"key_frames_not_downloaded": 3, "scenes_not_downloaded": 1}
    assert set(result.table.column("traversal").to_pylist()) == {scenes[1]["name"]}

"""Bad inputs of the third reliability round (issue 21): each case built on a tiny synthetic world
gives a DataError naming the file or setting, a counted skip or a note, and leaves what was written
intact. The ids name the case of the round's probe (N.., R..)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seqvpr.datasets import nordland, nuscenes, robotcar
from seqvpr.errors import DataError
from seqvpr.synthetic import generate

RUN = "2015-03-17-11-08-44"


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("worlds3")
    generate("robotcar", base / "robotcar", seed=5, truth_root=base / "rc_truth", frames_per_traversal=6, width=32,
             height=24, sdk_root=base / "robotcar")  # SDK models/ beside the runs
    generate("nordland", base / "nordland", seed=5, truth_root=base / "nl_truth", frames=7, width=64, height=48)
    generate("nuscenes", base / "nuscenes", seed=5, truth_root=base / "ns_truth", scenes_per_location=1,
             samples_per_scene=3, sweeps_per_sample=1, width=96, height=64)
    return base


def _copy(worlds: Path, dataset: str, tmp_path: Path) -> Path:
    shutil.copytree(worlds / dataset, tmp_path / dataset, symlinks=True)
    return tmp_path / dataset


def _robotcar(raw: Path, tmp_path: Path, run: str = RUN, **kw):
    return robotcar.normalise_partition(raw, run, tmp_path / "frames" / run, tmp_path, size=16, **kw)


# --------------------------------------------------------------------------- RobotCar INS


def test_n05_rows_without_an_ins_solution_are_never_used(worlds, tmp_path):
    raw = _copy(worlds, "robotcar", tmp_path)
    truth = pd.read_csv(worlds / "rc_truth" / "camera_poses.csv")
    path = raw / RUN / "gps" / "ins.csv"
    ins = pd.read_csv(path, dtype=str)
    t0 = int(ins.timestamp[0])
    pre = ins.iloc[:3].copy()
    pre["timestamp"] = [str(t0 - 3_000_000 + i * 1_000_000) for i in range(3)]
    pre["ins_status"] = "INS_INACTIVE"
    pre[["northing", "easting", "yaw", "latitude", "longitude"]] = "0"
    pd.concat([pre, ins.iloc[1:]]).to_csv(path, index=False)
    result = _robotcar(raw, tmp_path)
    table = result.table.to_pandas().merge(truth[truth.run == RUN], left_on="timestamp_us", right_on="timestamp")
    assert sum(result.dropped.values()) + result.table.num_rows == 6
    assert result.dropped.get("ins_status_not_solution", 0) + result.dropped.get("outside_ins_range", 0) >= 1
    assert len(table) == result.table.num_rows
    assert np.hypot(table.easting_x - table.easting_y, table.northing_x - table.northing_y).max() < 5.0


def test_n05_a_file_without_any_solution_row_is_an_error_naming_it(worlds, tmp_path):
    raw = _copy(worlds, "robotcar", tmp_path)
    path = raw / RUN / "gps" / "ins.csv"
    ins = pd.read_csv(path, dtype=str)
    ins["ins_status"] = "INS_ALIGNING"
    ins.to_csv(path, index=False)
    with pytest.raises(DataError, match=rf"^{path}: no row holds an INS solution \(ins_status \['INS_ALIGNING'\]"):
        _robotcar(raw, tmp_path)


def _l_shaped_run(worlds: Path, tmp_path: Path, hole_s: float) -> tuple[Path, int]:
    """R4: 40 frames at 2 Hz, 50 Hz INS at 5 m/s, 50 m east then north, a hole of ``hole_s`` around the corner."""
    raw = _copy(worlds, "robotcar", tmp_path)
    run = raw / RUN
    img = next((run / "stereo" / "left").iterdir()).read_bytes()
    shutil.rmtree(run / "stereo" / "left")
    (run / "stereo" / "left").mkdir()
    t0 = int((run / "stereo.timestamps").read_text().split()[0])
    stamps = t0 + np.arange(40) * 500_000
    for t in stamps:
        (run / "stereo" / "left" / f"{t}.png").write_bytes(img)
    (run / "stereo.timestamps").write_text("".join(f"{t} 1\n" for t in stamps))
    it = t0 + np.arange(-5, 1020) * 20_000
    s = (it - t0) / 1e6 * 5
    ins = pd.read_csv(run / "gps" / "ins.csv").iloc[[0] * len(it)].reset_index(drop=True)
    ins["timestamp"], ins["easting"] = it, 6e5 + np.minimum(s, 50)
    ins["northing"], ins["yaw"] = 5.7e6 + np.maximum(s - 50, 0), np.where(s < 50, np.pi / 2, 0)
    keep = (it <= t0 + (10 - hole_s / 2) * 1e6) | (it >= t0 + (10 + hole_s / 2) * 1e6)
    ins[keep].to_csv(run / "gps" / "ins.csv", index=False)
    return raw, t0


def test_r4_frames_across_a_long_ins_hole_are_dropped_and_counted(worlds, tmp_path):
    raw, t0 = _l_shaped_run(worlds, tmp_path, hole_s=10)
    result = _robotcar(raw, tmp_path)
    table = result.table.to_pandas()
    s = (table.timestamp_us - t0) / 1e6 * 5
    error = np.hypot(table.easting - (6e5 + np.minimum(s, 50)), table.northing - (5.7e6 + np.maximum(s - 50, 0)))
    # frames at 5.0 s .. 14.5 s: 5.0 and 15.0 s sit on INS rows; 5.5 .. 14.5 s (19 frames) lie in the hole
    assert result.dropped == {"ins_gap": 19} and len(table) == 21 and error.max() < 0.01


def test_r4_the_gap_setting_decides_and_short_holes_are_bridged(worlds, tmp_path):
    raw, _ = _l_shaped_run(worlds, tmp_path, hole_s=0.5)
    assert _robotcar(raw, tmp_path).dropped == {}
    assert _robotcar(raw, tmp_path, max_ins_gap_s=0.1).dropped == {"ins_gap": 1}


def test_r2_ins_rows_out_of_order_name_the_line_and_both_timestamps(worlds, tmp_path):
    raw = _copy(worlds, "robotcar", tmp_path)
    path = raw / RUN / "gps" / "ins.csv"
    lines = path.read_text().splitlines()
    lines[20], lines[21] = lines[21], lines[20]
    path.write_text("\n".join(lines) + "\n")
    first, second = lines[20].split(",")[0], lines[21].split(",")[0]
    with pytest.raises(DataError, match=rf"^{path}: timestamps not strictly increasing: line 22 has {second} after "
                                        rf"{first} on line 21"):
        _robotcar(raw, tmp_path)


@pytest.mark.parametrize("stray", ["._{ts}.png", "{ts} (1).png"])
def test_n08_stray_files_beside_the_images_are_ignored_with_a_note(worlds, tmp_path, stray):
    raw = _copy(worlds, "robotcar", tmp_path)
    left = raw / RUN / "stereo" / "left"
    first = sorted(left.iterdir())[0]
    name = stray.format(ts=first.stem)
    shutil.copy(first, left / name)
    result = _robotcar(raw, tmp_path)
    assert result.table.num_rows + sum(result.dropped.values()) == 6
    assert result.notes == [f"{left}: ignored 1 file(s) that are not <timestamp>.png frames: {name}"]


def test_n54_a_run_not_in_a_partial_copy_is_an_empty_partition_with_a_note(worlds, tmp_path):
    raw = tmp_path / "rc2"
    raw.mkdir()
    for name in ("2014-12-16-09-14-09", "2014-12-17-18-18-43", "models"):
        shutil.copytree(worlds / "robotcar" / name, raw / name)
    result = _robotcar(raw, tmp_path, run="2014-11-18-13-20-12")
    assert result.table.num_rows == 0 and result.dropped == {}
    assert result.notes == [f"RobotCar run 2014-11-18-13-20-12 is not in the raw data {raw} (runs there: "
                            "2014-12-16-09-14-09, 2014-12-17-18-18-43); get 2014-11-18-13-20-12_stereo_left_NN.tar "
                            "and 2014-11-18-13-20-12_gps.tar from robotcar-dataset.robots.ox.ac.uk/datasets/2014-11-18-13-20-12/"]
    assert _robotcar(raw, tmp_path, run="2014-12-16-09-14-09").table.num_rows > 0


# --------------------------------------------------------------------------- settings, on the Config classes


def _refusal(cls, **values) -> str:
    """The message the Config class gives for ``values`` (what validate.py and the launchpad show)."""
    import pydantic

    with pytest.raises(pydantic.ValidationError) as err:
        cls(**values)
    return str(err.value)


def test_settings_are_checked_on_the_config_classes(tmp_path):
    from assets.frames import NormaliseConfig
    from assets.sources import SourceConfig
    from assets.splits import split_config_class
    from assets.training import EvaluationConfig, TrainingConfig
    from pipelines.resources import FrameEncoder

    archive = tmp_path / "v1.0-mini.tgz"
    archive.write_bytes(b"x")
    cases = [
        # N37: a typo in a run name, with the catalog's run as the hint
        (split_config_class("oxford_hard"), {"train_db": ["2014-12-16-09-14-9"]},
         "train_db: unknown name '2014-12-16-09-14-9' (did you mean '2014-12-16-09-14-09'?)"),
        (split_config_class("nuscenes"), {"test_query": ["nite"]}, "test_query: unknown name 'nite' (did you mean 'night'?)"),
        # N38: one season as database and query
        (split_config_class("nordland"), {"test_db": ["spring"], "test_query": ["spring"]},
         "test_db and test_query share ['spring']: a split needs different database and query traversals"),
        # N34: radii beyond any place
        (split_config_class("oxford_seqnet"), {"radius": 1e6, "train_radius": 1e6}, "Input should be less than or equal to 1000"),
        # N40: a frame size OpenCV cannot resize to
        (NormaliseConfig, {"size": 0}, "size\n  Input should be greater than or equal to 8"),
        (NormaliseConfig, {"camera": "center"}, "unknown stereo camera 'center' (did you mean 'centre'?)"),
        (NormaliseConfig, {"max_ins_gap_s": 0}, "max_ins_gap_s\n  Input should be greater than 0"),
        # N22: the archive itself as the local folder
        (SourceConfig, {"source": "local", "path": str(archive)},
         f"path {archive} is a file; point path at the folder holding it (its archives are extracted from there)"),
        (SourceConfig, {"source": "local"}, "source local needs path"),
        (EvaluationConfig, {"models": ["seqnett"]}, "unknown model 'seqnett' (did you mean 'seqnet'?)"),
        (EvaluationConfig, {"lengths": [0]}, "Input should be greater than or equal to 1"),
        (FrameEncoder, {"freeze_te": 8}, "freeze_te must be below num_layers (8)"),
        (FrameEncoder, {"device": "gpu"}, "unknown device 'gpu' (did you mean 'cpu'?)"),
        (FrameEncoder, {"num_layers": 20}, "num_layers\n  Input should be less than or equal to 14"),
        (SourceConfig, {"seed": -1}, "seed\n  Input should be greater than or equal to 0"),
        (TrainingConfig, {"seed": -1}, "seed\n  Input should be greater than or equal to 0"),
    ]
    for cls, values, expected in cases:
        assert expected in _refusal(cls, **values), (cls, values)


def test_n42_a_home_relative_path_is_expanded_once_for_check_work_and_stamp(tmp_path, monkeypatch):
    from assets.sources import SourceConfig
    from pipelines.resources import FrameEncoder

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "datasets" / "nordland").mkdir(parents=True)
    assert SourceConfig(source="local", path="~/datasets/nordland").path == str(tmp_path / "datasets" / "nordland")
    assert FrameEncoder(checkpoint="~/cct.pth").checkpoint == str(tmp_path / "cct.pth")


# --------------------------------------------------------------------------- seqvpr synth


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_n65_synth_never_replaces_folders_it_did_not_write(tmp_path, capsys):
    from seqvpr.synthetic.__main__ import main

    out = tmp_path / "datasets"
    (out / "nordland" / "summer").mkdir(parents=True)
    (out / "nordland" / "README_mine.txt").write_text("mine")
    (out / "robotcar-dataset-sdk" / "models").mkdir(parents=True)
    (out / "robotcar-dataset-sdk" / "models" / "my_model.txt").write_text("m")
    before = _tree(out)
    assert main(["--out", str(out), "--datasets", "nordland", "--scale", "frames=2", "width=32", "height=24"]) == 2
    assert f"error: {out / 'nordland'}: exists but was not written by this pipeline" in capsys.readouterr().err
    assert main(["--out", str(out), "--datasets", "robotcar", "--scale", "frames_per_traversal=2", "width=32", "height=24"]) == 2
    assert f"error: {out / 'robotcar-dataset-sdk' / 'models'}: exists but was not written" in capsys.readouterr().err
    assert main(["--out", str(out), "--datasets", "nuscenes", "--scale", "frames=2"]) == 2  # refused before any write
    assert "nuscenes scale: unknown parameter 'frames'" in capsys.readouterr().err
    assert _tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["datasets"]


def test_n65_synth_rewrites_its_own_world_but_not_one_changed_since(tmp_path, capsys):
    from seqvpr.synthetic.__main__ import main

    out, args = tmp_path / "raw", ["--datasets", "nordland", "--scale", "frames=2", "width=32", "height=24", "seasons=summer"]
    assert main(["--out", str(out), *args]) == 0 and (out / "truth" / "nordland" / "camera_poses.csv").is_file()
    assert main(["--out", str(out), *args]) == 0
    assert "nordland: already generated" in capsys.readouterr().out
    assert main(["--out", str(out), "--seed", "1", *args]) == 0  # its own world: replaced
    (out / "nordland" / "summer" / "notes.txt").write_text("mine")
    assert main(["--out", str(out), "--seed", "2", *args]) == 2
    assert (out / "nordland" / "summer" / "notes.txt").read_text() == "mine"
    assert "was added or changed after the pipeline wrote" in capsys.readouterr().err


# --------------------------------------------------------------------------- Nordland and nuScenes folders


def _nordland(raw: Path, tmp_path: Path, season: str):
    return nordland.normalise_partition(raw, season, tmp_path / "frames" / season, tmp_path, size=16)


def test_n10_capitalised_season_folders_are_named_with_the_fix(worlds, tmp_path):
    from seqvpr.acquire import ingest_local

    raw = _copy(worlds, "nordland", tmp_path)
    for season in ("spring", "summer", "fall", "winter"):
        (raw / season).rename(raw / season.capitalize())
    with pytest.raises(DataError, match=rf"^{raw}: neither a nordland folder layout nor a folder of nordland archives; "
                                        r"it holds Fall/, Spring/, Summer/, Winter/ \(season folders are named spring, "
                                        r"summer, fall, winter, in lower case: rename Fall/, Spring/, Summer/, Winter/\)"):
        ingest_local(raw, tmp_path / "dest", "nordland")
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("season, folder", [("winter", "winter_images"), ("fall", "autumn")])
def test_n11_n12_a_season_folder_under_another_name_is_named_in_the_note(worlds, tmp_path, season, folder):
    raw = _copy(worlds, "nordland", tmp_path)
    (raw / season).rename(raw / folder)
    result = _nordland(raw, tmp_path, season)
    assert result.table.num_rows == 0
    assert result.notes[0].startswith(f"Nordland season {season!r} is not in the raw data; {raw} has {folder}/: if that "
                                      f"is the season, rename it to {season}/ (season folders are named spring, summer, "
                                      "fall, winter); get it from ")


def test_n14_frames_in_jpeg_are_read_and_other_files_noted(worlds, tmp_path):
    import cv2

    raw = _copy(worlds, "nordland", tmp_path)
    pngs = sorted((raw / "winter").glob("*.png"))
    for png in pngs[:3]:
        cv2.imwrite(str(png.with_suffix(".jpg")), cv2.imread(str(png)))
        png.unlink()
    (raw / "winter" / "Thumbs.db").write_bytes(b"x")
    result = _nordland(raw, tmp_path, "winter")
    assert result.table.num_rows + sum(result.dropped.values()) == len(pngs)
    assert sorted(result.table.column("source_file").to_pylist())[:3] == [f"winter/{p.stem}.jpg" for p in pngs[:3]]
    assert result.notes == [f"{raw / 'winter'}: ignored 1 file(s) that are not images-NNNNN.png frames: Thumbs.db"]


def test_n17_extracted_season_beside_a_packed_one_gets_both(worlds, tmp_path):
    import tarfile

    from seqvpr.acquire import ingest_local

    src = tmp_path / "src"
    shutil.copytree(worlds / "nordland" / "summer", src / "summer")
    with tarfile.open(src / "winter.tar.gz", "w:gz") as tar:  # bare frames, as the Adelaide share's winter.tar.gz
        for frame in sorted((worlds / "nordland" / "winter").iterdir()):
            tar.add(frame, arcname=frame.name)
    dest = tmp_path / "raw" / "nordland"
    report = ingest_local(src, dest, "nordland")
    assert report.extracted == ["winter.tar.gz"] and report.linked == ["summer"]
    assert nordland.discover_partitions(dest) == ["summer", "winter"]
    assert sorted(p.name for p in (dest / "winter").iterdir()) == sorted(p.name for p in (worlds / "nordland" / "winter").iterdir())
    assert ingest_local(src, dest, "nordland").skipped == ["winter.tar.gz"]  # a rerun extracts nothing again


def test_n17_an_archive_of_a_part_already_extracted_is_noted_not_extracted(worlds, tmp_path):
    import tarfile

    from seqvpr.acquire import ingest_local

    src = _copy(worlds, "nordland", tmp_path)
    with tarfile.open(src / "summer.tar.gz", "w:gz") as tar:
        tar.add(src / "summer", arcname="summer")
    report = ingest_local(src, tmp_path / "dest", "nordland")
    assert report.mode == "linked" and report.notes == [f"{src / 'summer.tar.gz'}: not extracted, the folder is used "
                                                        "as it is and already holds summer/"]


def test_n19_a_nuscenes_without_singapore_scenes_says_where_they_are(worlds, tmp_path):
    import json

    raw = _copy(worlds, "nuscenes", tmp_path)
    path = raw / "v1.0-mini" / "log.json"
    logs = json.loads(path.read_text())
    for log in logs:
        log["location"] = "boston-seaport"
    path.write_text(json.dumps(logs))
    result = nuscenes.normalise_partition(raw, "singapore-onenorth", tmp_path / "f", tmp_path, size=16)
    assert result.table.num_rows == 0 and result.dropped == {}
    assert result.notes == ["no scene of v1.0-mini was recorded in singapore-onenorth (log.json locations of its "
                            f"scenes: {len(logs)} in boston-seaport); the nuScenes benchmark uses the Singapore maps "
                            "singapore-onenorth, singapore-queenstown, singapore-hollandvillage: v1.0-trainval has "
                            "scenes in all three"]


def test_n21_n22_nuscenes_path_at_the_table_folder_or_the_archive_says_which_folder_to_give(worlds, tmp_path):
    import tarfile

    from seqvpr.acquire import ingest_local

    raw = _copy(worlds, "nuscenes", tmp_path)
    with pytest.raises(DataError, match=rf"^{raw / 'v1.0-mini'}: .* it is the nuScenes table folder v1.0-mini/ itself: "
                                        rf"point path at its parent {raw}, the dataroot"):
        ingest_local(raw / "v1.0-mini", tmp_path / "dest", "nuscenes")
    archive = tmp_path / "v1.0-mini.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(raw / "v1.0-mini", arcname="v1.0-mini")
    with pytest.raises(DataError, match=rf"^{archive}: is a file, not a folder: point path at the folder holding it "
                                        r"\(its archives are extracted from there\)"):
        ingest_local(archive, tmp_path / "dest", "nuscenes")
    assert not (tmp_path / "dest").exists()


def test_r13_exif_orientation_is_ignored_by_every_loader(tmp_path):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the stored pixels are 32 wide, 18 high
    pixels = np.zeros((18, 32, 3), np.uint8)
    pixels[:, :4] = 255  # a left edge that a rotation would move
    Image.fromarray(pixels).save(tmp_path / "x.png", exif=exif.tobytes())
    Image.fromarray(pixels).save(tmp_path / "x.jpg", exif=exif.tobytes(), quality=100)
    png = nordland._read_image(tmp_path / "x.png")
    jpg = nuscenes._read_image(tmp_path / "x.jpg", {"token": "t", "width": 32, "height": 18}, 32)
    assert png.shape == jpg.shape == (18, 32, 3)
    assert png[:, :4].min() == 255 and jpg[:, :3].min() > 200 and jpg[:, 8:].max() < 50


def test_n60_n61_a_full_disk_names_the_file_and_keeps_the_old_frames(worlds, tmp_path):
    """RLIMIT_FSIZE makes every write past 2 kB fail with EFBIG, as a full or quota-bound disk does."""
    import subprocess
    import sys

    raw = _copy(worlds, "nordland", tmp_path)
    _nordland(raw, tmp_path, "spring")
    frames = tmp_path / "frames" / "spring"
    before = {p.name: p.read_bytes() for p in frames.iterdir()}
    script = ("import resource, sys; from seqvpr.datasets import nordland; from seqvpr.errors import DataError\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))\n"
              f"try: nordland.normalise_partition({str(raw)!r}, 'spring', {str(frames)!r}, {str(tmp_path)!r}, size=64)\n"
              "except DataError as err: print(err); sys.exit(3)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert done.stdout.startswith(f"{frames}/spring_images-") and "cannot write: File too large (errno 27); " \
        "the previous output is kept" in done.stdout
    assert {p.name: p.read_bytes() for p in frames.iterdir()} == before  # nothing half-written, no temporary left


def test_r17_a_validation_split_without_positives_is_refused_before_training():
    from seqvpr.train import SplitData, TrainConfig, train

    rng = np.random.default_rng(0)

    def split(positives):
        tokens = lambda n: rng.normal(size=(n, 4, 384)).astype(np.float16)  # noqa: E731
        bounds = np.tile([0, 20], (20, 1))
        return SplitData(tokens(20), tokens(20), bounds, bounds, positives, positives, np.tile(np.arange(20), (20, 1)))

    epochs = []
    with pytest.raises(ValueError, match=r"^the validation split has no query with a positive \(20 queries\)"):
        train(TrainConfig(model="seqnet", epochs=3, queries_per_epoch=8), split([np.array([i]) for i in range(20)]),
              split([np.array([], int)] * 20), log=epochs.append)
    assert epochs == []  # refused before any work


def test_n59_a_home_that_is_a_file_is_named_without_a_traceback(tmp_path):
    import os
    import subprocess
    import sys

    home = tmp_path / "afile"
    home.write_text("x")
    done = subprocess.run([sys.executable, "-m", "seqvpr.cli", "run", "--home", str(home), "--select", "nordland_raw"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "DAGSTER_HOME": str(tmp_path / "dh")})
    assert done.returncode == 2 and "Traceback" not in done.stderr  # a settings error: exit 2
    assert f"--home: {home} is a file, not a folder" in done.stderr
    assert home.read_text() == "x"


def test_n54_a_partial_robotcar_copy_builds_the_splits_whose_runs_it_has(worlds, tmp_path):
    """Oxford-easy's train pair only: the three other runs are empty partitions with a note, the
    train split and its struct file are built, the test split is reported missing."""
    from dagster import materialize

    from assets.frames import frame_assets
    from assets.splits import split_assets
    from pipelines.resources import PipelineHome
    from seqvpr.layout import Layout

    layout = Layout.from_home(tmp_path)
    for name in ("2014-12-16-09-14-09", "2014-12-17-18-18-43", "models"):
        shutil.copytree(worlds / "robotcar" / name, layout.raw("robotcar") / name)
    resources = {"home": PipelineHome(home=str(tmp_path))}
    frames, table = [a for a in frame_assets if a.key.to_user_string() in ("robotcar_frames", "robotcar_frame_table")]
    notes = {}
    for run in ("2014-11-18-13-20-12", "2014-12-16-09-14-09", "2014-12-16-18-44-24", "2014-12-17-18-18-43", RUN):
        result = materialize([frames], partition_key=run, resources=resources,
                             run_config={"ops": {"robotcar_frames": {"config": {"size": 16}}}})
        assert result.success
        metadata = result.asset_materializations_for_node("robotcar_frames")[0].metadata
        notes[run] = (metadata["frames"].value, metadata["notes"].value)
    assert notes["2014-12-16-09-14-09"][0] > 0 and notes["2014-12-16-09-14-09"][1] == []
    assert notes["2014-11-18-13-20-12"][0] == 0 and "is not in the raw data" in notes["2014-11-18-13-20-12"][1][0]
    easy = [a for a in split_assets if a.key.to_user_string().startswith("oxford_easy")]
    result = materialize([table, *easy], resources=resources)
    assert result.success
    split = result.asset_materializations_for_node("oxford_easy_split")[0].metadata
    assert list(split["missing_splits"].value) == ["test"]
    assert [p.name for p in layout.struct_files("oxford_easy").glob("*.db")] == \
        ["oxford2_2014-12-16-09-14-09-2014-12-17-18-18-43_train.db"]


def test_n46_a_truncated_shard_is_named(tmp_path):
    import io
    import json
    import tarfile

    from seqvpr.exports.common import shard_keys

    split_dir = tmp_path / "shards" / "oxford_seqnet" / "test"
    split_dir.mkdir(parents=True)
    shard = split_dir / "test-000000.tar"
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key in ("a", "b"):
            for ext, size in (("json", 10), ("tokens.npy", 5000)):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = size
                tar.addfile(info, io.BytesIO(b"x" * size))
    (split_dir / "manifest.json").write_text(json.dumps({"shards": [{"name": shard.name}]}))
    assert shard_keys(split_dir) == ["a", "b"]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(DataError, match=rf"^{shard}: missing, truncated or corrupt shard \(.*\): rebuild the shards"):
        shard_keys(split_dir)


# --------------------------------------------------------------------------- more of the same kinds


def test_path_at_a_run_or_season_folder_says_to_give_its_parent(worlds, tmp_path):
    from seqvpr.acquire import ingest_local

    run = worlds / "robotcar" / RUN
    with pytest.raises(DataError, match=rf"^{run}: .*it is the RobotCar run folder {RUN}/ itself: point path at its "
                                        rf"parent {worlds / 'robotcar'}"):
        ingest_local(run, tmp_path / "dest", "robotcar")
    season = worlds / "nordland" / "summer"
    with pytest.raises(DataError, match=rf"^{season}: .*it is the season folder summer/ itself: point path at its parent"):
        ingest_local(season, tmp_path / "dest", "nordland")


def test_a_run_with_only_its_gps_tar_extracted_is_an_empty_partition_with_a_note(worlds, tmp_path):
    raw = _copy(worlds, "robotcar", tmp_path)
    shutil.rmtree(raw / RUN / "stereo")
    (raw / RUN / "stereo.timestamps").unlink()
    result = _robotcar(raw, tmp_path)
    assert result.table.num_rows == 0 and result.dropped == {}
    assert result.notes[0].startswith(f"{raw / RUN}: no stereo.timestamps and no stereo/left/ images: the run's stereo "
                                      f"tars were not extracted (only gps); get {RUN}_stereo_left_NN.tar")


def test_synthetic_scale_and_models_dir_are_checked_before_any_work(tmp_path):
    from assets.frames import NormaliseConfig
    from assets.sources import source_config_class

    assert "nordland scale: unknown parameter 'frame' (did you mean 'frames'?)" in \
        _refusal(source_config_class("nordland"), scale={"frame": 3})
    assert source_config_class("robotcar")(scale={"frames_per_traversal": 3}).scale == {"frames_per_traversal": 3}
    assert f"no such folder: {tmp_path / 'models'}" in _refusal(NormaliseConfig, models_dir=str(tmp_path / "models"))


def test_n37_n40_the_cli_validation_reports_the_config_classes_rules(tmp_path):
    from pipelines.definitions import defs
    from pipelines.validate import ConfigError, validate

    config = {"ops": {"oxford_hard_split": {"config": {"train_db": ["2014-12-16-09-14-9"]}},
                      "nordland_frames": {"config": {"size": 0}},
                      "robotcar_frames": {"config": {"camera": "center"}}}}
    with pytest.raises(ConfigError) as err:
        validate(defs, config, tmp_path)
    message = str(err.value)
    assert "ops.oxford_hard_split.config: train_db: unknown name '2014-12-16-09-14-9' (did you mean '2014-12-16-09-14-09'?)" in message
    assert "ops.nordland_frames.config.size: Input should be greater than or equal to 8 (got 0)" in message
    assert "ops.robotcar_frames.config.camera: unknown stereo camera 'center' (did you mean 'centre'?)" in message
    assert not any(tmp_path.iterdir())

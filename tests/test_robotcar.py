"""RobotCar: the synthetic runs in the SDK layout, read back independently, and the normaliser
against the generator's ground truth."""
import csv
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.ndimage import map_coordinates

from seqvpr.camera_model import load_camera_model
from seqvpr.datasets.robotcar import normalise_partition
from seqvpr.errors import DataError
from seqvpr.synthetic import generate
from seqvpr.synthetic.robotcar import GPS_COLUMNS, INS_COLUMNS

RUN = "2014-11-18-13-20-12"  # the run whose INS starts after its first camera frames


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("robotcar")
    raw = base / "data" / "raw" / "robotcar"
    summary = generate("robotcar", raw, seed=2, truth_root=base / "truth", frames_per_traversal=24, width=160, height=120)
    return base, raw, summary


MODELS = "robotcar-dataset-sdk/models"  # where the generator puts the SDK checkout: beside the dataset


def test_sdk_layout_and_real_columns(world):
    _, raw, summary = world
    assert set(summary) == {p.name for p in raw.iterdir()}  # runs only: no tar holds the camera models
    ins = pd.read_csv(raw / RUN / "gps" / "ins.csv")
    assert list(ins.columns) == INS_COLUMNS
    assert ins["utm_zone"].unique().tolist() == ["30U"] and ins["yaw"].abs().max() <= np.pi
    with open(raw / RUN / "gps" / "gps.csv", newline="") as fh:
        assert next(csv.reader(fh)) == GPS_COLUMNS
    lines = [line.split() for line in (raw / RUN / "stereo.timestamps").read_text().splitlines()]
    stamps = [int(stamp) for stamp, _ in lines]
    assert len(stamps) == 24 and stamps == sorted(stamps)
    assert [chunk for _, chunk in lines] == ["1"] * 12 + ["2"] * 12
    # 2014-11-18 13:20:12 UTC is 1416316812 s: the first image is 10 to 11 s later, on the run's date
    assert 1416316822_000000 <= stamps[0] < 1416316823_000000
    assert sorted(p.name for p in (raw / RUN / "stereo").iterdir()) == ["left"]
    with Image.open(raw / RUN / "stereo" / "left" / f"{stamps[0]}.png") as img:
        assert img.mode == "L" and img.size == (160, 120)
    lut = np.fromfile(raw.parent / MODELS / "stereo_wide_left_distortion_lut.bin", dtype=np.float64)
    assert lut.size == 2 * 160 * 120


def test_normalised_frames_and_poses_match_truth(world, tmp_path):
    base, raw, _ = world
    result = normalise_partition(raw, RUN, tmp_path / "frames", tmp_path, size=160)
    assert result.dropped == {"outside_ins_range": 3}
    rows = result.table.to_pylist()
    assert len(rows) == 21
    truth = {(r["run"], int(r["timestamp"])): r for r in csv.DictReader(open(base / "truth" / "camera_poses.csv"))}
    for row in rows:
        t = truth[(RUN, row["timestamp_us"])]
        assert np.hypot(row["easting"] - float(t["easting"]), row["northing"] - float(t["northing"])) < 0.1
        assert abs((row["heading_deg"] - float(t["heading_deg"]) + 180) % 360 - 180) < 5  # camera yaw jitter
    compared = 0
    for truth_png in sorted((base / "truth" / RUN).glob("*.png")):
        match = [r for r in rows if r["timestamp_us"] == int(truth_png.stem)]
        if not match:
            continue
        ours = cv2.resize(cv2.imread(str(tmp_path / match[0]["image_path"])), (160, 120), interpolation=cv2.INTER_AREA)
        expected = cv2.imread(str(truth_png))
        assert np.abs(ours.astype(float) - expected.astype(float))[10:-10, 10:-10].mean() < 12
        compared += 1
    assert compared >= 1


def test_camera_model_lut_maps_like_the_sdk(world):
    _, raw, _ = world
    model = load_camera_model(raw.parent / MODELS, "stereo_wide_left", 120, 160)
    image = np.arange(120 * 160, dtype=np.float32).reshape(120, 160)
    # the SDK samples the raw image bilinearly at lut[p] for every undistorted pixel p (row-major):
    # map_coordinates(image, lut[:, ::-1].T, order=1); OpenCV's remap works in 1/32 pixel steps,
    # worth up to 160 / 32 = 5 grey levels on this image, which rises by 160 per row
    expected = map_coordinates(image, model.lut[:, ::-1].T, order=1).reshape(120, 160)
    ours = model.undistort(image)
    assert np.abs(ours - expected)[5:-5, 5:-5].max() <= 5.0
    assert model.lut[75 * 160 + 30] == pytest.approx(model.lut.reshape(120, 160, 2)[75, 30])


def _copy(raw, tmp_path):
    copy = tmp_path / "raw"
    shutil.copytree(raw, copy)
    shutil.copytree(raw.parent / MODELS, tmp_path / MODELS)
    return copy


@pytest.mark.parametrize("damage, message", [
    ("drop_column", r"ins.csv: missing column\(s\) yaw"),
    ("nan_pose", r"ins.csv: non-numeric or NaN pose at line 3"),
    ("unsorted_stamps", r"stereo.timestamps: timestamps not strictly increasing at line 3"),
    ("corrupt_png", r"\.png: cannot decode image"),
    ("wrong_bayer_size", r"\.png: image is 80x60 but the camera model's LUT is for 160x120"),
])
def test_bad_inputs_name_the_file(world, tmp_path, damage, message):
    raw = _copy(world[1], tmp_path)
    run_dir = raw / "2015-03-17-11-08-44"
    stamps = (run_dir / "stereo.timestamps").read_text().splitlines()
    first_png = run_dir / "stereo" / "left" / f"{stamps[0].split()[0]}.png"
    second_png = run_dir / "stereo" / "left" / f"{stamps[1].split()[0]}.png"
    ins_path = run_dir / "gps" / "ins.csv"
    if damage == "drop_column":
        pd.read_csv(ins_path).drop(columns=["yaw"]).to_csv(ins_path, index=False)
    elif damage == "nan_pose":
        lines = ins_path.read_text().splitlines()
        cells = lines[2].split(",")
        cells[6] = "nan"
        lines[2] = ",".join(cells)
        ins_path.write_text("\n".join(lines) + "\n")
    elif damage == "unsorted_stamps":
        stamps[1], stamps[2] = stamps[2], stamps[1]
        (run_dir / "stereo.timestamps").write_text("\n".join(stamps) + "\n")
    elif damage == "corrupt_png":
        first_png.write_bytes(first_png.read_bytes()[:50])
    else:
        cv2.imwrite(str(second_png), np.zeros((60, 80), np.uint8))
    out = tmp_path / "frames"
    with pytest.raises(DataError, match=message):
        normalise_partition(raw, "2015-03-17-11-08-44", out, tmp_path, size=64)


def test_generator_rejects_impossible_world(tmp_path):
    with pytest.raises(ValueError, match="frames_per_traversal must be >= 0"):
        generate("robotcar", tmp_path / "raw", frames_per_traversal=-1)
    with pytest.raises(ValueError, match="route_length_m must be in"):
        generate("robotcar", tmp_path / "raw", route_length_m=0)


def test_only_chunk_one_downloaded_loads_and_counts_the_rest(world, tmp_path):
    raw = _copy(world[1], tmp_path)
    run_dir = raw / "2015-03-17-11-08-44"
    chunk_two = [line.split()[0] for line in (run_dir / "stereo.timestamps").read_text().splitlines() if line.split()[1] == "2"]
    for stamp in chunk_two:
        (run_dir / "stereo" / "left" / f"{stamp}.png").unlink()
    result = normalise_partition(raw, "2015-03-17-11-08-44", tmp_path / "frames", tmp_path, size=32)
    assert result.dropped == {"chunk_not_downloaded": 12} and result.table.num_rows == 12
    names = result.table.column("source_file").to_pylist()
    assert names[0] == f"2015-03-17-11-08-44/stereo/left/{result.table.column('timestamp_us')[0]}.png"
    # a missing image of a chunk that is present is still an error
    (run_dir / "stereo" / "left" / f"{names[3].split('/')[-1]}").unlink()
    with pytest.raises(DataError, match=r"left/\d+\.png: image listed in stereo.timestamps is missing"):
        normalise_partition(raw, "2015-03-17-11-08-44", tmp_path / "frames", tmp_path, size=32)


def test_centre_camera_uses_the_narrow_model_and_models_dir_is_a_setting(tmp_path):
    raw, sdk = tmp_path / "raw" / "robotcar", tmp_path / "sdk"
    generate("robotcar", raw, seed=3, truth_root=tmp_path / "truth", frames_per_traversal=4, width=32, height=24,
             cameras="centre", sdk_root=sdk)
    assert sorted(p.name for p in (sdk / "models").iterdir()) == ["stereo_narrow_left.txt", "stereo_narrow_left_distortion_lut.bin"]
    with pytest.raises(DataError, match=r"robotcar/models: RobotCar camera models not found: set models_dir .*robotcar-dataset-sdk"):
        normalise_partition(raw, RUN, tmp_path / "frames", tmp_path, size=16, camera="centre")
    result = normalise_partition(raw, RUN, tmp_path / "frames", tmp_path, size=16, camera="centre", models_dir=sdk / "models")
    assert result.table.column("source_file").to_pylist()[0].startswith(f"{RUN}/stereo/centre/")
    with pytest.raises(DataError, match=r"stereo/left: no image of any chunk"):
        normalise_partition(raw, RUN, tmp_path / "frames", tmp_path, size=16, models_dir=sdk / "models")

"""Struct files against the real seqNet reference files: same fields, dtypes, orientation; same
reader; byte-identical re-runs; splitInds, seqBounds and nuScenes positives pickle layouts."""
import pickle

import numpy as np
import pytest
from scipy.io import loadmat

from schemas.struct_file import STRUCT_FIELDS_METRIC, STRUCT_FIELDS_PLACE_INDEX
from seqvpr.benchmarks import BENCHMARKS, configure
from seqvpr.datasets.frames import frame_table
from seqvpr.seqbounds import read_seqbounds
from seqvpr.splits import build_split, role_rows
from seqvpr.structfile import write_struct_files
from conftest import REFERENCE_DIR
from test_splits import SMALL_NORDLAND, frame_rows, nordland_frames, robotcar_frames

OXFORD_REF = f"{REFERENCE_DIR}/oxford-v1.0_2015-03-17-11-08-44_2014-12-16-18-44-24_test_d-10_d2-5.db"
OXFORD_TRAIN_REF = f"{REFERENCE_DIR}/oxford-v1.0_2015-03-17-11-08-44_2014-12-16-18-44-24_train_d-20_d2-5.db"
NORDLAND_REF = f"{REFERENCE_DIR}/nordland_test_d-1_d2-1.db"


def struct(path):
    return loadmat(path)["dbStruct"][0, 0]


def layout_of(s):
    """Field name -> (dtype kind/str, number of dimensions, which axis holds the frames)."""
    out = {}
    for name in s.dtype.names:
        value = s[name]
        out[name] = (value.dtype.str if value.dtype != object else "object", value.ndim, value.shape[0] if value.ndim == 2 and value.shape[0] <= 2 else "N")
    return out


def assert_same_layout(ours, reference):
    assert ours.dtype.names == reference.dtype.names
    got, want = layout_of(ours), layout_of(reference)
    for name in reference.dtype.names:
        if want[name][0].startswith("<U"):  # strings: only the kind must match, length varies
            assert got[name][0].startswith("<U") and got[name][1:] == want[name][1:], name
        else:
            assert got[name] == want[name], name
    for name in ("dbImageFns", "qImageFns"):
        assert ours[name].shape[1] == 1 and ours[name][0, 0].shape == reference[name][0, 0].shape == (1,)


def parse(path):
    """The essentials of seqNet's parse_db_struct, written from the reference files' layout."""
    s = struct(path)
    return dict(
        dataset=s["dataset"].item(), whichSet=s["whichSet"].item(),
        db=[f[0].item() for f in s["dbImageFns"]], q=[f[0].item() for f in s["qImageFns"]],
        numDb=s["numImages"].item(), numQ=s["numQueries"].item(), posDistThr=s["posDistThr"].item(),
        nonTriv=s["nonTrivPosDistSqThr"].item(), utmDb=s["utmDb"].T, utmQ=s["utmQ"].T,
    )


@pytest.fixture(scope="module")
def oxford(tmp_path_factory):
    bench = configure(BENCHMARKS["oxford_seqnet"], {"negatives_per_query": 10})
    table = build_split(robotcar_frames(), bench).table
    out = tmp_path_factory.mktemp("oxford")
    return table, bench, out, write_struct_files(table, bench, out)


def test_reference_layout_is_what_the_schema_documents():
    assert struct(OXFORD_REF).dtype.names == STRUCT_FIELDS_METRIC
    assert struct(NORDLAND_REF).dtype.names == STRUCT_FIELDS_PLACE_INDEX


def test_oxford_struct_matches_reference_layout_and_values(oxford):
    table, bench, out, outputs = oxford
    names = sorted(p.name for p in outputs.struct_files)
    assert names == [
        "oxford-v1.0_2015-03-17-11-08-44_2014-12-16-18-44-24_test_d-10_d2-5.db",
        "oxford-v1.0_2015-03-17-11-08-44_2014-12-16-18-44-24_train_d-20_d2-5.db",
    ]
    train = parse(out / names[1])
    assert (train["posDistThr"], train["nonTriv"]) == (20.0, 25.0) == (parse(OXFORD_TRAIN_REF)["posDistThr"], 25.0)
    test_path = out / names[0]
    assert_same_layout(struct(test_path), struct(OXFORD_REF))
    ours, ref = parse(test_path), parse(OXFORD_REF)
    assert ours["dataset"] == ref["dataset"] == "oxford-v1.0_2015-03-17-11-08-44-2014-12-16-18-44-24"
    assert ours["whichSet"] == "test" and ours["posDistThr"] == 10.0 and ours["nonTriv"] == 25.0
    db = role_rows(table, "test", "db")
    assert ours["numDb"] == len(db) == len(ours["db"])
    assert ours["db"][0] == db["source_file"][0] and ours["db"][0].startswith("2015-03-17-11-08-44/stereo/left/images/")
    # Row order as the reference: northing first (Oxford northing ~5.7e6, easting ~6.2e5).
    assert ref["utmDb"][0, 0] > 5e6 and ours["utmDb"][0, 0] > 5e6
    assert np.allclose(ours["utmDb"], db[["northing", "easting"]].to_numpy())


def test_nordland_struct_matches_reference_layout(tmp_path):
    bench = configure(BENCHMARKS["nordland"], SMALL_NORDLAND)
    table = build_split(nordland_frames(), bench).table
    outputs = write_struct_files(table, bench, tmp_path)
    assert sorted(p.name for p in outputs.struct_files) == [
        "nordland_test_d-1_d2-1.db", "nordland_train_d-40_d2-10.db", "nordland_val_d-1_d2-1.db"
    ]
    ours, ref = struct(tmp_path / "nordland_test_d-1_d2-1.db"), struct(NORDLAND_REF)
    assert_same_layout(ours, ref)
    assert ours["utmDb"].dtype == np.int64 and ours["utmDb"][0].tolist() == list(range(120, 150))
    assert ours["posDistThr"].dtype == np.int64 and ours["posDistThr"].item() == 1
    assert ours["dbImageFns"][0, 0].item() == ours["qImageFns"][0, 0].item() == "images-00120.png"
    assert ours["gpsDb"].shape == (2, 30) and ours["gpsDb"][0, 0] == pytest.approx(51.75 + 7300000.0 * 1e-6)
    train = struct(tmp_path / "nordland_train_d-40_d2-10.db")
    assert [train[k].item() for k in ("posDistThr", "posDistSqThr", "nonTrivPosDistSqThr")] == [40, 1600, 100]


def test_same_input_twice_gives_byte_identical_files(oxford, tmp_path):
    table, bench, out, _ = oxford
    write_struct_files(table, bench, tmp_path)
    first = sorted(p for p in out.rglob("*") if p.is_file())
    second = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert [p.relative_to(out) for p in first] == [p.relative_to(tmp_path) for p in second]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second))
    assert b"1970" in first[0].read_bytes()[:116]


def test_split_inds_layout_matches_reference(oxford):
    table, _, out, outputs = oxford
    ref = np.load(f"{REFERENCE_DIR}/oxford-v1.0_splitInds.npz", allow_pickle=True)
    ours = np.load(outputs.split_inds, allow_pickle=True)
    assert sorted(ours.files) == sorted(ref.files)
    n_train_db = len(role_rows(table, "train", "db"))
    n_test_q = len(role_rows(table, "test", "query"))
    for key in ref.files:
        assert ours[key].dtype == object and ours[key].shape == ref[key].shape == (2,)
        assert all(a.dtype == np.int64 and a.ndim == 1 for a in ours[key])
    assert ours["trainInds"][0].tolist() == list(range(n_train_db))
    assert ours["testInds"][0][0] == n_train_db and len(ours["testInds"][1]) == n_test_q
    assert np.array_equal(ours["valInds"][0], ours["testInds"][0])  # no val split: val = test


def test_seqbounds_files_match_split_table(oxford):
    table, _, out, outputs = oxford
    path = out / "seqBoundsFiles" / "oxford-v1.0_train_database_seqBounds.txt"
    assert path in outputs.seqbounds_files
    bounds = read_seqbounds(path)
    assert np.array_equal(bounds, np.loadtxt(path, dtype=int))
    assert np.array_equal(bounds, role_rows(table, "train", "db")[["seq_start", "seq_end"]].to_numpy())
    # Train: the route before and after the test stretch (with seqNet's buffers): two runs.
    assert len(np.unique(bounds, axis=0)) == 2


def test_nuscenes_positives_pickle_is_what_adapt_stformer_loads(tmp_path):
    rows = frame_rows("nuscenes", "scene-0001", "day", [[0, 0], [5, 0], [50, 0]], heading=[0.0, 0.0, 0.0])
    rows += frame_rows("nuscenes", "scene-0002", "night", [[1, 0], [1, 1], [49, 0]], heading=[359.0, 90.0, 20.0])
    bench = BENCHMARKS["nuscenes"]
    outputs = write_struct_files(build_split(frame_table(rows), bench).table, bench, tmp_path)
    assert outputs.positives_pickle == tmp_path / "saved_positives" / "nuscene_positives_nuscene_large.pkl"
    assert struct(outputs.struct_files[0])["dataset"].item() == "nuscene_large"
    with open(outputs.positives_pickle, "rb") as fh:
        positives = pickle.load(fh)
    assert isinstance(positives, np.ndarray) and positives.dtype == object and positives.shape == (3,)
    assert [p.tolist() for p in positives] == [[0, 1], [], [2]]
    assert all(p.dtype == np.int64 for p in positives)


def test_frame_names_are_written_as_in_seqnets_files():
    from seqvpr.structfile import struct_image_name

    names = (REFERENCE_DIR / "imageNamesFiles" / "oxford_2015-03-17-11-08-44_imagenames_subsampled-2m.txt").read_text().split()
    for name in names[:3] + names[-3:]:  # raw files: <run>/stereo/left/<timestamp>.png, as the tars extract
        run, timestamp = name.split("/")[0], name.rsplit("/", 1)[1]
        assert struct_image_name("robotcar", f"{run}/stereo/left/{timestamp}") == name
    clean = (REFERENCE_DIR / "imageNamesFiles" / "nordland_clean_imageNames.txt").read_text().split()
    assert {struct_image_name("nordland", f"{season}/{clean[0]}") for season in ("summer", "fall")} == {clean[0]}


def test_adapt_stformer_benchmarks_use_its_struct_file_names():
    """The names Adapt-STformer's get_datasets.py loads (ai4ce/Adapt-STFormer)."""
    from seqvpr.structfile import struct_names

    assert [struct_names(BENCHMARKS["oxford_easy"], s)[0] for s in ("train", "test")] == [
        "oxford2_2014-12-16-09-14-09-2014-12-17-18-18-43_train.db", "oxford2_2014-11-18-13-20-12-2014-12-16-18-44-24_test.db"]
    assert [struct_names(BENCHMARKS["oxford_hard"], s)[0] for s in ("train", "test")] == ["oxford_hard_train.db", "oxford_hard_test.db"]
    assert struct_names(BENCHMARKS["nuscenes"], "test") == ("nuscene_large.db", "nuscene_large")

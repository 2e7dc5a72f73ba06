"""Exports read back the way their consumers read them.

The readers below are written from the consumers' code (cited in seqvpr/exports/*): seqNet's
get_datasets.py + parse_db_struct + get_positives, Adapt-STformer's get_datasets.py +
get_positives (pickle for nuscene_large) + its seqbounds loader, VPR-methods-evaluation's
read_images_paths + TestDataset positives. Each derives positives from what we wrote, and the
tests compare them with the split table's. Split tables are built here from hand-made frames,
so the tests do not depend on the default benchmarks.
"""
import dataclasses
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from glob import glob
from pathlib import Path

import numpy as np
import pytest
import utm
from PIL import Image
from scipy.io import loadmat
from sklearn.neighbors import NearestNeighbors

from schemas.split_table import SPLITS
from seqvpr.benchmarks import BENCHMARKS, Benchmark, SplitSpec, config_fields
from seqvpr.datasets.frames import frame_table, save_frame
from seqvpr.embed.embed import global_descriptor
from seqvpr.errors import DataError
from seqvpr.exports import export
from seqvpr.exports.cli import main as export_main
from seqvpr.exports.common import DESCRIPTOR_POOLING, shard_descriptors
from seqvpr.exports.seqnet import write_seqnet
from seqvpr.housekeeping import home_lock
from seqvpr.layout import Layout
from seqvpr.pairs import PairRules
from seqvpr.shards import Sample, write_split_shards
from seqvpr.splits import build_split, role_rows, write_split

from conftest import REFERENCE_DIR

ROOT = Path(__file__).resolve().parents[1]
DESC_DIM = 4
# seqNet's structFiles/imageNamesFiles/nordland_clean_imageNames.txt (a fixture copy): its length is
# the number of rows every Nordland season array must have.
CLEAN_ROWS = len((REFERENCE_DIR / "imageNamesFiles" / "nordland_clean_imageNames.txt").read_text().split())
# oravus/seqNet get_datasets.py (commit 6b83d36), Nordland branch:
#   trainInds, testInds, valInds = np.arange(15000), np.arange(15100,18100), np.arange(18200,21200)
#   'sw' -> ref, qry = 'summer', 'winter'; 'sf' -> ref, qry = 'spring', 'fall'
SEQNET_INDS = {"train": np.arange(15000), "test": np.arange(15100, 18100), "val": np.arange(18200, 21200)}
SEQNET_SEASONS = {"nordland-sw": ("summer", "winter"), "nordland-sf": ("spring", "fall")}
MODEL_ID = "cct384-0123456789abcdef"
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


# ---------------------------------------------------------------- hand-made inputs

def frame(dataset, traversal, condition, index, t_us, easting, northing, heading=0.0, place=-1, stem=None, latlon=None):
    lat, lon = latlon or utm.to_latlon(easting, northing, 30, "U")
    stem = stem or str(t_us)
    return dict(frame_id=f"{traversal}_{stem}", dataset=dataset, location="test", traversal=traversal, condition=condition,
                frame_index=index, timestamp_us=t_us, image_path=f"frames/{dataset}/{traversal}/{stem}.tif",
                source_file=f"{traversal}/stereo/left/images/{stem}.png", lat=lat, lon=lon, easting=easting,
                northing=northing, utm_zone=30, utm_band="U", heading_deg=heading, place_index=place)


def robotcar_like(n=40):
    """Two runs along a line, 2 m apart, 8 frames a second (several frames share a second)."""
    rows = []
    for i in range(n):
        rows.append(frame("robotcar", "2015-03-17-11-08-44", "day", i, 1426590534857014 + 125000 * i, 620000.0, 5735000.0 + 2.0 * i))
        rows.append(frame("robotcar", "2014-12-16-18-44-24", "night", i, 1418755480528820 + 125000 * i, 620001.3, 5735000.7 + 2.0 * i))
    return frame_table(rows)


def oxford_bench(name="oxford_easy"):
    """Sections 1 train, 2 test of the first run; radius 5 m, non-trivial 3 m."""
    return Benchmark(name=name, dataset="robotcar", select_by="traversal",
                     splits=(SplitSpec("train", ("2015-03-17-11-08-44",), ("2014-12-16-18-44-24",), sections=(1,)),
                             SplitSpec("test", ("2015-03-17-11-08-44",), ("2014-12-16-18-44-24",), sections=(2,))),
                     separation=0.0, rules=PairRules(radius=5.0, nontrivial_radius=3.0, negative_radius=5.0, negatives_per_query=2),
                     n_sections=2, route_reference="2015-03-17-11-08-44", struct_stem="oxford-v1.0")


T0 = 1532402927612460
# scene -> (condition, first timestamp, first easting offset, first heading): database scenes 0003
# and 0004 are one log recorded without a break (0.5 s between them), 0001 comes 100 s later;
# query scene 0102 starts exactly 1 s after 0101 ends (not a gap for the authors' "> 1 s"), 0103
# 1 s + 1 us after 0102 (a gap). Scene names do not sort in time order.
NUSCENES_SCENES = {
    "scene-0001": ("day", T0 + 100_000_000, 40.0, 10.0),
    "scene-0003": ("day", T0, 0.0, 0.0),
    "scene-0004": ("day", T0 + 3_000_000, 18.0, 72.0),
    "scene-0101": ("night", T0 + 200_000_000, 0.4, 5.0),
    "scene-0102": ("night", T0 + 203_500_000, 18.4, 77.0),
    "scene-0103": ("night", T0 + 207_000_001, 40.4, 15.0),
}


def nuscenes_like():
    """Six frames per scene, 0.5 s (2 Hz key frames) and 3 m apart, headings turning 12 degrees a
    frame (no distance or heading lands on a radius, so strict and inclusive rules agree)."""
    rows = []
    for scene, (condition, t, offset, heading0) in NUSCENES_SCENES.items():
        for i in range(6):
            rows.append(frame("nuscenes", scene, condition, i, t + 500_000 * i, 620000.0 + offset + 3.0 * i, 5735000.0,
                              heading=(heading0 + 12.0 * i) % 360))
    return frame_table(rows)


def nuscenes_bench():
    return Benchmark(name="nuscenes", dataset="nuscenes", select_by="condition", splits=(SplitSpec("test", ("day",), ("night",)),),
                     separation=0.0, rules=PairRules(radius=10.0, nontrivial_radius=5.0, negative_radius=10.0, max_heading_deg=30.0,
                                                     negatives_per_query=2),
                     struct_stem="nuscenes", struct_dataset="nuscene_large")


def nordland_like(count, seasons=("summer", "winter", "spring", "fall")):
    rows = []
    for season in seasons:
        for p in range(count):
            rows.append(frame("nordland", season, season, p, (202 + p) * 1_000_000, 0.0, 0.0, place=p, stem=f"images-{202 + p:05d}",
                              latlon=(65.0, 13.0)))
    return frame_table(rows)


def nordland_bench(ranges):
    """Nordland-like with the 1-frame rule; ``ranges``: split -> [start, end) of place indices."""
    seasons = {"train": ("summer", "winter"), "val": ("summer", "winter"), "test": ("spring", "fall")}
    return dataclasses.replace(
        BENCHMARKS["nordland"], splits=tuple(SplitSpec(s, (seasons[s][0],), (seasons[s][1],), index_range=r) for s, r in ranges.items()),
        separation=1, rules=PairRules(radius=1, nontrivial_radius=1, negative_radius=10, negatives_per_query=2), max_step=1)


def materialise(home: Path, frames, bench: Benchmark, images=True):
    """Split table under the benchmark's name (with its settings), PNG frames, and descriptors."""
    layout = Layout.from_home(home)
    result = build_split(frames, bench)
    values = {k: v for k, (_, v) in config_fields(bench).items()}
    write_split(result, bench.name, values, layout.split_table(bench.name))
    if images:
        for row in result.table.to_pandas().drop_duplicates("frame_id").itertuples():
            path = layout.data_root / row.image_path
            if not path.exists():
                shade = (row.frame_index * 37 + len(row.traversal) * 11) % 256
                rgb = np.zeros((24, 32, 3), np.uint8)
                rgb[..., 0], rgb[..., 1] = shade, np.arange(32, dtype=np.uint8)[None, :] * 7
                save_frame(rgb, path)
    return layout, result.table


def descriptors_of(table, bench):
    """A distinct descriptor per frame: derived from its frame_id, so equal frames agree."""
    out = {}
    for split in SPLITS:
        if bench.split(split) is None:
            continue
        for role in ("db", "query"):
            rows = role_rows(table, split, role)
            out[(split, role)] = np.stack([frame_descriptor(f) for f in rows["frame_id"]]) if len(rows) else np.zeros((0, DESC_DIM), np.float32)
    return out


def frame_descriptor(frame_id):
    seed = int.from_bytes(frame_id.encode()[-8:].rjust(8, b"\0"), "little") % (2**32)
    return np.random.default_rng(seed).normal(size=DESC_DIM).astype(np.float32)


def write_shards(layout, table, bench, model_id=MODEL_ID):
    """Shards of every split; ``model_id``: the encoder identity their manifest records (the agreed
    ``manifest["encoder"]["model_id"]`` key; None leaves it out, as shards written before it)."""
    for split in SPLITS:
        if bench.split(split) is None:
            continue
        rows = [r for role in ("db", "query") for r in role_rows(table, split, role).to_dict("records")]
        samples = [Sample(key=r["frame_id"], tokens=np.zeros((1, 2), np.float16), descriptor=frame_descriptor(r["frame_id"]),
                          row={"role": r["role"], "order": int(r["order"])}) for r in rows]
        write_split_shards(layout.shards(bench.name, split), bench.name, split, samples)
        if model_id is not None:
            set_manifest_encoder(layout.shards(bench.name, split), model_id)


def set_manifest_encoder(split_dir, model_id):
    path = split_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["encoder"] = {"model_id": model_id, "weights": "seed-0", "freeze_te": 7, "num_layers": 8}
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def sorted_positives(found):
    return [np.sort(np.asarray(f, dtype=np.int64)) for f in found]


def assert_positives_equal(derived, ours):
    assert len(derived) == len(ours)
    for a, b in zip(derived, ours):
        assert np.array_equal(np.sort(np.asarray(a, dtype=np.int64)), np.sort(np.asarray(b, dtype=np.int64)))


# ---------------------------------------------------------------- readers written from the consumers

def seqnet_struct(path):
    """seqNet datasets.parse_db_struct: the fields its loaders use, utm transposed to N x D."""
    s = loadmat(path)["dbStruct"][0, 0]
    return dict(dataset=s["dataset"].item(), whichSet=s["whichSet"].item(),
                db=[f[0].item() for f in s["dbImageFns"]], q=[f[0].item() for f in s["qImageFns"]],
                numDb=s["numImages"].item(), numQ=s["numQueries"].item(), posDistThr=s["posDistThr"].item(),
                nonTriv=s["nonTrivPosDistSqThr"].item(), utmDb=s["utmDb"].T, utmQ=s["utmQ"].T)


def assert_like_reference(ours: Path, reference: Path):
    """Same fields in the same order, same dtypes (strings: kind only) and orientation as seqNet's own file."""
    a, b = loadmat(ours)["dbStruct"][0, 0], loadmat(reference)["dbStruct"][0, 0]
    assert a.dtype.names == b.dtype.names
    for name in b.dtype.names:
        kind = lambda v: "U" if v.dtype.kind == "U" else v.dtype.str
        assert (kind(a[name]), a[name].ndim) == (kind(b[name]), b[name].ndim), name
        if b[name].ndim == 2 and b[name].shape[0] <= 2:
            assert a[name].shape[0] == b[name].shape[0], name


def radius_search(db, q, radius):
    """get_positives / TestDataset: NearestNeighbors.radius_neighbors of the queries."""
    return NearestNeighbors(n_jobs=1).fit(db).radius_neighbors(q, radius=radius, return_distance=False)


def seqnet_oxford(folder: Path, desc_type, split):
    """get_datasets.py, Oxford branch: struct names from the runs, per-run arrays, splitInds."""
    ref, qry = "2015-03-17-11-08-44", "2014-12-16-18-44-24"
    suffix = {"train": "_train_d-20_d2-5.db", "test": "_test_d-10_d2-5.db", "val": "_test_d-10_d2-5.db"}[split]
    struct = seqnet_struct(folder / "structFiles" / f"oxford-v1.0_{ref}_{qry}{suffix}")
    ft1 = np.load(folder / "data" / "descData" / desc_type / f"oxford_{ref}_stereo_left.npy")
    ft2 = np.load(folder / "data" / "descData" / desc_type / f"oxford_{qry}_stereo_left.npy")
    inds = np.load(folder / "structFiles" / "oxford-v1.0_splitInds.npz", allow_pickle=True)[f"{split}Inds"].tolist()
    return struct, ft1[inds[0]], ft2[inds[1]]


def adapt_positives(folder: Path, struct_name):
    """Adapt-STformer WholeDatasetFromStruct.get_positives (run with structFiles/ in the cwd)."""
    s = seqnet_struct(folder / "structFiles" / struct_name)
    if s["dataset"] in ("nuscene_small", "nuscene_large"):
        with open(folder / "structFiles" / "saved_positives" / f"nuscene_positives_{s['dataset']}.pkl", "rb") as fh:
            return s, pickle.load(fh)
    return s, radius_search(s["utmDb"], s["utmQ"], s["posDistThr"])


def gsv_folder(folder):
    """VPR-methods-evaluation read_images_paths: sorted recursive glob of image files."""
    paths = sorted(glob(f"{folder}/**/*", recursive=True))
    return [p for p in paths if os.path.isfile(p) and os.path.splitext(p)[1].lower() in (".jpg", ".jpeg", ".png")]


def gsv_utms(paths):
    return np.array([(p.split("@")[1], p.split("@")[2]) for p in paths]).astype(float)


# ---------------------------------------------------------------- seqNet

def test_descriptor_name_says_what_the_descriptor_is():
    tokens = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    mean = tokens.mean(axis=0)
    assert DESCRIPTOR_POOLING == "mean"
    assert np.allclose(global_descriptor(tokens), mean / np.linalg.norm(mean))


def test_seqnet_oxford_reads_per_run_arrays_through_splitinds(tmp_path):
    bench = oxford_bench("oxford_seqnet")
    table = build_split(robotcar_like(), bench).table
    descriptors = descriptors_of(table, bench)
    info = write_seqnet(tmp_path, table, bench, descriptors, "cct384-test-mean")
    assert info["seqnet_hardcoded_runs_match"] and info["splits_seqnet_cannot_read"] == [] and info["consumer_can_load"]
    for split in ("train", "test", "val"):
        ours = split if split != "val" else "test"  # seqNet validates on the test struct
        struct, db_desc, q_desc = seqnet_oxford(tmp_path, "cct384-test-mean", split)
        db, q = role_rows(table, ours, "db"), role_rows(table, ours, "query")
        assert struct["dataset"] == "oxford-v1.0_2015-03-17-11-08-44-2014-12-16-18-44-24" and struct["whichSet"] == ours
        assert struct["db"] == db["source_file"].tolist() and struct["numDb"] == len(db) and struct["numQ"] == len(q)
        assert np.array_equal(db_desc, descriptors[(ours, "db")]) and np.array_equal(q_desc, descriptors[(ours, "query")])
        assert_positives_equal(radius_search(struct["utmDb"], struct["utmQ"], struct["posDistThr"]), q["positives"])
        assert_positives_equal(radius_search(struct["utmDb"], struct["utmQ"], struct["nonTriv"] ** 0.5), q["nontrivial_positives"])
    for split, suffix in (("train", "train_d-20_d2-5"), ("test", "test_d-10_d2-5")):
        name = f"oxford-v1.0_2015-03-17-11-08-44_2014-12-16-18-44-24_{suffix}.db"
        assert_like_reference(tmp_path / "structFiles" / name, REFERENCE_DIR / name)
    ours = np.load(tmp_path / "structFiles" / "oxford-v1.0_splitInds.npz", allow_pickle=True)
    theirs = np.load(REFERENCE_DIR / "oxford-v1.0_splitInds.npz", allow_pickle=True)
    assert sorted(ours.files) == sorted(theirs.files)
    assert all(ours[k].dtype == theirs[k].dtype == object and ours[k].shape == theirs[k].shape == (2,) for k in theirs.files)
    # one row per frame of the run, in time order: train and test frames are disjoint sections
    ft1 = np.load(tmp_path / "data" / "descData" / "cct384-test-mean" / "oxford_2015-03-17-11-08-44_stereo_left.npy")
    run = table.to_pandas().query("role == 'db'").sort_values("timestamp_us")
    assert np.array_equal(ft1, np.stack([frame_descriptor(f) for f in run["frame_id"]]))
    assert info["positive_mismatches"] == {"train": {"positives": 0, "nontrivial_positives": 0},
                                           "test": {"positives": 0, "nontrivial_positives": 0}}


def test_seqnet_rejects_a_benchmark_it_cannot_express(tmp_path):
    bench = oxford_bench("oxford_seqnet")
    other = dataclasses.replace(bench, splits=(bench.splits[0], dataclasses.replace(bench.splits[1], db=("2014-12-16-18-44-24",),
                                                                                    query=("2015-03-17-11-08-44",))))
    table = build_split(robotcar_like(), other).table
    with pytest.raises(DataError, match="one database and one query run"):
        write_seqnet(tmp_path, table, other, descriptors_of(table, other), "d")
    with pytest.raises(DataError, match="no seqNet layout"):
        write_seqnet(tmp_path, table, dataclasses.replace(bench, name="oxford_hard"), {}, "d")


def seqnet_nordland_views(folder: Path, desc_type):
    """get_datasets.py, Nordland branch: (dataset, split) -> (ft1[inds], ft2[inds]), sliced exactly
    as seqNet slices them (an IndexError here is the one seqNet would raise)."""
    desc = folder / "data" / "descData" / desc_type
    views = {}
    for dataset, (ref, qry) in SEQNET_SEASONS.items():
        ft1, ft2 = np.load(desc / f"nordland-clean-{ref}.npy"), np.load(desc / f"nordland-clean-{qry}.npy")
        assert ft1.shape[0] == ft2.shape[0] == CLEAN_ROWS
        for split, inds in SEQNET_INDS.items():
            views[(dataset, split)] = (ft1[inds], ft2[inds])
    return views


def test_seqnet_nordland_fixed_ranges_select_our_frames(tmp_path):
    """seqNet slices nordland-clean-<season>.npy with arange(15000) / arange(15100, 18100) /
    arange(18200, 21200): with splits on exactly those place indices, the rows it takes are our
    frames of that split, and the test positives (posDistThr = 1) are ours."""
    n = 21200
    bench = nordland_bench({"train": (0, 15000), "val": (18200, 21200), "test": (15100, 18100)})
    table = build_split(nordland_like(n), bench).table
    descriptors = descriptors_of(table, bench)
    info = write_seqnet(tmp_path, table, bench, descriptors, "cct384-test-mean")
    assert info["seqnet_fixed_ranges_match"] == {"train": True, "val": True, "test": True}
    assert list(json.loads((tmp_path / "export.json").read_text()))[0] == "consumer_can_load" and info["consumer_can_load"]
    views = seqnet_nordland_views(tmp_path, "cct384-test-mean")
    files = {"train": "nordland_train_d-40_d2-10.db", "val": "nordland_val_d-1_d2-1.db", "test": "nordland_test_d-1_d2-1.db"}
    for split, dataset in (("train", "nordland-sw"), ("val", "nordland-sw"), ("test", "nordland-sf")):
        ft1, ft2 = views[(dataset, split)]
        assert np.array_equal(ft1, descriptors[(split, "db")]) and np.array_equal(ft2, descriptors[(split, "query")])
        assert_like_reference(tmp_path / "structFiles" / files[split], REFERENCE_DIR / files[split])
        struct = seqnet_struct(tmp_path / "structFiles" / files[split])
        assert struct["dataset"] == "nordland" and struct["numDb"] == len(SEQNET_INDS[split])
        if split == "test":
            assert_positives_equal(radius_search(struct["utmDb"], struct["utmQ"], struct["posDistThr"]),
                                   role_rows(table, split, "query")["positives"])
    # spring/fall only cover the test range: every other row of the clean list is marked NaN
    spring = np.load(tmp_path / "data" / "descData" / "cct384-test-mean" / "nordland-clean-spring.npy")
    assert spring.shape == (CLEAN_ROWS, DESC_DIM) and np.isnan(spring[:15100]).all() and np.isnan(spring[18100:]).all()
    assert not np.isnan(spring[15100:18100]).any()
    assert info["rows_with_descriptors"]["spring"] == [[15100, 18100]]
    assert info["rows_without_descriptors"]["spring"] == CLEAN_ROWS - 3000
    assert info["rows_without_descriptors_in_seqnet_ranges"]["nordland-sf"]["train"] == {"spring": 15000, "fall": 15000}
    assert info["rows_without_descriptors_in_seqnet_ranges"]["nordland-sw"]["test"] == {"summer": 3000, "winter": 3000}


def test_seqnet_nordland_arrays_have_every_clean_row_whatever_frames_the_user_has(tmp_path):
    """Issue 22: a user with a few frames of three seasons (no fall at all): every season array
    still has the 27,592 rows of the clean list, so seqNet's ranges for nordland-sw and
    nordland-sf, train, val and test, all index in range; absent rows are NaN and counted."""
    places = np.arange(15090, 15130)
    rows = [r for r in nordland_like(15130, seasons=("summer", "winter", "spring")).to_pylist() if r["place_index"] >= 15090]
    bench = nordland_bench({"train": (15090, 15100), "val": (15100, 15110), "test": (15110, 15130)})
    bench = dataclasses.replace(bench, splits=bench.splits[:2] + (SplitSpec("test", ("spring",), ("fall",), index_range=(15110, 15130)),))
    result = build_split(frame_table(rows), bench)
    assert "test" in result.missing  # no fall frames: the test split cannot be built
    descriptors = descriptors_of(result.table, dataclasses.replace(bench, splits=bench.splits[:2]))
    info = write_seqnet(tmp_path, result.table, bench, descriptors, "d-mean")
    views = seqnet_nordland_views(tmp_path, "d-mean")  # every range in range, or this raises
    desc = tmp_path / "data" / "descData" / "d-mean"
    arrays = {s: np.load(desc / f"nordland-clean-{s}.npy") for s in ("summer", "winter", "spring", "fall")}
    have = {"summer": places[:20], "winter": places[:20], "spring": np.zeros(0, int), "fall": np.zeros(0, int)}
    for season, array in arrays.items():
        marked = np.isnan(array).all(axis=1)
        assert array.shape == (CLEAN_ROWS, DESC_DIM) and array.dtype == np.float32
        assert np.array_equal(np.flatnonzero(~marked), have[season]) and not np.isnan(array[~marked]).any()
        assert info["rows_without_descriptors"][season] == CLEAN_ROWS - len(have[season])
    for (dataset, split), (ft1, ft2) in views.items():
        ref, qry = SEQNET_SEASONS[dataset]
        for season, view in ((ref, ft1), (qry, ft2)):
            absent = len(SEQNET_INDS[split]) - np.isin(SEQNET_INDS[split], have[season]).sum()
            assert np.isnan(view).all(axis=1).sum() == absent
            assert info["rows_without_descriptors_in_seqnet_ranges"][dataset][split][season] == absent
    # seqNet's test range starts at 15100: our val frames of summer are its rows 15100..15109
    assert np.array_equal(views[("nordland-sw", "test")][0][:10], descriptors[("val", "db")])
    assert info["season_rows"] == CLEAN_ROWS and "NaN" in info["absent_rows"]
    # seqNet takes 3000 rows for its val and test whatever the struct file lists: export.json says
    # first that those splits do not load
    assert info["consumer_can_load"] is False and "['train', 'val']" in info["cannot_load_because"]


def test_seqnet_export_through_shards_is_atomic_and_reproducible(tmp_path):
    bench = nordland_bench({"train": (0, 10), "test": (10, 20)})
    layout, table = materialise(tmp_path, nordland_like(20), bench, images=False)
    write_shards(layout, table, bench)
    got = shard_descriptors(layout.shard_root / "nordland", table, bench)
    assert all(np.array_equal(got[k], v) for k, v in descriptors_of(table, bench).items())
    folder, info = export(layout, "seqnet", "nordland")
    assert info["descType"] == f"{MODEL_ID}-mean" and info["seqnet_fixed_ranges_match"] == {"train": False, "test": False}
    first = files_of(folder)
    assert f"data/descData/{MODEL_ID}-mean/nordland-clean-fall.npy" in first and "export.json" in first
    export(layout, "seqnet", "nordland")
    assert files_of(folder) == first
    # shards written for another order (stale) are refused rather than misaligned
    write_split_shards(layout.shards("nordland", "test"), "nordland", "test",
                       [Sample(key=f, tokens=np.zeros((1, 2), np.float16), descriptor=frame_descriptor(f), row={"role": "db"})
                        for f in reversed(role_rows(table, "test", "db")["frame_id"].tolist())])
    set_manifest_encoder(layout.shards("nordland", "test"), MODEL_ID)
    with pytest.raises(DataError, match="re-materialise the shards"):
        export(layout, "seqnet", "nordland")
    assert files_of(folder) == first


def test_seqnet_descriptor_name_comes_from_the_shards_encoder(tmp_path, capsys):
    """Issue 21 N49: the descType is the encoder recorded in the shards' manifests; shards without
    it, or splits built by different encoders, are refused naming the manifest, and the export's
    options cannot rename the descriptors (--seed / --checkpoint are not options)."""
    bench = nordland_bench({"train": (0, 10), "test": (10, 20)})
    layout, table = materialise(tmp_path, nordland_like(20), bench, images=False)
    write_shards(layout, table, bench, model_id="cct384-aaaaaaaaaaaaaaaa")
    folder, info = export(layout, "seqnet", "nordland")
    assert info["descType"] == "cct384-aaaaaaaaaaaaaaaa-mean"
    assert [p.name for p in (folder / "data" / "descData").iterdir()] == ["cct384-aaaaaaaaaaaaaaaa-mean"]
    before = files_of(folder)
    set_manifest_encoder(layout.shards("nordland", "test"), "cct384-bbbbbbbbbbbbbbbb")
    with pytest.raises(DataError, match="different encoders"):
        export(layout, "seqnet", "nordland")
    write_shards(layout, table, bench, model_id=None)
    with pytest.raises(DataError, match=r"train/manifest.json: no encoder identity .*rebuild the shards"):
        export(layout, "seqnet", "nordland")
    for option in (["--seed", "1"], ["--checkpoint", "x.pth"]):
        with pytest.raises(SystemExit) as exit_:
            export_main(["--home", str(tmp_path), "--format", "seqnet", "--benchmark", "nordland", *option])
        assert exit_.value.code == 2
        assert "read from the shards' manifests" in capsys.readouterr().err
    assert files_of(folder) == before


# ---------------------------------------------------------------- Adapt-STformer

# ---- the authors' nuScenes generation rules (ai4ce/Adapt-STFormer, commit d6dfefa,
# static/Adapt-STFormer/dataset_generation/nuscene/), re-implemented here from their scripts.

def authors_struct(frames, role):
    """3_create_nuscene_db_struct.py: ``sorted(glob("nuscene_large_<role>/*.jpg"))`` names, and for
    each name the ego pose of its timestamp (match_utm): x, y and the (w, x, y, z) rotation. Our
    frames stand in for ego_pose.json: x, y = easting, northing; the rotation is the one whose
    forward axis has the frame's heading."""
    by_name = {f"nuscene_large_{role}/{r['timestamp_us']}.jpg": r for r in frames}
    names = sorted(by_name)
    utm_ = np.array([(by_name[n]["easting"], by_name[n]["northing"]) for n in names])
    return names, utm_, [by_name[n]["heading_deg"] for n in names]


def authors_seqbounds(names):
    """4_create_seq_bounds.py analyze_timestamp_differences: sorted timestamps, a bound wherever
    the difference exceeds 1000000 us; one "start end" line per image."""
    timestamps = sorted(int(os.path.basename(n).split(".")[0]) for n in names)
    significant_gaps = np.where(np.diff(timestamps) > 1000000)[0] + 1
    lines, start = [], 0
    for idx in significant_gaps:
        lines += [(start, idx)] * (idx - start)
        start = idx
    lines += [(start, len(names))] * (len(names) - start)
    return np.array(lines, dtype=int)


def authors_direction(q):
    """5_gt_generate.py calculate_image_position_and_direction with projection_distance 0: the
    normalised ground-plane part of R @ [0, 1, 0], R from the (w, x, y, z) quaternion."""
    from scipy.spatial.transform import Rotation
    w, x, y, z = q
    forward = Rotation.from_quat([x, y, z, w]).as_matrix() @ np.array([0, 1, 0])
    return forward[:2] / np.linalg.norm(forward[:2])


def authors_positives(utmQ, utmDb, rotationQ, rotationDb, distance_threshold=10, angle_threshold=30):
    """5_gt_generate.py find_positives (projection 0): distance < threshold and angle < threshold."""
    out = []
    for q_pos, q_rot in zip(utmQ, rotationQ):
        q_v = authors_direction(q_rot)
        found = []
        for j, (db_pos, db_rot) in enumerate(zip(utmDb, rotationDb)):
            if np.linalg.norm(q_pos - db_pos) < distance_threshold:
                db_v = authors_direction(db_rot)
                angle = np.arccos(np.clip(np.dot(q_v, db_v), -1.0, 1.0)) * 180 / np.pi
                if angle < angle_threshold:
                    found.append(j)
        out.append(np.array(found, dtype=np.int64))
    return out


def test_adapt_stformer_nuscenes_follows_the_authors_generation_rules(tmp_path):
    """Issue 23: struct fields, rotations, row order and seqBounds as the authors' scripts make
    them from the same frames; their ground-truth script run on our struct gives our positives."""
    bench = nuscenes_bench()
    layout, table = materialise(tmp_path, nuscenes_like(), bench)
    folder, info = export(layout, "adapt-stformer", "nuscenes", raw_inputs=True)
    mat = loadmat(folder / "structFiles" / "nuscene_large.db")["dbStruct"][0, 0]
    assert mat.dtype.names == ("whichSet", "dbImageFns", "qImageFns", "numImages", "numQueries", "posDistThr", "posDistSqThr",
                               "dataset", "nonTrivPosDistSqThr", "utmDb", "utmQ", "rotationDb", "rotationQ")
    s, positives = adapt_positives(folder, "nuscene_large.db")
    assert (s["dataset"], s["whichSet"], s["posDistThr"], mat["posDistSqThr"].item(), s["nonTriv"]) == ("nuscene_large", "large", 10, 100, 25)
    frames = {role: [r for r in table.to_pylist() if r["role"] == ours] for role, ours in (("database", "db"), ("query", "query"))}
    rotations = {}
    for role, key, utm_key, rot_key in (("database", "db", "utmDb", "rotationDb"), ("query", "q", "utmQ", "rotationQ")):
        names, utm_, headings = authors_struct(frames[role], role)
        assert s[key] == names  # timestamp order across scenes, not our scene-by-scene order
        assert np.array_equal(s[utm_key], utm_)
        rotation = mat[rot_key]
        assert rotation.shape == (4, len(names)) and rotation.dtype == np.float64  # save_db_struct: rotation.T
        rotations[role] = rotation.T
        # the ego frame's forward axis (+x) points along the frame's compass heading
        from scipy.spatial.transform import Rotation
        ego_x = Rotation.from_quat(rotation.T[:, [1, 2, 3, 0]]).apply([1.0, 0.0, 0.0])
        h = np.radians(headings)
        assert np.allclose(ego_x[:, :2], np.stack([np.sin(h), np.cos(h)], axis=1)) and np.allclose(ego_x[:, 2], 0)
        bounds = np.loadtxt(folder / "structFiles" / "seqBoundsFiles" / f"nuscene_large_{role}_seqbounds.txt", int)
        assert np.array_equal(bounds, authors_seqbounds(names))
        raw = np.load(folder / "data" / f"nuscene_{role}_raw_large_384.npy", mmap_mode="r")
        by_ts = {f"nuscene_large_{role}/{r['timestamp_us']}.jpg": r for r in frames[role]}
        for i in (0, len(names) - 1):
            assert np.allclose(raw[i], normalised(layout.data_root / by_ts[names[i]]["image_path"]), atol=1e-5)
    # database: 0003 and 0004 (0.5 s apart) are one sequence, 0001 another; queries: 0101 + 0102
    # (exactly 1 s apart) one, 0103 (1 s + 1 us later) another
    db_bounds = np.loadtxt(folder / "structFiles" / "seqBoundsFiles" / "nuscene_large_database_seqbounds.txt", int)
    q_bounds = np.loadtxt(folder / "structFiles" / "seqBoundsFiles" / "nuscene_large_query_seqbounds.txt", int)
    assert sorted(set(map(tuple, db_bounds))) == [(0, 12), (12, 18)] and sorted(set(map(tuple, q_bounds))) == [(0, 12), (12, 18)]
    assert info["seqbounds"]["database"] == {"scenes": 3, "sequences": 2, "sequences_spanning_scenes": 1, "shortest_sequence": 6}
    # our own split keeps one run per scene
    assert len({(r["seq_start"], r["seq_end"]) for r in frames["database"]}) == 3
    # the authors' ground-truth script on our struct file reproduces the positives we ship
    authors = authors_positives(s["utmQ"], s["utmDb"], rotations["query"], rotations["database"])
    assert isinstance(positives, np.ndarray) and positives.dtype == object and all(p.dtype == np.int64 for p in positives)
    assert_positives_equal(positives, authors)
    assert sum(map(len, positives)) > 0
    # ... which are ours, renumbered into the authors' row order
    db_rows, q_rows = role_rows(table, "test", "db"), role_rows(table, "test", "query")
    name_of_db = [f"nuscene_large_database/{t}.jpg" for t in db_rows["timestamp_us"]]
    ours = {f"nuscene_large_query/{t}.jpg": sorted(name_of_db[i] for i in p) for t, p in zip(q_rows["timestamp_us"], q_rows["positives"])}
    assert [sorted(s["db"][i] for i in p) for p in positives] == [ours[n] for n in s["q"]]
    # the heading rule matters here: a radius search alone would find more
    assert sum(map(len, radius_search(s["utmDb"], s["utmQ"], s["posDistThr"]))) > sum(map(len, positives))
    assert info["positive_mismatches"] == {"test": 0} and info["consumer_can_load"] is True
    assert list(json.loads((folder / "export.json").read_text()))[0] == "consumer_can_load"
    assert "/scratch/yl9727/nuscenes/" in info["edit"]


def normalised(path):
    """Adapt-STformer's base_transform: Resize([384, 384]), ToTensor, Normalize(ImageNet)."""
    image = Image.open(path).convert("RGB").resize((384, 384), Image.BILINEAR)
    return ((np.asarray(image, np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)


def test_adapt_stformer_nordland_season_arrays_by_place_index(tmp_path):
    """Issue 22: get_datasets.py (ai4ce/Adapt-STFormer d6dfefa) for nordland-sw stacks summer over
    spring and winter over fall (np.vstack), trainInds = arange(0, 15000), testInds = len(summer) +
    arange(15100, 18100); nordland-sf the other way round. Every season array has the 27,592 clean
    rows, so those indices are in range whatever frames the user has; row p of a season is the
    frame at place p, and rows without a frame are never written (sparse zeros)."""
    bench = nordland_bench({"train": (0, 3), "test": (3, 6)})
    layout, table = materialise(tmp_path, nordland_like(6), bench)
    folder, info = export(layout, "adapt-stformer", "nordland", raw_inputs=True)
    assert sorted(p.name for p in (folder / "structFiles").iterdir()) == ["nordland_test_d-1_d2-1.db", "nordland_train_d-40_d2-10.db"]
    seasons = ("fall", "spring", "summer", "winter")
    assert info["raw_384_arrays"] == [f"nordland_raw_{s}_384.npy" for s in seasons]
    arrays = {s: np.load(folder / "data" / f"nordland_raw_{s}_384.npy", mmap_mode="r") for s in seasons}
    assert all(a.shape == (CLEAN_ROWS, 3, 384, 384) and a.dtype == np.float32 for a in arrays.values())
    for dataset, (train_ref, train_qry, val_ref, val_qry) in {"nordland-sw": ("summer", "winter", "spring", "fall"),
                                                               "nordland-sf": ("spring", "fall", "summer", "winter")}.items():
        train_len = arrays[train_ref].shape[0]
        train_inds, test_inds = np.arange(0, 15000), train_len + np.arange(15100, 18100)
        for ref, qry in ((train_ref, val_ref), (train_qry, val_qry)):  # ft1 = vstack([train_ref, val_ref]), ft2 likewise
            stacked = arrays[ref].shape[0] + arrays[qry].shape[0]
            assert train_inds.max() < stacked and test_inds.max() < stacked
    # nordland-sw's test rows of the stacked database are spring's rows: our spring frame at place p
    # is stacked row len(summer) + p
    test_db = role_rows(table, "test", "db")
    for place, image_path in zip(test_db["place_index"], test_db["image_path"]):
        row = arrays["summer"].shape[0] + place
        assert np.allclose(arrays["spring"][row - arrays["summer"].shape[0]], normalised(layout.data_root / image_path), atol=1e-5)
    assert not arrays["spring"][:3].any() and not arrays["spring"][6:7].any() and not arrays["spring"][-1].any()
    frame_bytes = 3 * 384 * 384 * 4
    for season, array in arrays.items():
        path = folder / "data" / f"nordland_raw_{season}_384.npy"
        assert path.stat().st_size >= CLEAN_ROWS * frame_bytes
        assert path.stat().st_blocks * 512 < 8 * frame_bytes  # sparse: 3 frames written, the rest holes
    assert info["raw_rows"]["nordland_raw_spring_384.npy"] == {"rows": CLEAN_ROWS, "rows_written": 3}
    assert info["sparse_files"] == [f"nordland_raw_{s}_384.npy" for s in seasons] and "--sparse" in info["sparse_note"]
    needs = info["loader_needs"]
    assert needs["disk_apparent_gib"] == round(4 * CLEAN_ROWS * frame_bytes / 2**30, 2)
    assert needs["disk_allocated_gib"] == round(12 * frame_bytes / 2**30, 2)
    # np.vstack reads every season into memory; training then holds its fixed ranges' rows (15000 + 15000)
    # twice more and the test ranges' (3000 + 3000) once more
    assert needs["memory_gib"] == round((4 * CLEAN_ROWS + 2 * 30000 + 6000) * frame_bytes / 2**30, 2)
    # its loader takes 15000 / 3000 rows by the fixed ranges whatever the struct lists: said first
    assert info["consumer_can_load"] is False and "['test', 'train']" in info["cannot_load_because"]
    assert "{'test': [3, 3], 'train': [3, 3]} database/query frames" in info["cannot_load_because"]  # fewer than 3000 / 15000
    assert "IndexError" in info["cannot_load_because"]
    assert "raw_inputs" not in info["cannot_load_because"]


def test_adapt_stformer_oxford_names_and_radius_positives(tmp_path):
    bench = oxford_bench("oxford_easy")
    layout, table = materialise(tmp_path, robotcar_like(), bench, images=False)
    folder, info = export(layout, "adapt-stformer", "oxford_easy")
    names = sorted(p.name for p in (folder / "structFiles").iterdir())
    pair = "2015-03-17-11-08-44-2014-12-16-18-44-24"
    assert names == [f"oxford2_{pair}_test.db", f"oxford2_{pair}_train.db"]
    for split in ("train", "test"):
        s, positives = adapt_positives(folder, f"oxford2_{pair}_{split}.db")
        assert s["dataset"] == f"oxford2_{pair}" and s["whichSet"] == split
        assert_positives_equal(positives, role_rows(table, split, "query")["positives"])
    assert info["raw_384_arrays"] == [] and not (folder / "data").exists()


def test_adapt_stformer_without_raw_inputs_says_first_that_it_cannot_load(tmp_path):
    """Issue 22: its loader opens the raw_384 arrays on every path; without them export.json says
    so at the top, how to add them and what they and the loader need."""
    bench = oxford_bench("oxford_easy")
    layout, table = materialise(tmp_path, robotcar_like(), bench, images=False)
    folder, info = export(layout, "adapt-stformer", "oxford_easy")
    text = (folder / "export.json").read_text()
    keys = list(json.loads(text))
    assert keys[:3] == ["consumer_can_load", "cannot_load_because", "to_make_it_loadable"]
    assert json.loads(text)["consumer_can_load"] is False
    assert "--raw-inputs" in info["to_make_it_loadable"] and "raw_inputs: true" in info["to_make_it_loadable"]
    rows = sum(len(role_rows(table, s, r)) for s in ("train", "test") for r in ("db", "query"))
    assert info["loader_needs"]["disk_apparent_gib"] == round(rows * 3 * 384 * 384 * 4 / 2**30, 2)
    code = export_main(["--home", str(tmp_path), "--format", "adapt-stformer", "--benchmark", "oxford_easy"])
    assert code == 0


# ---- the authors' loader itself (ai4ce/Adapt-STFormer: get_datasets.py get_dataset at d6dfefa,
# datasets.py WholeDatasetFromStruct / QueryDatasetFromStruct / getSeqInds at 76c37b6, test.py at
# d6dfefa), re-implemented here step by step. Their unchanged code was run on the default synthetic
# export (README "Use with ... Adapt-STFormer"); these readers keep what that run checked.

# get_datasets.py: the struct files and raw_384 arrays it opens, by --dataset
ADAPT_OXFORD_EASY = {"train": "oxford2_2014-12-16-09-14-09-2014-12-17-18-18-43_train.db",
                     "test": "oxford2_2014-11-18-13-20-12-2014-12-16-18-44-24_test.db"}
ADAPT_RAW = {"oxford-easy": "oxford2_raw_{split}_{role}_384.npy", "oxford-hard": "oxford_hard_{split}_raw_{role}_384.npy"}
ADAPT_SEQ_L = 5  # svpr/utils/utils.py build_svpr_parser --seqL default, and every sbatch file
# the four traversals of the Adapt-STformer Oxford splits (oxford_easy / oxford_hard in seqvpr/splits.py)
OXFORD_RUNS = {"2014-12-16-09-14-09": 1418721249000000, "2014-12-17-18-18-43": 1418840323000000,
               "2014-11-18-13-20-12": 1416316812000000, "2014-12-16-18-44-24": 1418755480528820}


def oxford_four_runs(n):
    """The four runs of the default Oxford benchmarks along one line, 2 m apart, 4 frames a second."""
    rows = [frame("robotcar", run, "day", i, t + 250_000 * i, 620000.0 + 0.3 * k, 5735000.0 + 2.0 * i + 0.2 * k)
            for k, (run, t) in enumerate(OXFORD_RUNS.items()) for i in range(n)]
    return frame_table(rows)


def adapt_get_seq_inds(idx, seqL, maxNum, minNum=0):
    """datasets.py getSeqInds as written there: a window of seqL around idx inside [minNum, maxNum);
    one that meets minNum is padded with the frames after it, even past maxNum."""
    seqInds = np.arange(max(minNum, idx - seqL // 2), min(idx + seqL - seqL // 2, maxNum), 1)
    lenDiff = seqL - len(seqInds)
    if seqInds[0] == minNum:
        seqInds = np.concatenate([seqInds, np.arange(seqInds[-1] + 1, seqInds[-1] + 1 + lenDiff, 1)])
    elif lenDiff > 0 and seqInds[-1] in range(maxNum - 1, maxNum):
        seqInds = np.concatenate([np.arange(seqInds[0] - lenDiff, seqInds[0], 1), seqInds])
    return seqInds


def adapt_get_dataset(data: Path, structs: Path, dataset):
    """get_datasets.py get_dataset, descType raw_384 (its hard-coded folders -> ``data``): returns the
    struct file per split, ft1 / ft2 (np.vstack of the database / query arrays), the index lists per
    split ([db, q]) and the seqBounds ([db, q], nuscene only)."""
    if dataset == "nuscene":
        ft = [np.load(data / f"nuscene_{role}_raw_large_384.npy", mmap_mode="r") for role in ("database", "query")]
        bounds = [np.loadtxt(structs / "seqBoundsFiles" / f"nuscene_large_{role}_seqbounds.txt", int)
                  for role in ("database", "query")]
        inds = [np.arange(len(ft[0])), np.arange(len(ft[1]))]
        return ({"train": "nuscene_large.db", "test": "nuscene_large.db"}, np.vstack([ft[0]]), np.vstack([ft[1]]),
                {"train": inds, "test": inds}, [np.vstack([bounds[0]]), np.vstack([bounds[1]])])
    names = ADAPT_OXFORD_EASY if dataset == "oxford-easy" else {s: f"oxford_hard_{s}.db" for s in ("train", "test")}
    ft = {(s, r): np.load(data / ADAPT_RAW[dataset].format(split=s, role=r), mmap_mode="r")
          for s in ("train", "test") for r in ("database", "query")}
    n = {k: len(v) for k, v in ft.items()}
    inds = {"train": [np.arange(n["train", "database"]), np.arange(n["train", "query"])],
            "test": [np.arange(n["train", "database"], n["train", "database"] + n["test", "database"]),
                     np.arange(n["train", "query"], n["train", "query"] + n["test", "query"])]}
    return (names, np.vstack([ft["train", "database"], ft["test", "database"]]),
            np.vstack([ft["train", "query"], ft["test", "query"]]), inds, None)


def adapt_whole_set(struct_path, ft1, ft2, inds, seq_bounds, seqL=ADAPT_SEQ_L):
    """WholeDatasetFromStruct (onlyDB False, no seqL_filterData) and test.py: images = database rows
    then query rows; seqBounds per row (whole role without a file; with one, the query bounds shifted
    by the database's last end); the window of every row; test.py splits the features at numDb and
    takes gt = get_positives()[:numQ]. Returns (struct, number of images, windows, gt)."""
    s = seqnet_struct(struct_path)
    n_db, n = len(inds[0]), len(inds[0]) + len(inds[1])
    if seq_bounds is None:
        bounds = np.array([[0, n_db]] * n_db + [[n_db, n]] * len(inds[1]))
    else:
        db_bounds = seq_bounds[0][inds[0]]
        bounds = np.vstack([db_bounds, db_bounds[-1, -1] + seq_bounds[1][inds[1]]])
    windows = [adapt_get_seq_inds(i, seqL, hi, minNum=lo) for i, (lo, hi) in enumerate(bounds)]
    _, gt = adapt_positives(struct_path.parent.parent, struct_path.name)
    return s, n, bounds, windows, list(gt)[: len(s["utmQ"])]


def assert_adapt_loads(folder: Path, dataset, data_root: Path, ours_by_split):
    """Every step the authors' loader takes on our export stays in range and reads our frames."""
    names, ft1, ft2, inds, seq_bounds = adapt_get_dataset(folder / "data", folder / "structFiles", dataset)
    assert ft1.shape[1:] == ft2.shape[1:] == (3, 384, 384) and ft1.dtype == np.float32
    for split, struct_name in names.items():
        s, n, bounds, windows, gt = adapt_whole_set(folder / "structFiles" / struct_name, ft1, ft2, inds[split], seq_bounds)
        # test.py: dbFeat[:numDb] / dbFeat[numDb:] must be the database / query rows, one gt per query row
        assert (s["numDb"], s["numQ"]) == (len(inds[split][0]), len(inds[split][1])) == (len(s["utmDb"]), len(s["utmQ"]))
        assert len(gt) == n - s["numDb"] and all(len(g) == 0 or np.max(g) < s["numDb"] for g in gt)
        for i, (window, (lo, hi)) in enumerate(zip(windows, bounds)):  # no window leaves its sequence
            assert len(window) == ADAPT_SEQ_L and lo <= window.min() and window.max() < hi <= n, (split, i)
        # QueryDatasetFromStruct: its own per-role bounds, radius searches on the struct's UTM
        knn = NearestNeighbors(n_jobs=1).fit(s["utmDb"])
        potential = knn.radius_neighbors(s["utmQ"], radius=s["posDistThr"], return_distance=False)
        assert all(len(np.setdiff1d(np.arange(s["numDb"]), p)) > 0 for p in potential)  # np.random.choice needs negatives
        nontrivial = knn.radius_neighbors(s["utmQ"], radius=s["nonTriv"] ** 0.5, return_distance=False)
        assert sum(len(p) > 0 for p in nontrivial) > 0
        # the rows it reads are our frames: database row i and query row j of the split, in struct order
        db_rows, q_rows = ours_by_split[split]
        first_last = ([0, s["numDb"] - 1], [0, s["numQ"] - 1])
        for k, rows in enumerate((db_rows, q_rows)):
            for i in first_last[k]:
                ft = (ft1, ft2)[k][inds[split][k][i]]
                assert np.allclose(ft, normalised(data_root / rows.iloc[i]["image_path"]), atol=1e-5)
        assert_positives_equal(gt, q_rows["positives"])


def test_adapt_stformer_default_oxford_loads_in_the_authors_loader(tmp_path):
    """Issue 22: the default oxford_easy / oxford_hard exports under the names get_datasets.py
    hard-codes, read by its Oxford branches and WholeDatasetFromStruct as their code does."""
    # long enough that every query has database frames beyond posDistThr (QueryDatasetFromStruct
    # np.random.choice()s negatives among them): oxford_hard keeps sections 1-2 / 3-4 of 6
    for name, dataset, frames in (("oxford_easy", "oxford-easy", oxford_four_runs(14)), ("oxford_hard", "oxford-hard", oxford_four_runs(36))):
        home = tmp_path / name
        bench = dataclasses.replace(BENCHMARKS[name], rules=dataclasses.replace(BENCHMARKS[name].rules, negatives_per_query=2))
        layout, table = materialise(home, frames, bench)
        folder, info = export(layout, "adapt-stformer", name, raw_inputs=True)
        assert info["consumer_can_load"] is True and "cannot_load_because" not in info
        expected = ADAPT_OXFORD_EASY if name == "oxford_easy" else {s: f"oxford_hard_{s}.db" for s in ("train", "test")}
        assert info["struct_files"] == [expected["train"], expected["test"]]
        ours = {split: (role_rows(table, split, "db"), role_rows(table, split, "query")) for split in ("train", "test")}
        assert_adapt_loads(folder, dataset, layout.data_root, ours)
        # training holds every array (np.vstack), the training split twice more, the test split once more
        rows = {split: len(db) + len(q) for split, (db, q) in ours.items()}
        assert info["loader_needs"]["memory_gib"] == round((3 * rows["train"] + 2 * rows["test"]) * 3 * 384 * 384 * 4 / 2**30, 2)
        assert "symbolic link" in info["edit"]


def test_adapt_stformer_nuscenes_loads_and_short_sequences_are_refused(tmp_path):
    """Issue 22: nuscene_large as get_datasets.py / WholeDatasetFromStruct read it (seqBounds from
    the files, query bounds shifted by the database's last end): every window stays in its
    sequence. A sequence shorter than --seqL 5 would not: getSeqInds pads it with the next
    sequence's frames (past the array for the last one), so export.json says it cannot load."""
    bench = nuscenes_bench()
    layout, table = materialise(tmp_path / "ok", nuscenes_like(), bench)
    folder, info = export(layout, "adapt-stformer", "nuscenes", raw_inputs=True)
    assert info["consumer_can_load"] is True
    struct = seqnet_struct(folder / "structFiles" / "nuscene_large.db")
    by_name = {role: {f"nuscene_large_{name}/{t}.jpg": i for i, t in enumerate(rows["timestamp_us"])}
               for role, name, rows in (("db", "database", role_rows(table, "test", "db")), ("query", "query", role_rows(table, "test", "query")))}
    # ours in the authors' row order (the export renumbers positives into it: compare by name)
    db_rows = role_rows(table, "test", "db").iloc[[by_name["db"][n] for n in struct["db"]]].reset_index(drop=True)
    q_rows = role_rows(table, "test", "query").iloc[[by_name["query"][n] for n in struct["q"]]].reset_index(drop=True)
    db_index = np.empty(len(db_rows), np.int64)
    db_index[[by_name["db"][n] for n in struct["db"]]] = np.arange(len(db_rows))
    q_rows["positives"] = [db_index[np.asarray(p, np.int64)] for p in q_rows["positives"]]
    assert_adapt_loads(folder, "nuscene", layout.data_root, {"train": (db_rows, q_rows), "test": (db_rows, q_rows)})
    # the last query scene cut to 3 frames: the authors' window of its first frame runs past the array
    short = frame_table([r for r in nuscenes_like().to_pylist() if not (r["traversal"] == "scene-0103" and r["frame_index"] >= 3)])
    layout, _ = materialise(tmp_path / "short", short, bench, images=False)
    folder, info = export(layout, "adapt-stformer", "nuscenes")
    assert info["seqbounds"]["query"]["shortest_sequence"] == 3 and info["consumer_can_load"] is False
    assert "shorter than its --seqL 5" in info["cannot_load_because"]
    q_bounds = np.loadtxt(folder / "structFiles" / "seqBoundsFiles" / "nuscene_large_query_seqbounds.txt", int)
    lo, hi = q_bounds[-1]
    assert (lo, hi) == (12, 15) and adapt_get_seq_inds(lo, ADAPT_SEQ_L, hi, minNum=lo).max() == 16 >= len(q_bounds)


# ---------------------------------------------------------------- VPR-datasets layout

NAME = re.compile(r"^@(?P<east>[-\d.]+)@(?P<north>[-\d.]+)@(?P<zone>\d\d)@(?P<letter>[A-Z])@(?P<lat>[-\d.]+)@(?P<lon>[-\d.]+)"
                  r"@(?P<pano>\d+)@@(?P<heading>\d{3})@@@@(?P<ts>\d{8}_\d{6})@(?P<note>[^@]+)@\.jpg$")


def test_gsv_names_positives_and_traversal_order(tmp_path):
    bench = oxford_bench("oxford_easy")
    layout, table = materialise(tmp_path, robotcar_like(), bench)
    folder, info = export(layout, "gsv", "oxford_easy")
    assert info["positive_dist_threshold"] == {"train": 5, "test": 5}
    threshold = 5
    for split in ("train", "test"):
        db_paths = gsv_folder(folder / "images" / split / "database")
        q_paths = gsv_folder(folder / "images" / split / "queries")
        db, q = role_rows(table, split, "db"), role_rows(table, split, "query")
        assert len(db_paths) == len(db) and len(q_paths) == len(q)
        fields = [NAME.match(os.path.basename(p)) for p in db_paths + q_paths]
        assert all(fields)
        for m in fields:
            assert float(m["lat"]) == pytest.approx(51.6, abs=0.2) and len(m["east"]) == len(m["north"]) == 10
            assert m["zone"] == "30" and m["letter"] == "U" and len(m["lat"]) == 9 and len(m["lon"]) == 10
        # map the consumer's (sorted) indices back to our order through (note, pano_id)
        def our_order(paths, rows):
            key = {(t, str(ts)): o for t, ts, o in zip(rows["traversal"], rows["timestamp_us"], rows["order"])}
            return np.array([key[(NAME.match(os.path.basename(p))["note"], NAME.match(os.path.basename(p))["pano"])] for p in paths])
        db_order, q_order = our_order(db_paths, db), our_order(q_paths, q)
        found = radius_search(gsv_utms(db_paths), gsv_utms(q_paths), threshold)
        derived = [None] * len(q)
        for qi, hits in enumerate(found):
            derived[q_order[qi]] = db_order[hits]
        assert_positives_equal(derived, q["positives"])
        # traversal order: group by note, sort by the microsecond pano_id (timestamp has seconds)
        names = [NAME.match(os.path.basename(p)) for p in q_paths]
        by_time = sorted(range(len(names)), key=lambda i: (names[i]["note"], names[i]["ts"], int(names[i]["pano"])))
        assert np.array_equal(q_order[by_time], np.arange(len(q)))
        assert len({n["ts"] for n in names}) < len(names)  # seconds alone could not order them
        image = Image.open(db_paths[0])
        assert image.format == "JPEG" and image.size == (32, 24)
    assert info["positive_mismatches"] == {"train": 0, "test": 0}


def test_gsv_nordland_follows_download_nordland(tmp_path):
    """Issue 21 N68: each split gets the threshold of its own radius (train 40 frames, test 1), and
    VPR-methods-evaluation's radius search on the names with it gives our positives in both."""
    bench = nordland_bench({"train": (0, 100), "test": (100, 120)})
    bench = dataclasses.replace(bench, splits=(dataclasses.replace(bench.splits[0], radius=40, nontrivial_radius=10), bench.splits[1]))
    layout, table = materialise(tmp_path, nordland_like(120), bench)
    folder, info = export(layout, "gsv", "nordland")
    paths = gsv_folder(folder / "images" / "test" / "queries")
    assert os.path.basename(paths[0]) == f"@0@{100 * 25 / 10.5:07.1f}@@@@@100@@@@@@@@.jpg"
    thresholds = info["positive_dist_threshold"]
    # download_nordland.py puts 10.5 frames in 25 m: a whole number of metres between r and r + 1 frames
    assert thresholds == {"train": 96, "test": 3}
    assert info["positive_mismatches"] == {"train": 0, "test": 0}
    assert [c.split("--positive_dist_threshold=")[1] for c in info["commands"]] == ["96", "3"]
    frame_of = lambda ps: np.array([int(os.path.basename(p).split("@")[7]) for p in ps])
    for split in ("train", "test"):
        q_paths = gsv_folder(folder / "images" / split / "queries")
        db_paths = gsv_folder(folder / "images" / split / "database")
        found = radius_search(gsv_utms(db_paths), gsv_utms(q_paths), thresholds[split])
        q, db = role_rows(table, split, "query"), role_rows(table, split, "db")
        place_to_db_order = dict(zip(db["place_index"], db["order"]))
        db_place = frame_of(db_paths)
        derived = {int(qp): np.array([place_to_db_order[p] for p in db_place[h]]) for qp, h in zip(frame_of(q_paths), found)}
        assert_positives_equal([derived[p] for p in q["place_index"]], q["positives"])
    assert max(len(p) for p in role_rows(table, "train", "query")["positives"]) == 81


def test_killed_export_leaves_no_complete_folder_and_rerun_matches(tmp_path):
    bench = oxford_bench("oxford_easy")
    layout, _ = materialise(tmp_path, robotcar_like(150), bench)
    folder = layout.exports("gsv", "oxford_easy")
    argv = ["--home", str(tmp_path), "--format", "gsv", "--benchmark", "oxford_easy"]
    proc = subprocess.Popen([sys.executable, "-c", f"from seqvpr.exports.cli import main; main({argv!r})"], cwd=ROOT)
    deadline = time.time() + 120
    while not list(folder.parent.glob(".oxford_easy.*.partial")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not folder.exists()
    assert list(folder.parent.glob(".oxford_easy.*.partial"))  # the half-written folder, under a temporary name
    assert export_main(argv) == 0  # holds the home lock, so it sweeps the dead export's folder
    assert not list(folder.parent.glob(".oxford_easy.*.partial"))
    first = files_of(folder)
    assert json.loads(first["export.json"])["positive_mismatches"] == {"train": 0, "test": 0}
    export(layout, "gsv", "oxford_easy")
    assert files_of(folder) == first


def test_export_waits_for_the_home_lock_and_never_deletes_a_live_export(tmp_path):
    """Issue 21 N50: a second export used to delete the first one's temporary folder. `export`
    leaves other temporaries alone; `seqvpr export` waits, saying so, while another run or
    export holds the home, and sweeps temporaries only once it holds the lock."""
    bench = oxford_bench("oxford_easy")
    layout, _ = materialise(tmp_path, robotcar_like(), bench, images=False)
    live = layout.exports("adapt-stformer", "oxford_easy").parent / ".oxford_easy.live.partial"
    live.mkdir(parents=True)
    (live / "export.json").write_text("{}")
    export(layout, "adapt-stformer", "oxford_easy")
    assert (live / "export.json").exists()
    argv = ["--home", str(tmp_path), "--format", "adapt-stformer", "--benchmark", "oxford_easy"]
    with home_lock(tmp_path):
        proc = subprocess.Popen([sys.executable, "-c", f"import sys; from seqvpr.exports.cli import main; sys.exit(main({argv!r}))"],
                                cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        message = ""
        while "waiting" not in message and proc.poll() is None:  # skip any import warnings before it
            message = proc.stderr.readline()
        assert "waiting for it to finish" in message and str(tmp_path) in message
        time.sleep(0.5)
        assert proc.poll() is None and (live / "export.json").exists()
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "adapt-stformer/oxford_easy" in out
    assert not live.exists()  # swept once the holder had gone


def test_export_says_why_nothing_was_done(tmp_path, capsys):
    """Issue 21 N47, N48: a missing home, a home that is a file, a home without split tables and a
    format that cannot express the benchmark each give a message and a non-zero status, and
    create nothing."""
    missing = tmp_path / "typo-home"
    assert export_main(["--home", str(missing)]) == 2
    assert "no such folder" in capsys.readouterr().err and not missing.exists()
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    assert export_main(["--home", str(a_file)]) == 2
    assert "not a folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export_main(["--home", str(empty)]) == 1
    assert "nothing exported" in capsys.readouterr().err and list(empty.iterdir()) == []
    home = tmp_path / "home"
    materialise(home, robotcar_like(), oxford_bench("oxford_easy"), images=False)
    assert export_main(["--home", str(home), "--format", "seqnet", "--benchmark", "oxford_easy"]) == 1
    err = capsys.readouterr().err
    assert "seqnet cannot express benchmark oxford_easy (it can: nordland, oxford_seqnet)" in err and "nothing exported" in err
    assert export_main(["--home", str(home), "--format", "gsv", "--benchmark", "nuscenes"]) == 1
    assert "no split table" in capsys.readouterr().err
    assert not (home / "exports").exists()


def test_export_under_a_path_with_an_at_sign(tmp_path, capsys):
    """Issue 21 N58: only VPR-methods-evaluation splits paths on '@' (whole paths: test_dataset.py);
    the other exports are written as usual, the gsv one with a warning and how to use it."""
    home = tmp_path / "user@lab"
    materialise(home, robotcar_like(), oxford_bench("oxford_easy"))
    assert export_main(["--home", str(home), "--format", "gsv", "adapt-stformer", "--benchmark", "oxford_easy"]) == 0
    out = capsys.readouterr().out
    gsv = json.loads((home / "exports" / "gsv" / "oxford_easy" / "export.json").read_text())
    assert "contains '@'" in gsv["path_warning"] and "ln -s" in gsv["path_warning"] and "contains '@'" in out
    assert "path_warning" not in json.loads((home / "exports" / "adapt-stformer" / "oxford_easy" / "export.json").read_text())
    link = tmp_path / "export"
    link.symlink_to(home / "exports" / "gsv" / "oxford_easy")
    db_paths = gsv_folder(link / "images" / "test" / "database")
    assert len(gsv_utms(db_paths)) == len(db_paths)  # through the link, the names parse as the consumer reads them


def test_failed_export_keeps_the_previous_one(tmp_path):
    bench = oxford_bench("oxford_easy")
    layout, table = materialise(tmp_path, robotcar_like(), bench)
    folder, _ = export(layout, "gsv", "oxford_easy")
    before = files_of(folder)
    (layout.data_root / role_rows(table, "test", "query")["image_path"].iloc[-1]).write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot decode"):
        export(layout, "gsv", "oxford_easy")
    assert files_of(folder) == before and not list(folder.parent.glob(".oxford_easy.*.partial"))

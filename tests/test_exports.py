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
from seqvpr.datasets.frames import frame_table, save_frame
from seqvpr.embed.embed import global_descriptor
from seqvpr.errors import DataError
from seqvpr.exports import export
from seqvpr.exports.common import DESCRIPTOR_POOLING, shard_descriptors
from seqvpr.exports.seqnet import write_seqnet
from seqvpr.layout import Layout
from seqvpr.pairs import PairRules
from seqvpr.shards import Sample, write_split_shards
from seqvpr.splits import BENCHMARKS, Benchmark, SplitSpec, build_split, config_fields, role_rows, write_split

from conftest import REFERENCE_DIR

ROOT = Path(__file__).resolve().parents[1]
DESC_DIM = 4
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


# ---------------------------------------------------------------- hand-made inputs

def frame(dataset, traversal, condition, index, t_us, easting, northing, heading=0.0, place=-1, stem=None, latlon=None):
    lat, lon = latlon or utm.to_latlon(easting, northing, 30, "U")
    stem = stem or str(t_us)
    return dict(frame_id=f"{traversal}_{stem}", dataset=dataset, location="test", traversal=traversal, condition=condition,
                frame_index=index, timestamp_us=t_us, image_path=f"frames/{dataset}/{traversal}/{stem}.png",
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


def nuscenes_like():
    """Two day scenes (database) and a night scene (queries), headings varying along the way."""
    rows, t = [], 1532402927612460
    for scene, condition, offset, heading0 in (("scene-0001", "day", 0.0, 0.0), ("scene-0002", "day", 40.0, 10.0),
                                               ("scene-0101", "night", 0.4, 5.0)):
        for i in range(6):
            rows.append(frame("nuscenes", scene, condition, i, t, 620000.0 + offset + 3.0 * i, 5735000.0,
                              heading=(heading0 + 12.0 * i) % 360))
            t += 500000
        t += 10_000_000
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


def write_shards(layout, table, bench):
    for split in SPLITS:
        if bench.split(split) is None:
            continue
        rows = [r for role in ("db", "query") for r in role_rows(table, split, role).to_dict("records")]
        samples = [Sample(key=r["frame_id"], tokens=np.zeros((1, 2), np.float16), descriptor=frame_descriptor(r["frame_id"]),
                          row={"role": r["role"], "order": int(r["order"])}) for r in rows]
        write_split_shards(layout.shards(bench.name, split), bench.name, split, samples)


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
    assert info["seqnet_hardcoded_runs_match"] and info["splits_seqnet_cannot_read"] == []
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
    desc = tmp_path / "data" / "descData" / "cct384-test-mean"
    fixed = {"train": np.arange(15000), "test": np.arange(15100, 18100), "val": np.arange(18200, 21200)}
    files = {"train": "nordland_train_d-40_d2-10.db", "val": "nordland_val_d-1_d2-1.db", "test": "nordland_test_d-1_d2-1.db"}
    for split, (ref, qry) in (("train", ("summer", "winter")), ("val", ("summer", "winter")), ("test", ("spring", "fall"))):
        ft1, ft2 = np.load(desc / f"nordland-clean-{ref}.npy"), np.load(desc / f"nordland-clean-{qry}.npy")
        assert np.array_equal(ft1[fixed[split]], descriptors[(split, "db")])
        assert np.array_equal(ft2[fixed[split]], descriptors[(split, "query")])
        assert_like_reference(tmp_path / "structFiles" / files[split], REFERENCE_DIR / files[split])
        struct = seqnet_struct(tmp_path / "structFiles" / files[split])
        assert struct["dataset"] == "nordland" and struct["numDb"] == len(fixed[split])
        if split == "test":
            assert_positives_equal(radius_search(struct["utmDb"], struct["utmQ"], struct["posDistThr"]),
                                   role_rows(table, split, "query")["positives"])
    # spring/fall only cover the test range: the rows before it hold no descriptor
    spring = np.load(desc / "nordland-clean-spring.npy")
    assert spring.shape == (18100, DESC_DIM) and np.isnan(spring[:15100]).all()
    assert info["rows_with_descriptors"]["spring"] == [[15100, 18100]]


def test_seqnet_export_through_shards_is_atomic_and_reproducible(tmp_path):
    bench = nordland_bench({"train": (0, 10), "test": (10, 20)})
    layout, table = materialise(tmp_path, nordland_like(20), bench, images=False)
    write_shards(layout, table, bench)
    got = shard_descriptors(layout.shard_root / "nordland", table, bench)
    assert all(np.array_equal(got[k], v) for k, v in descriptors_of(table, bench).items())
    folder, info = export(layout, "seqnet", "nordland", "cct384-abc")
    assert info["descType"] == "cct384-abc-mean" and info["seqnet_fixed_ranges_match"] == {"train": False, "test": False}
    first = files_of(folder)
    assert "data/descData/cct384-abc-mean/nordland-clean-fall.npy" in first and "export.json" in first
    export(layout, "seqnet", "nordland", "cct384-abc")
    assert files_of(folder) == first
    # shards written for another order (stale) are refused rather than misaligned
    write_split_shards(layout.shards("nordland", "test"), "nordland", "test",
                       [Sample(key=f, tokens=np.zeros((1, 2), np.float16), descriptor=frame_descriptor(f), row={"role": "db"})
                        for f in reversed(role_rows(table, "test", "db")["frame_id"].tolist())])
    with pytest.raises(DataError, match="re-materialise the shards"):
        export(layout, "seqnet", "nordland", "cct384-abc")
    assert files_of(folder) == first


# ---------------------------------------------------------------- Adapt-STformer

def test_adapt_stformer_nuscenes_pickle_seqbounds_and_raw_inputs(tmp_path):
    bench = nuscenes_bench()
    layout, table = materialise(tmp_path, nuscenes_like(), bench)
    folder, info = export(layout, "adapt-stformer", "nuscenes", raw_inputs=True)
    s, positives = adapt_positives(folder, "nuscene_large.db")
    db, q = role_rows(table, "test", "db"), role_rows(table, "test", "query")
    assert s["dataset"] == "nuscene_large" and s["whichSet"] == "large"
    assert s["db"][0] == f"nuscene_large_database/{db['timestamp_us'][0]}.jpg"
    assert np.allclose(s["utmDb"], db[["easting", "northing"]].to_numpy())
    assert isinstance(positives, np.ndarray) and positives.dtype == object and positives.shape == (len(q),)
    assert all(p.dtype == np.int64 for p in positives)
    assert_positives_equal(positives, q["positives"])
    # the heading rule matters here: a radius search alone would find more
    assert sum(map(len, radius_search(s["utmDb"], s["utmQ"], s["posDistThr"]))) > sum(map(len, positives))
    for role, rows, count in (("database", db, s["numDb"]), ("query", q, s["numQ"])):
        bounds = np.loadtxt(folder / "structFiles" / "seqBoundsFiles" / f"nuscene_large_{role}_seqbounds.txt", int)
        assert bounds.shape == (count, 2) and np.array_equal(bounds, rows[["seq_start", "seq_end"]].to_numpy())
        raw = np.load(folder / "data" / f"nuscene_{role}_raw_large_384.npy", mmap_mode="r")
        assert raw.dtype == np.float32 and raw.shape == (count, 3, 384, 384)
        assert np.allclose(raw[1], normalised(layout.data_root / rows["image_path"][1]), atol=1e-5)
    assert info["positive_mismatches"] == {"test": 0}
    assert "/scratch/yl9727/nuscenes/" in info["edit"]


def normalised(path):
    """Adapt-STformer's base_transform: Resize([384, 384]), ToTensor, Normalize(ImageNet)."""
    image = Image.open(path).convert("RGB").resize((384, 384), Image.BILINEAR)
    return ((np.asarray(image, np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)


def test_adapt_stformer_nordland_season_arrays_by_place_index(tmp_path):
    """trainInds arange(0, 15000) / testInds len(train_ref) + arange(15100, 18100) index the
    season arrays by Nordland-clean position: row p of a season is the frame at place p."""
    bench = nordland_bench({"train": (0, 3), "test": (3, 6)})
    layout, table = materialise(tmp_path, nordland_like(6), bench)
    folder, info = export(layout, "adapt-stformer", "nordland", raw_inputs=True)
    assert sorted(p.name for p in (folder / "structFiles").iterdir()) == ["nordland_test_d-1_d2-1.db", "nordland_train_d-40_d2-10.db"]
    assert info["raw_384_arrays"] == [f"nordland_raw_{s}_384.npy" for s in ("fall", "spring", "summer", "winter")]
    summer, spring = (np.load(folder / "data" / f"nordland_raw_{s}_384.npy", mmap_mode="r") for s in ("summer", "spring"))
    assert summer.shape == (3, 3, 384, 384) and spring.shape == (6, 3, 384, 384) and summer.dtype == np.float32
    ft1 = np.concatenate([summer, spring])  # Adapt-STformer: vstack([train_ref, val_ref])
    test_db = role_rows(table, "test", "db")
    test_inds = len(summer) + test_db["place_index"].to_numpy()
    for row, image_path in zip(test_inds, test_db["image_path"]):
        assert np.allclose(ft1[row], normalised(layout.data_root / image_path), atol=1e-5)
    assert not spring[:3].any()  # places no spring frame covers stay zero


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


# ---------------------------------------------------------------- VPR-datasets layout

NAME = re.compile(r"^@(?P<east>[-\d.]+)@(?P<north>[-\d.]+)@(?P<zone>\d\d)@(?P<letter>[A-Z])@(?P<lat>[-\d.]+)@(?P<lon>[-\d.]+)"
                  r"@(?P<pano>\d+)@@(?P<heading>\d{3})@@@@(?P<ts>\d{8}_\d{6})@(?P<note>[^@]+)@\.jpg$")


def test_gsv_names_positives_and_traversal_order(tmp_path):
    bench = oxford_bench("oxford_easy")
    layout, table = materialise(tmp_path, robotcar_like(), bench)
    folder, info = export(layout, "gsv", "oxford_easy")
    threshold = info["positive_dist_threshold"]
    assert threshold == int(threshold) == 5
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
    bench = nordland_bench({"train": (0, 10), "test": (10, 20)})
    layout, table = materialise(tmp_path, nordland_like(20), bench)
    folder, info = export(layout, "gsv", "nordland")
    paths = gsv_folder(folder / "images" / "test" / "queries")
    assert os.path.basename(paths[0]) == f"@0@{10 * 25 / 10.5:07.1f}@@@@@10@@@@@@@@.jpg"
    threshold = info["positive_dist_threshold"]
    assert threshold == int(threshold)
    db_paths = gsv_folder(folder / "images" / "test" / "database")
    frame_of = lambda ps: np.array([int(os.path.basename(p).split("@")[7]) for p in ps])
    found = radius_search(gsv_utms(db_paths), gsv_utms(paths), threshold)
    q = role_rows(table, "test", "query")
    db_place = frame_of(db_paths)
    place_to_db_order = dict(zip(role_rows(table, "test", "db")["place_index"], role_rows(table, "test", "db")["order"]))
    derived = {int(qp): np.array([place_to_db_order[p] for p in db_place[h]]) for qp, h in zip(frame_of(paths), found)}
    assert_positives_equal([derived[p] for p in q["place_index"]], q["positives"])


def test_killed_export_leaves_no_complete_folder_and_rerun_matches(tmp_path):
    bench = oxford_bench("oxford_easy")
    layout, _ = materialise(tmp_path, robotcar_like(150), bench)
    folder = layout.exports("gsv", "oxford_easy")
    code = f"from seqvpr.exports.cli import main; main(['--home', {str(tmp_path)!r}, '--format', 'gsv', '--benchmark', 'oxford_easy'])"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    deadline = time.time() + 120
    while not list(folder.parent.glob(".oxford_easy.*.partial")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not folder.exists()
    assert list(folder.parent.glob(".oxford_easy.*.partial"))  # the half-written folder, under a temporary name
    export(layout, "gsv", "oxford_easy")
    assert not list(folder.parent.glob(".oxford_easy.*.partial"))
    first = files_of(folder)
    assert json.loads(first["export.json"])["positive_mismatches"] == {"train": 0, "test": 0}
    export(layout, "gsv", "oxford_easy")
    assert files_of(folder) == first


def test_failed_export_keeps_the_previous_one(tmp_path):
    bench = oxford_bench("oxford_easy")
    layout, table = materialise(tmp_path, robotcar_like(), bench)
    folder, _ = export(layout, "gsv", "oxford_easy")
    before = files_of(folder)
    (layout.data_root / role_rows(table, "test", "query")["image_path"].iloc[-1]).write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot decode"):
        export(layout, "gsv", "oxford_easy")
    assert files_of(folder) == before and not list(folder.parent.glob(".oxford_easy.*.partial"))

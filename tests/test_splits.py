"""Frame separation, route sections, sequence bounds and split tables on hand-made frame tables."""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from schemas.split_table import SPLIT_TABLE_SCHEMA
from seqvpr.datasets.catalog import ROBOTCAR_TRAVERSALS
from seqvpr.datasets.frames import frame_table
from conftest import REFERENCE_DIR
from seqvpr.benchmarks import BENCHMARKS, configure
from seqvpr.errors import DataError
from seqvpr.geometry import assign_sections, cumulative_distance, route_fractions, sections_of, subsample_by_distance
from seqvpr.seqbounds import centred_sequence, format_seqbounds, has_full_sequence, read_seqbounds, run_bounds
from seqvpr.splits import build_split, negatives_path, read_split, role_rows, write_split

REFERENCE_SEQBOUNDS = REFERENCE_DIR / "seqBoundsFiles" / "msls_amman_query_seqBounds.txt"


def frame_rows(dataset, traversal, condition, xy, heading=0.0, place_index=None, source=None):
    """Frame-table rows of one traversal at the given positions (one frame per second)."""
    rows = []
    for i, (x, y) in enumerate(np.asarray(xy, dtype=float)):
        rows.append(
            dict(
                frame_id=f"{traversal}_{i:05d}", dataset=dataset, location="loc", traversal=traversal, condition=condition,
                frame_index=i, timestamp_us=1_000_000 * (i + 1), image_path=f"frames/{dataset}/{traversal}/{i:05d}.png",
                source_file=(source or "{t}/stereo/left/images/{i:05d}.png").format(t=traversal, i=i),
                lat=51.75 + y * 1e-6, lon=-1.25 + x * 1e-6, easting=x, northing=y, utm_zone=30, utm_band="U",
                heading_deg=float(np.broadcast_to(heading, len(xy))[i]),
                place_index=-1 if place_index is None else int(place_index[i]),
            )
        )
    return rows


def robotcar_frames(n=300, length=600.0):
    """The five RobotCar runs along one straight 600 m road, 0.5 m apart laterally."""
    t = np.linspace(0.0, length, n)
    rows = []
    for k, (run, condition) in enumerate(sorted(ROBOTCAR_TRAVERSALS.items())):
        rows += frame_rows("robotcar", run, condition, np.stack([620000 + t, 5735000 + 0.5 * k + 0 * t], 1), heading=90.0)
    return frame_table(rows)


def nordland_frames(n=150):
    rows = []
    for season in ("spring", "summer", "fall", "winter"):
        xy = np.stack([np.arange(n) * 20.0 + 400000, np.full(n, 7300000.0)], 1)
        rows += frame_rows("nordland", season, season, xy, place_index=np.arange(n), source=f"{season}/images-{{i:05d}}.png")
    return frame_table(rows)


def test_separation_by_distance_not_time_on_varying_speed():
    # Ten slow steps of 0.5 m, then fast steps of 3 m; one frame per step.
    steps = np.array([0.5] * 9 + [3.0] * 5)
    xy = np.stack([np.concatenate([[0.0], np.cumsum(steps)]), np.zeros(15)], 1)
    travelled = cumulative_distance(xy)
    assert travelled[9] == pytest.approx(4.5) and travelled[10] == pytest.approx(7.5)
    # Kept at travelled 0, 2.0, 4.0, 7.5, 10.5, 13.5, 16.5, 19.5.
    assert subsample_by_distance(travelled, 2.0).tolist() == [0, 4, 8, 10, 11, 12, 13, 14]
    assert subsample_by_distance(travelled, 0.0).tolist() == list(range(15))


def test_separation_along_a_curve_counts_path_length():
    angles = np.linspace(0, np.pi, 101)  # half circle of radius 10: 31.4 m of path, 20 m chord
    xy = np.stack([10 * np.cos(angles), 10 * np.sin(angles)], 1)
    kept = subsample_by_distance(cumulative_distance(xy), 10.0)
    assert len(kept) == 4  # 0, ~10, ~20, ~30 m along the arc


def test_sections_from_reference_reused_for_offset_traversal():
    reference = np.stack([np.arange(0.0, 601.0, 1.0), np.zeros(601)], 1)
    sections = sections_of(route_fractions(reference), 6)
    assert sections[0] == 1 and sections[99] == 1 and sections[100] == 2 and sections[600] == 6
    other = np.array([[150.0, 3.0], [599.0, -2.0], [20.0, 1.0], [450.0, 0.0]])
    assert assign_sections(other, reference, sections).tolist() == [2, 6, 1, 5]


def test_run_bounds_break_on_key_change_and_gaps():
    keys = ["a"] * 4 + ["b"] * 3
    steps = np.array([0, 1, 1, 9, 1, 1, 1.0])
    assert run_bounds(keys, steps, max_step=2).tolist() == [[0, 3]] * 3 + [[3, 4]] + [[4, 7]] * 3


def test_centred_sequence_never_crosses_bounds():
    assert centred_sequence(5, 5, 0, 10).tolist() == [3, 4, 5, 6, 7]
    assert centred_sequence(0, 5, 0, 10).tolist() == [0, 1, 2, 3, 4]
    assert centred_sequence(9, 5, 0, 10).tolist() == [5, 6, 7, 8, 9]
    assert centred_sequence(11, 4, 10, 14).tolist() == [10, 11, 12, 13]
    assert centred_sequence(3, 5, 2, 5) is None
    bounds = np.array([[0, 6]] * 6)
    assert has_full_sequence(bounds, 5).tolist() == [False, False, True, True, False, False]


def test_seqbounds_format_equals_reference(tmp_path):
    text = open(REFERENCE_SEQBOUNDS).read()
    bounds = read_seqbounds(REFERENCE_SEQBOUNDS)
    assert format_seqbounds(bounds) == text
    assert np.array_equal(bounds, np.loadtxt(REFERENCE_SEQBOUNDS, dtype=int))
    bad = tmp_path / "bad_seqBounds.txt"
    bad.write_text("0 2\n0 2\n0 2\n")
    with pytest.raises(DataError, match="bad_seqBounds.txt: line 3"):
        read_seqbounds(bad)


def test_oxford_hard_split_selects_sections_and_runs():
    result = build_split(robotcar_frames(), BENCHMARKS["oxford_hard"])
    df = result.table.to_pandas()
    assert result.table.schema.equals(SPLIT_TABLE_SCHEMA)
    train_db = role_rows(result.table, "train", "db")
    assert set(train_db["traversal"]) == {"2014-11-18-13-20-12"} and set(train_db["section"]) == {1, 2}
    test_q = role_rows(result.table, "test", "query")
    assert set(test_q["traversal"]) == {"2014-12-17-18-18-43"} and set(test_q["section"]) == {3, 4}
    # Sections are 100 m of a 600 m road; frames are 2.007 m apart, so 1 m separation keeps all
    # and a section holds 49 to 51 frames.
    assert 49 <= (train_db["section"] == 1).sum() <= 51 and len(train_db) == 100
    # One run per section: [0, n1) then [n1, n1 + n2).
    n1 = int((train_db["section"] == 1).sum())
    assert train_db["seq_start"].tolist() == [0] * n1 + [n1] * (len(train_db) - n1)
    assert set(df["split"]) == {"train", "test"}
    assert df.groupby(["split", "role"])["order"].apply(lambda s: s.tolist() == list(range(len(s)))).all()


def test_positives_in_split_table_match_brute_force():
    bench = configure(BENCHMARKS["oxford_easy"], {"frame_separation": 5.0, "negatives_per_query": 30})
    result = build_split(robotcar_frames(), bench)
    for split in ("train", "test"):
        db, query = role_rows(result.table, split, "db"), role_rows(result.table, split, "query")
        d = np.hypot(query["easting"].to_numpy()[:, None] - db["easting"].to_numpy()[None],
                     query["northing"].to_numpy()[:, None] - db["northing"].to_numpy()[None])
        for i in range(len(query)):
            assert query["positives"][i].tolist() == np.flatnonzero(d[i] <= 10.0).tolist()
            assert query["nontrivial_positives"][i].tolist() == np.flatnonzero(d[i] <= 5.0).tolist()
            negatives = result.pairs[split].negatives[i]
            assert np.all(d[i][negatives[negatives >= 0]] > 10.0)
        # 5 m separation: consecutive kept frames of a run are 5 to 7.1 m apart.
        steps = np.diff(db["travelled"].to_numpy())[np.diff(db["seq_start"].to_numpy()) == 0]
        assert steps.min() >= 5.0 - 1e-9 and steps.max() < 7.1


SMALL_NORDLAND = {"train_range": [0, 90], "val_range": [93, 117], "test_range": [120, 150], "negatives_per_query": 5}


def test_nordland_ranges_and_seqnet_frame_rules():
    result = build_split(nordland_frames(), configure(BENCHMARKS["nordland"], SMALL_NORDLAND))
    train_db = role_rows(result.table, "train", "db")
    train_q = role_rows(result.table, "train", "query")
    assert set(train_db["condition"]) == {"summer"} and set(train_q["condition"]) == {"winter"}
    assert train_db["place_index"].tolist() == list(range(0, 90))
    test_db = role_rows(result.table, "test", "db")
    assert set(test_db["condition"]) == {"spring"} and test_db["place_index"].tolist() == list(range(120, 150))
    val_q = role_rows(result.table, "val", "query")
    assert val_q["place_index"].tolist() == list(range(93, 117))
    # val/test: radius 1, inclusive, so frames i-1, i, i+1 (order space: same offsets) are positives
    assert [p.tolist() for p in val_q["positives"]][:2] == [[0, 1], [0, 1, 2]]
    assert val_q["positives"].iloc[-1].tolist() == [22, 23]
    # train: posDistThr 40 frames, non-trivial 10 frames
    assert train_q["positives"].iloc[50].tolist() == list(range(10, 90))
    assert train_q["nontrivial_positives"].iloc[50].tolist() == list(range(40, 61))
    negatives = result.pairs["train"].negatives[50]
    assert np.all((negatives < 10) | (negatives > 90)) and (negatives >= 0).all()
    assert (train_db["seq_start"] == 0).all() and (train_db["seq_end"] == 90).all()


def test_nordland_without_spring_and_fall_builds_train_and_val_and_says_what_test_needs():
    frames = nordland_frames().to_pandas()
    frames = frames[frames["condition"].isin(["summer", "winter"])]
    result = build_split(frames, configure(BENCHMARKS["nordland"], SMALL_NORDLAND))
    assert set(result.table.column("split").to_pylist()) == {"train", "val"}
    assert list(result.missing) == ["test"]
    message = result.missing["test"]
    assert message.startswith("nordland/test needs spring and fall: ")
    assert "'spring' is not in the raw data" in message and "'fall' is not in the raw data" in message
    with pytest.raises(DataError, match=r"<frame table>: no split of the benchmark can be built: nordland/train needs"):
        build_split(frames[frames["condition"] == "summer"], BENCHMARKS["nordland"])


def test_nuscenes_day_night_with_heading_rule_and_scene_runs():
    rows = []
    x = np.arange(0, 40.0, 4.0)
    rows += frame_rows("nuscenes", "scene-0001", "day", np.stack([x, 0 * x], 1), heading=0.0)
    rows += frame_rows("nuscenes", "scene-0002", "day", np.stack([x, 0 * x], 1), heading=180.0)
    rows += frame_rows("nuscenes", "scene-0003", "night", np.stack([x, 0 * x + 1], 1), heading=355.0)
    result = build_split(frame_table(rows), BENCHMARKS["nuscenes"])
    db, query = role_rows(result.table, "test", "db"), role_rows(result.table, "test", "query")
    assert len(db) == 20 and len(query) == 10
    assert db["seq_start"].tolist() == [0] * 10 + [10] * 10
    # Only scene-0001 (5 degrees off, not 175) is positive; within 10 m along the road.
    for i, p in enumerate(query["positives"]):
        assert all(db["traversal"][j] == "scene-0001" for j in p)
        assert p.tolist() == [j for j in range(10) if abs(db["easting"][j] - query["easting"][i]) <= np.sqrt(99)]


def test_bad_frame_table_raises_data_error_naming_it():
    table = robotcar_frames(n=20).drop_columns(["heading_deg"])
    with pytest.raises(DataError, match=r"frames\.parquet: frame table lacks columns \['heading_deg'\]"):
        build_split(table, BENCHMARKS["oxford_easy"], "frames.parquet")
    with pytest.raises(DataError, match="no frames with traversal"):
        build_split(robotcar_frames(n=20), configure(BENCHMARKS["oxford_easy"], {"train_db": ["nope"]}), "t.parquet")


def test_write_and_read_split_round_trip_and_is_deterministic(tmp_path):
    bench = configure(BENCHMARKS["oxford_easy"], {"negatives_per_query": 10})
    values = {"negatives_per_query": 10}
    first = write_split(build_split(robotcar_frames(), bench), "oxford_easy", values, tmp_path / "a" / "oxford_easy.parquet")
    second = write_split(build_split(robotcar_frames(), bench), "oxford_easy", values, tmp_path / "b" / "oxford_easy.parquet")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    table, restored = read_split(first[0])
    assert restored == bench
    assert pq.read_table(first[0]).num_rows == table.num_rows
    negatives = np.load(negatives_path(first[0], "test"))
    assert negatives.shape == (len(role_rows(table, "test", "query")), 10)


def test_split_asset_without_spring_and_fall_succeeds_and_its_check_says_what_test_needs(tmp_path):
    from dagster import materialize

    from assets.splits import split_assets, split_checks
    from pipelines.resources import PipelineHome
    from seqvpr.datasets.frames import write_table
    from seqvpr.layout import Layout

    layout = Layout.from_home(tmp_path)
    frames = nordland_frames()
    write_table(frames.filter(pc.is_in(frames["condition"], pa.array(["summer", "winter"]))), layout.frame_table("nordland"))
    selected = [a for a in split_assets if a.key.to_user_string().startswith("nordland")]
    checks = [c for c in split_checks if any(k.asset_key.to_user_string() == "nordland_split" for k in c.check_keys)]
    result = materialize([*selected, *checks], resources={"home": PipelineHome(home=str(tmp_path))},
                         run_config={"ops": {"nordland_split": {"config": SMALL_NORDLAND}}}, raise_on_error=False)
    assert result.success  # the asset checks may fail, the assets do not
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    present = evaluations["every_split_present"]
    assert not present.passed and present.description.startswith("nordland/test needs spring and fall: ")
    assert sorted(p.name for p in layout.struct_files("nordland").glob("*.db")) == [
        "nordland_train_d-40_d2-10.db", "nordland_val_d-1_d2-1.db"]


def test_oxford_hard_with_only_its_test_runs_builds_test_and_names_the_missing_train_runs():
    frames = robotcar_frames().to_pandas()
    frames = frames[frames["traversal"].isin(["2014-12-16-09-14-09", "2014-12-17-18-18-43"])]
    result = build_split(frames, configure(BENCHMARKS["oxford_hard"], {"negatives_per_query": 5}))
    assert set(result.table.column("split").to_pylist()) == {"test"}
    assert result.missing["train"].startswith("oxford_hard/train needs 2014-11-18-13-20-12 and 2014-12-16-18-44-24: "
                                              "RobotCar run 2014-11-18-13-20-12 is not in the raw data")
    # sections 3-4 of the 600 m road, measured along the test database run instead of the absent reference
    test_db = role_rows(result.table, "test", "db")
    assert set(test_db["section"]) == {3, 4} and test_db["easting"].min() == pytest.approx(620200, abs=3)
    assert test_db["easting"].max() == pytest.approx(620400, abs=3)

"""Route folds of a training split (`seqvpr.train.folds`) against hand-computed folds, and
`scripts/cross_validate.py` run as a user runs it on a home whose test split is gone: it chooses a
setting from the training split alone."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seqvpr.layout import Layout
from seqvpr.train import SplitData
from seqvpr.train.folds import route_folds, subset_bounds
from test_frame_descriptors import BENCHMARK, home  # noqa: F401  (the fixture: a small Oxford-easy home with shards)

ROOT = Path(__file__).resolve().parents[1]


def test_subset_bounds_renumbers_runs_and_cuts_them_where_rows_are_skipped():
    bounds = np.array([[0, 5]] * 5 + [[5, 8]] * 3)
    assert subset_bounds(bounds, np.arange(4)).tolist() == [[0, 4]] * 4
    assert subset_bounds(bounds, np.arange(4, 8)).tolist() == [[0, 1], [1, 4], [1, 4], [1, 4]]
    # rows 1 and 3 were neighbours of nothing kept: each is its own run; 5 and 6 stay one run
    assert subset_bounds(bounds, np.array([1, 3, 5, 6])).tolist() == [[0, 1], [1, 2], [2, 4], [2, 4]]
    assert subset_bounds(bounds, np.array([], dtype=np.int64)).shape == (0, 2)


def _split():
    db_tokens = np.arange(8, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    q_tokens = 100 + np.arange(5, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    return SplitData(
        db_tokens=db_tokens, q_tokens=q_tokens,
        db_bounds=np.array([[0, 5]] * 5 + [[5, 8]] * 3), q_bounds=np.array([[0, 5]] * 5),
        positives=[np.array([0, 1]), np.array([6, 7]), np.array([2, 3]), np.array([], np.int64), np.array([4, 5, 6])],
        nontrivial_positives=[np.array([1]), np.array([7]), np.array([3]), np.array([], np.int64), np.array([6])],
        negatives=np.array([[5, 6, 7, -1], [0, 4, 3, -1], [0, 7, -1, -1], [1, -1, -1, -1], [0, 1, 2, 3]]),
        frame_ids=[f"db{i}" for i in range(8)] + [f"q{i}" for i in range(5)])


def test_route_folds_match_hand_computed_folds():
    first, second = route_folds(_split(), 2)
    # fold 1: database rows 0-3; queries 0 and 2 (median positives 0.5 and 2.5); query 3 has none
    assert first.db_tokens[:, 0].tolist() == [0, 1, 2, 3] and first.q_tokens[:, 0].tolist() == [100, 102]
    assert first.db_bounds.tolist() == [[0, 4]] * 4
    assert first.q_bounds.tolist() == [[0, 1], [1, 2]]  # queries 0 and 2 were not neighbours
    assert [p.tolist() for p in first.positives] == [[0, 1], [2, 3]]
    assert [p.tolist() for p in first.nontrivial_positives] == [[1], [3]]
    assert first.negatives.tolist() == [[-1], [0]]  # 5, 6, 7 lie in the other fold
    assert first.frame_ids == ["db0", "db1", "db2", "db3", "q0", "q2"]
    # fold 2: database rows 4-7 renumbered 0-3; queries 1 and 4 (medians 6.5 and 5)
    assert second.db_tokens[:, 0].tolist() == [4, 5, 6, 7] and second.q_tokens[:, 0].tolist() == [101, 104]
    assert second.db_bounds.tolist() == [[0, 1], [1, 4], [1, 4], [1, 4]]
    assert [p.tolist() for p in second.positives] == [[2, 3], [0, 1, 2]]
    assert second.negatives.tolist() == [[0], [-1]]  # query 1's candidate 4 is the fold's row 0
    assert second.frame_ids == ["db4", "db5", "db6", "db7", "q1", "q4"]


def test_route_folds_refuse_one_fold_and_a_fold_without_queries():
    with pytest.raises(ValueError, match="at least 2 folds"):
        route_folds(_split(), 1)
    with pytest.raises(ValueError, match=r"fold 2 of 3 \(database rows 3-4\) has no query"):
        route_folds(_split(), 3)


def test_cross_validate_trains_every_setting_on_the_training_split_alone(home):  # noqa: F811
    import shutil

    layout = Layout.from_home(home)
    shutil.rmtree(layout.shards(BENCHMARK, "test"))  # were the test split read, the run would fail
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "cross_validate.py"), "--home", str(home),
                          "--benchmark", BENCHMARK, "--model", "seqnet", "margin=0.1,1.0", "epochs=1",
                          "queries_per_epoch=4"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    table = [line for line in run.stdout.splitlines() if line.startswith("| {")]
    assert len(table) == 2 and {"'margin': 0.1" in table[0], "'margin': 0.1" in table[1]} == {True, False}
    for line in table:  # seed 0, fold 1 -> 2 and 2 -> 1, each trained one epoch and kept it
        assert line.count("0, 1->2: 1,") == 1 and line.count("0, 2->1: 1,") == 1, line
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "cross_validate.py"), "--home", str(home),
                          "--benchmark", BENCHMARK, "--model", "seqnet", "margin"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and "name=v1,v2" in bad.stderr

"""Pair rules on hand-made positions: radius boundary, heading on the circle, Nordland 1-frame rule,
negative candidates."""
import numpy as np
import pytest

from seqvpr.geometry import heading_difference_deg
from seqvpr.pairs import PairRules, compute_pairs, negative_candidates, positives


def test_radius_boundary_9_9_positive_10_1_not():
    db = np.array([[500000.0, 5700000.0], [500009.9, 5700000.0], [500000.0, 5700010.1], [499990.1, 5700000.0]])
    query = np.array([[500000.0, 5700000.0]])
    assert positives(db, query, radius=10.0)[0].tolist() == [0, 1, 3]


def test_diagonal_distance_uses_euclidean_metric():
    # (7, 7) is 9.899 m away, (7.1, 7.1) is 10.041 m away.
    db = np.array([[7.0, 7.0], [7.1, 7.1]])
    assert positives(db, np.zeros((1, 2)), radius=10.0)[0].tolist() == [0]


@pytest.mark.parametrize("a,b,expected", [(359, 1, 2), (1, 359, 2), (0, 180, 180), (10, 350, 20), (90, 90, 0), (720, 1, 1)])
def test_heading_difference_wraps_at_360(a, b, expected):
    assert heading_difference_deg(a, b) == pytest.approx(expected)


def test_heading_rule_29_degrees_positive_31_not_across_north():
    db = np.zeros((4, 2))
    db_heading = np.array([29.0, 31.0, 331.0, 329.0])  # differences from 0: 29, 31, 29, 31
    found = positives(db, np.zeros((1, 2)), 10.0, db_heading=db_heading, query_heading=[0.0], max_heading_deg=30.0)
    assert found[0].tolist() == [0, 2]


def test_heading_and_distance_must_both_hold():
    db = np.array([[0.0, 0.0], [11.0, 0.0]])
    found = positives(db, np.zeros((1, 2)), 10.0, db_heading=[200.0, 0.0], query_heading=[0.0], max_heading_deg=30.0)
    assert found[0].tolist() == []


def test_nordland_place_index_pairs_i_with_i_only():
    db_place = np.arange(100, 110)
    query_place = np.array([100, 105, 109, 120])
    rules = PairRules(radius=0, nontrivial_radius=0, negative_radius=3, negatives_per_query=20, seed=1)
    pairs = compute_pairs(db_place, query_place, rules)
    assert [p.tolist() for p in pairs.positives] == [[0], [5], [9], []]
    assert [p.tolist() for p in pairs.nontrivial_positives] == [[0], [5], [9], []]
    assert pairs.queries_without_positives() == 1
    # Negatives exclude |i - j| <= 3 frames: for place 105 that is db rows 2..8.
    negatives = pairs.negatives[1]
    assert set(negatives[negatives >= 0].tolist()) == {0, 1, 9}


def test_nontrivial_positives_use_the_smaller_radius():
    db = np.array([[0.0, 0.0], [4.0, 0.0], [6.0, 0.0], [30.0, 0.0]])
    rules = PairRules(radius=10.0, nontrivial_radius=5.0, negative_radius=10.0, negatives_per_query=5)
    pairs = compute_pairs(db, np.array([[0.0, 0.0]]), rules)
    assert pairs.positives[0].tolist() == [0, 1, 2]
    assert pairs.nontrivial_positives[0].tolist() == [0, 1]
    assert pairs.negatives[0].tolist() == [3, -1, -1, -1, -1]


def test_negative_candidates_are_outside_excluded_seeded_and_bounded():
    excluded = [np.arange(0, 500), np.arange(100, 200), np.zeros(0, dtype=np.int64)]
    a = negative_candidates(10_000, excluded, sample=50, seed=7)
    b = negative_candidates(10_000, excluded, sample=50, seed=7)
    c = negative_candidates(10_000, excluded, sample=50, seed=8)
    assert a.shape == (3, 50) and np.array_equal(a, b) and not np.array_equal(a, c)
    for row, skip in zip(a, excluded):
        assert len(set(row.tolist())) == 50
        assert not set(row.tolist()) & set(skip.tolist())
        assert np.all(np.diff(row) > 0)

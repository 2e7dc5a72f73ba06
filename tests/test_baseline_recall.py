"""The synthetic worlds carry place identity: a tiny whole-image baseline finds places across conditions.

Baseline: each normalised frame as 32x24 grayscale, zero mean, unit norm; nearest database frame by
dot product. Across day and night the intensities themselves carry no place (the night sky is
dark where the day sky is bright, which flips the whole image's layout; on the synthetic worlds
the plain baseline is at chance there), so for day/night the baseline describes where the edges
are: gradient magnitude of the histogram-equalised frame, then the same 32x24 downsampling.
Recall@1 must be well above chance, where chance is the fraction of the database that is a
positive for the query, and below 1: the worlds must be neither featureless nor trivially matched.
"""
import importlib.util

import cv2
import numpy as np
import pytest

from seqvpr.synthetic import generate


def descriptors(data_root, rows, edges=False):
    out = []
    for row in rows:
        gray = cv2.imread(str(data_root / row["image_path"]), cv2.IMREAD_GRAYSCALE)
        if edges:
            equalised = cv2.equalizeHist(gray).astype(np.float32)
            gray = np.hypot(cv2.Sobel(equalised, cv2.CV_32F, 1, 0), cv2.Sobel(equalised, cv2.CV_32F, 0, 1))
        small = cv2.resize(gray, (32, 24), interpolation=cv2.INTER_AREA).astype(np.float64).ravel()
        small -= small.mean()
        out.append(small / (np.linalg.norm(small) + 1e-12))
    return np.array(out)


def recall_and_chance(data_root, db_rows, query_rows, positives, edges=False):
    """Recall@1 over queries with at least one positive, and the mean positive fraction of the database."""
    nearest = np.argmax(descriptors(data_root, query_rows, edges) @ descriptors(data_root, db_rows, edges).T, axis=1)
    has = positives.any(axis=1)
    assert has.sum() >= 20, "too few queries with a positive to measure recall"
    return positives[np.arange(len(query_rows)), nearest][has].mean(), positives[has].mean()


def radius_positives(query_rows, db_rows, radius_m, max_heading_deg=None):
    q = np.array([[r["easting"], r["northing"]] for r in query_rows])
    d = np.array([[r["easting"], r["northing"]] for r in db_rows])
    near = np.linalg.norm(q[:, None] - d[None], axis=2) <= radius_m
    if max_heading_deg is not None:
        hq, hd = np.array([r["heading_deg"] for r in query_rows]), np.array([r["heading_deg"] for r in db_rows])
        near &= np.abs((hq[:, None] - hd[None] + 180) % 360 - 180) <= max_heading_deg
    return near


def test_nordland_winter_queries_find_summer_places(tmp_path):
    from seqvpr.datasets.nordland import normalise_partition

    raw = tmp_path / "raw"
    generate("nordland", raw, seed=0, truth_root=tmp_path / "truth", frames=150, width=128, height=72)
    summer, winter = (normalise_partition(raw, s, tmp_path / "frames" / s, tmp_path, size=64).table.to_pylist()
                      for s in ("summer", "winter"))
    frame = np.array([r["place_index"] for r in winter])
    exact = frame[:, None] == np.array([r["place_index"] for r in summer])[None]
    recall, chance = recall_and_chance(tmp_path, summer, winter, exact)
    tolerant = np.abs(frame[:, None] - np.array([r["place_index"] for r in summer])[None]) <= 2
    recall_tolerant, _ = recall_and_chance(tmp_path, summer, winter, tolerant)
    print(f"nordland winter->summer recall@1 {recall:.3f} (+-2 frames {recall_tolerant:.3f}), chance {chance:.4f}")
    assert 10 * chance < recall < 0.95
    assert recall <= recall_tolerant < 0.98


def test_nuscenes_night_queries_find_day_places(tmp_path):
    from seqvpr.datasets import nuscenes

    raw = tmp_path / "raw"
    generate("nuscenes", raw, seed=0, truth_root=tmp_path / "truth", scenes_per_location=3, samples_per_scene=24,
             sweeps_per_sample=0, width=128, height=72)
    rows = [row for location in nuscenes.discover_partitions(raw) for row in nuscenes.normalise_partition(
        raw, location, tmp_path / "frames" / location, tmp_path, size=64).table.to_pylist()]
    day = [r for r in rows if r["condition"] == "day"]
    night = [r for r in rows if r["condition"] == "night"]
    positives = radius_positives(night, day, 10.0, max_heading_deg=30.0)  # the nuScenes benchmark rule
    recall, chance = recall_and_chance(tmp_path, day, night, positives, edges=True)
    print(f"nuscenes night->day recall@1 {recall:.3f}, chance {chance:.4f}")
    assert 10 * chance < recall < 0.95


@pytest.mark.skipif(not (importlib.util.find_spec("seqvpr.synthetic.robotcar") and importlib.util.find_spec("seqvpr.datasets.robotcar")),
                    reason="the RobotCar generator or loader has not landed yet")
def test_robotcar_night_queries_find_day_places(tmp_path):
    from seqvpr.datasets import robotcar

    raw = tmp_path / "raw"
    generate("robotcar", raw, seed=0, truth_root=tmp_path / "truth", route_length_m=600, camera_hz=2, width=128, height=72)
    rows = [row for traversal in robotcar.discover_partitions(raw) for row in robotcar.normalise_partition(
        raw, traversal, tmp_path / "frames" / traversal, tmp_path, size=64).table.to_pylist()]
    day = [r for r in rows if r["condition"] == "day"]
    night = [r for r in rows if r["condition"] == "night"]
    positives = radius_positives(night, day, 10.0)  # seqNet's Oxford posDistThr
    recall, chance = recall_and_chance(tmp_path, day, night, positives, edges=True)
    print(f"robotcar night->day recall@1 {recall:.3f}, chance {chance:.4f}")
    assert 10 * chance < recall < 0.98  # 0.954 with the world continued past the route's end (0.932 before)

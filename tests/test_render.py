import cv2
import numpy as np
import pytest

from seqvpr.synthetic.render import NEAR_RANGE_M, NIGHT_EXPOSURE, NIGHT_GAIN, WORLD_MARGIN_M, World, continuations, render_view

ROUTE = np.stack([np.linspace(0, 200, 50), np.zeros(50)], axis=1)  # due east


@pytest.fixture(scope="module")
def world():
    return World([ROUTE], seed=3)


def _view(world, x, condition="day", seed=0, heading=90.0):
    return render_view(world, x, 0.0, heading, condition, 160, 120, rng=np.random.default_rng(seed)).astype(np.float32)


def _zncc(a, b):
    a, b = a.mean(axis=2).ravel(), b.mean(axis=2).ravel()
    a, b = (a - a.mean()) / a.std(), (b - b.mean()) / b.std()
    return float((a * b).mean())


def test_same_place_looks_alike_across_traversals(world):
    here_a, here_b = _view(world, 80.0, seed=1), _view(world, 80.5, seed=2)
    elsewhere = _view(world, 150.0, seed=3)
    assert _zncc(here_a, here_b) > _zncc(here_a, elsewhere) + 0.2


def test_night_is_gained_up_noisy_and_lamplit(world):
    """Night: unlit surfaces at NIGHT_EXPOSURE of daylight lifted by the camera's NIGHT_GAIN (not
    black), the gain's noise, and street lamps that saturate."""
    day, night = _view(world, 80.0), _view(world, 80.0, "night")
    corner = night[70:, :20]  # road, left of the headlight pool, away from lamps
    assert corner.mean() == pytest.approx(NIGHT_EXPOSURE * NIGHT_GAIN * 90.0, rel=0.05)  # road colour (90, 90, 95)
    assert 0.6 * day[70:, :20].mean() < corner.mean() < day[70:, :20].mean()

    def fine(img):  # high-pass of the (flat) sky: the sensor noise
        sky = img[:20]
        return (sky - cv2.blur(sky, (5, 5))).std()

    assert fine(night) > 1.3 * fine(day)
    assert (night.max(axis=2) >= 250).mean() > 0.005 and (day.max(axis=2) >= 250).mean() == 0


def test_winter_is_brighter_below_horizon(world):
    summer, winter = _view(world, 80.0, "summer"), _view(world, 80.0, "winter")
    assert winter[90:].mean() > summer[90:].mean() + 30


def test_deterministic_for_same_rng(world):
    assert np.array_equal(_view(world, 40.0, seed=7), _view(world, 40.0, seed=7))


def test_rejects_unknown_condition(world):
    with pytest.raises(ValueError, match="unknown condition 'dusk'"):
        render_view(world, 0, 0, 0, "dusk", 10, 10)


def test_synthetic_writers_share_no_layout_with_the_loaders():
    """The writers take folder and file names from the real references, not from the loaders or
    the catalog, so the loader tests on synthetic data do not check the code against itself."""
    import ast
    from pathlib import Path

    import seqvpr.synthetic

    for source in Path(seqvpr.synthetic.__file__).parent.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        assert not {m for m in imported if m.startswith(("seqvpr.datasets", "seqvpr.acquire"))}, source.name


def test_winter_track_and_hills_stay_dark(world):
    """Snow whitens the ground, not the ploughed track or the forested hills (a world of one white
    collapses to one token in the random CCT: see WINTER_TRACK)."""
    winter = _view(world, 80.0, "winter")
    track = winter[110:, 70:90]  # bottom centre: the track
    ground = winter[70:, :5]  # left edge below the horizon: snow
    assert track.mean() < 150 < ground.mean()


def test_route_continued_past_its_ends_gives_the_last_frame_a_world_ahead():
    """continuations: straight WORLD_MARGIN_M polylines into the first point and out of the last,
    along the end segments; a World given them places structures ahead of the route's last point,
    where the route alone leaves nothing to see."""
    route = np.array([[0.0, 0.0], [0.0, 50.0], [30.0, 90.0]])  # the last segment heads north-east (3-4-5)
    before, after = continuations(route)
    np.testing.assert_allclose(before, [[0.0, -WORLD_MARGIN_M], [0.0, 0.0]])
    np.testing.assert_allclose(after, [[30.0, 90.0], [30.0 + 0.6 * WORLD_MARGIN_M, 90.0 + 0.8 * WORLD_MARGIN_M]])
    np.testing.assert_allclose(continuations(np.array([[5.0, 5.0]]))[1], [[5.0, 5.0], [5.0, 5.0 + WORLD_MARGIN_M]])

    def ahead_of_end(world):
        points = np.vstack([world.poles[:, :2], world.trees[:, :2]] + [(f.a + f.b)[None] / 2 for f in world.facades])
        along = (points - route[-1]) @ np.array([0.6, 0.8])
        return int(np.sum((along > 10) & (along < NEAR_RANGE_M)))

    assert ahead_of_end(World([route], seed=3)) == 0
    extended = World([route, before, after], seed=3)
    assert ahead_of_end(extended) > 10
    # the route's own structures are drawn first, so they stay where they were
    alone = World([route], seed=3)
    np.testing.assert_array_equal(extended.poles[:len(alone.poles)], alone.poles)

"""Synthetic Nordland: season folders of identically numbered frames along stretches of the real line.

Layout written, as the real releases give it once extracted::

    <root>/<season>/images-<frame:05d>.png

- Frame names: ``images-`` and the zero-padded 5-digit frame number, as every line of seqNet's
  ``structFiles/imageNamesFiles/nordland_clean_imageNames.txt`` and the ``dbImageFns`` of its
  ``structFiles/nordland_*.db`` (oravus/seqNet).
- Season folders: ``summer`` and ``winter`` as gmberton/VPR-datasets-downloader's
  ``download_nordland.py`` unpacks ``summer.tar.gz`` / ``winter.tar.gz`` of the Adelaide share
  (``raw_data/summer/*.png``, ``raw_data/winter/*.png``); ``spring`` and ``fall`` as seqNet's
  ``get_datasets.py`` names the other pair (``ref, qry = 'spring', 'fall'``). ``seasons`` picks which
  are written (default: all four; gmberton's download has only summer and winter).
- No GPS file: no release ships one.

Frames. The real frame numbers and lat/lon of three stretches of the line (``data/nordland_track.csv``:
the first 200 frames of each of seqNet's ``nordland_train_d-40_d2-10.db``,
``nordland_val_d-1_d2-1.db`` and ``nordland_test_d-1_d2-1.db``, ``dbImageFns`` and ``gpsDb``);
the first ``frames`` of the val and test stretches and the first ``TRAIN_STRETCH_RATIO`` x ``frames``
(at most the 200 shipped) of the training stretch are rendered, so every seqNet split has frames while
the world stays small. The training stretch is the longer one, as seqNet's training range is five
times its val and test ranges (clean places 0-15,000 against 3,000 each): its positives reach 40
frames (``nordland_train_d-40_d2-10``), so a training split of 50 frames left almost no negative
(48 of 50 database frames were positives of the average query), and at 200 frames most of the
database is negative. ``season_frames`` > 0 writes the real length instead: frames ``0 .. season_frames - 1``
of the whole line (35,768 per season in the real extractions, ``REAL_SEASON_FRAMES``), so the
Nordland-clean list filters for real. Their track (``data/nordland_line.csv``: every tenth of the
21,000 clean frames that seqNet's three Nordland struct files locate, ``dbImageFns`` and ``gpsDb``,
frames 202 to 26,953) is interpolated by frame number between its fixes, and continued straight
along its end bearings at its mean step (26 m a frame) before frame 202 and after frame 26,953,
where no public fix exists.

Rendering. One rural ``World`` along the true track serves all seasons, so a frame number is the
same place in every season. The true track is the real one with repeated fixes replaced by
interpolation between the neighbouring fixes; the camera looks along it. Each season's camera sits
at its own small lateral offset and yaw, and each frame is moved a little along the track (the
frames of the four videos are not taken at exactly the same spot). The rendered poses go to
``<truth_root>/camera_poses.csv`` (season,frame,easting,northing,heading_deg; UTM zone 33).
"""
import csv
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import utm

from seqvpr.atomic import atomic_dir, atomic_write_text
from seqvpr.synthetic.parallel import map_frames
from seqvpr.synthetic.render import World, continuations, render_view

SEASONS = ("spring", "summer", "fall", "winter")
REAL_SEASON_FRAMES = 35_768  # frames per season of the real 1 fps extractions (images-00000 .. images-35767)
END_BEARING_FIXES = 30  # fixes (300 frames) at each end of the located track that give its continuation's bearing
TRUTH_UTM_ZONE = 33  # the truth file's metric frame (the line crosses zones 32 and 33)
SEASON_LATERAL_M = 0.8  # bound of each season's sideways camera offset
SEASON_YAW_DEG = 1.0  # sd of each season's camera yaw
ALONG_TRACK_M = 1.5  # bound of each frame's offset along the track
TRAIN_STRETCH = "seqnet_train"  # the stretch of seqNet's training struct file
TRAIN_STRETCH_RATIO = 4  # its frames per val/test frame (module docstring)


def real_track() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Stretch name -> (frame numbers, (lat, lon) rows) of the real track shipped with the package."""
    with resources.files("seqvpr.synthetic").joinpath("data/nordland_track.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    stretches = {}
    for name in dict.fromkeys(r["stretch"] for r in rows):
        part = [r for r in rows if r["stretch"] == name]
        stretches[name] = (np.array([int(r["frame"]) for r in part]),
                           np.array([[float(r["latitude"]), float(r["longitude"])] for r in part]))
    return stretches


def whole_line(count: int) -> np.ndarray:
    """(count, 2) UTM zone-33 positions of frames 0 .. count - 1 along the whole line (module docstring)."""
    with resources.files("seqvpr.synthetic").joinpath("data/nordland_line.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    located = np.array([int(r["frame"]) for r in rows])
    latlon = np.array([[float(r["latitude"]), float(r["longitude"])] for r in rows])
    easting, northing, _, _ = utm.from_latlon(latlon[:, 0], latlon[:, 1], force_zone_number=TRUTH_UTM_ZONE)
    xy = true_positions(located, np.stack([easting, northing], axis=1))
    step = float(np.sum(np.linalg.norm(np.diff(xy, axis=0), axis=1)) / (located[-1] - located[0]))
    frames = np.arange(count)
    out = np.stack([np.interp(frames, located, xy[:, k]) for k in range(2)], axis=1)
    for ends, edge, sign in (((0, END_BEARING_FIXES), 0, -1.0), ((-END_BEARING_FIXES, -1), -1, 1.0)):
        direction = xy[ends[1]] - xy[ends[0]]
        direction /= np.linalg.norm(direction)
        outside = frames < located[0] if edge == 0 else frames > located[-1]
        out[outside] = xy[edge] + np.abs(frames[outside] - located[edge])[:, None] * step * sign * direction
    return out


def true_positions(frames: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Positions with repeated GPS fixes (a fix equal to the previous frame's) interpolated by frame number."""
    fresh = np.ones(len(xy), dtype=bool)
    fresh[1:] = np.any(xy[1:] != xy[:-1], axis=1)
    return np.stack([np.interp(frames, frames[fresh], xy[fresh, k]) for k in range(2)], axis=1)


def _bearings(xy: np.ndarray) -> np.ndarray:
    """Compass bearing of a track of distinct points (central differences, one-sided at the ends)."""
    ahead, behind = np.append(np.arange(1, len(xy)), len(xy) - 1), np.insert(np.arange(len(xy) - 1), 0, 0)
    delta = xy[ahead] - xy[behind]
    return np.degrees(np.arctan2(delta[:, 0], delta[:, 1])) % 360.0


def generate(root: Path, seed: int = 0, truth_root: Path | None = None, frames: int = 50,
             width: int = 640, height: int = 360, seasons: str = "spring,summer,fall,winter",
             season_frames: int = 0, workers: int = 1) -> dict:
    """Write the first ``frames`` frames of the val and test stretches and the first
    ``TRAIN_STRETCH_RATIO`` x ``frames`` (at most the shipped 200) of the training stretch for every
    season in ``seasons``, or with ``season_frames`` > 0 the frames 0 .. season_frames - 1 of the
    whole line; ``workers`` processes render them (the files are the same for any number)."""
    stretches = real_track()
    longest = min(len(f) for f, _ in stretches.values())
    if not 1 <= frames <= longest:
        raise ValueError(f"frames must be in 1..{longest} (the shipped stretches), got {frames}")
    if not 0 <= season_frames <= REAL_SEASON_FRAMES:
        raise ValueError(f"season_frames must be in 0..{REAL_SEASON_FRAMES} (0: the shipped stretches), got {season_frames}")
    if width < 16 or height < 16:
        raise ValueError(f"image size must be at least 16x16, got {width}x{height}")
    chosen = [s.strip() for s in seasons.split(",") if s.strip()]
    if not chosen or set(chosen) - set(SEASONS):
        raise ValueError(f"seasons must name some of {', '.join(SEASONS)}, got {seasons!r}")
    track = []
    if season_frames:
        xy = whole_line(season_frames)
        track.append((np.arange(season_frames), xy, _bearings(xy) if season_frames > 1 else np.zeros(1)))
        stretches = {}
    counts = {name: min(TRAIN_STRETCH_RATIO * frames, len(numbers)) if name == TRAIN_STRETCH else frames
              for name, (numbers, _) in stretches.items()}
    for name, (numbers, latlon) in stretches.items():
        count = counts[name]
        easting, northing, _, _ = utm.from_latlon(latlon[:count, 0], latlon[:count, 1], force_zone_number=TRUTH_UTM_ZONE)
        xy = true_positions(numbers[:count], np.stack([easting, northing], axis=1))
        track.append((numbers[:count], xy, _bearings(xy) if count > 1 else np.zeros(1)))
    world_routes = []  # each stretch continued straight past its ends, so its end frames see a world ahead
    for _, xy, _ in track:
        before, after = continuations(xy)
        world_routes.append(np.vstack([before[:1], xy, after[1:]]))
    world = World(world_routes, seed=seed, style="rural")
    truth = ["season,frame,easting,northing,heading_deg"]
    with atomic_dir(root) as tmp:
        for season in chosen:
            season_index = SEASONS.index(season)
            folder = tmp / season
            folder.mkdir()
            season_rng = np.random.default_rng([seed, season_index])
            lateral, yaw = season_rng.uniform(-SEASON_LATERAL_M, SEASON_LATERAL_M), season_rng.normal(0, SEASON_YAW_DEG)
            for numbers, xy, heading in track:
                def frame(i, numbers=numbers, xy=xy, heading=heading, folder=folder, season=season,
                          season_index=season_index, lateral=lateral, yaw=yaw) -> str:
                    number = numbers[i]
                    rng = np.random.default_rng([seed, season_index, int(number)])
                    along = rng.uniform(-ALONG_TRACK_M, ALONG_TRACK_M)
                    h = np.radians(heading[i])
                    forward, right = np.array([np.sin(h), np.cos(h)]), np.array([np.cos(h), -np.sin(h)])
                    x, y = xy[i] + along * forward + lateral * right
                    view_heading = (heading[i] + yaw) % 360.0
                    rgb = render_view(world, x, y, view_heading, season, width, height, rng=rng)
                    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                    (folder / f"images-{number:05d}.png").write_bytes(png.tobytes())
                    return f"{season},{number},{x:.3f},{y:.3f},{view_heading:.3f}"

                truth += map_frames(frame, len(numbers), workers)
    if truth_root is not None:
        atomic_write_text(Path(truth_root) / "camera_poses.csv", "\n".join(truth) + "\n")
    return {"seasons": chosen, "frames_per_season": sum(len(numbers) for numbers, _, _ in track),
            "stretches": {name: [int(n[0]), int(n[counts[name] - 1])] for name, (n, _) in stretches.items()}
            or {"line": [0, season_frames - 1]}}

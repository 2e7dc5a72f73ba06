"""Oxford RobotCar: one run (traversal) per partition, the stereo ``left`` (default) or ``centre`` camera.

Layout read: runs as extracted from the official tar chunks (robotcar-dataset.robots.ox.ac.uk,
``<run>_stereo_left_NN.tar``, ``<run>_gps.tar``), any subset of chunks:
``<run>/stereo.timestamps`` (``<timestamp> <chunk>`` per line), ``<run>/stereo/<camera>/<timestamp>.png``
(8-bit Bayer GBRG) and ``<run>/gps/ins.csv``. A frame whose chunk has no image on disk was not
downloaded: it is skipped and counted (``chunk_not_downloaded``), as the SDK's ``play_images.py``
skips it; a missing image of a chunk that is present is an error.

Camera models are not in any tar: they come from a checkout of ori-mrg/robotcar-dataset-sdk
(``models/``). The model is the SDK's choice for the folder (``camera_model.py``): ``left`` ->
``stereo_wide_left``, ``centre`` -> ``stereo_narrow_left``, ``right`` -> ``stereo_wide_right``.

Each frame is demosaiced (Bayer GBRG, as the SDK's `load_image`; OpenCV calls this pattern
BayerGR), undistorted with the camera model's LUT, resized for the model, and placed by the INS:
position interpolated linearly in UTM at the image timestamp, yaw on the circle. Frames outside the
INS time range are dropped and counted, never extrapolated; an INS that covers none of the run's
frames (an ``ins.csv`` of another run) is an error naming it.

INS rows the pose may come from. The SDK's ``python/interpolate_poses.py`` (``interpolate_ins_poses``)
reads columns by position, never reads ``ins_status`` and interpolates between the two rows around a
timestamp however far apart they are; it refuses rows out of order (``ValueError('Pose timestamps
must be in ascending order')``). Here an ``ins.csv`` out of order is refused naming the line and
both timestamps, and a frame is dropped and counted when its pose would come from

- a row whose ``ins_status`` is not an INS solution (``ins_status_not_solution``): the NovAtel SPAN
  statuses other than ``INS_SOLUTION_GOOD``, ``INS_SOLUTION_FREE``, ``INS_HIGH_VARIANCE`` and
  ``INS_ALIGNMENT_COMPLETE`` (``INS_INACTIVE``, ``INS_ALIGNING``, ``WAITING_INITIALPOS``, ...) carry
  no position: their northing/easting are zeros, which would put the frame 100 km away; a row at
  northing = easting = 0 is treated the same whatever its status. A file without the column (not
  the real layout) is read as all solutions; one without a single solution row is an error;
- two usable rows more than ``max_ins_gap_s`` apart (``ins_gap``): a hole in the 50 Hz INS is bridged
  by the chord, which cuts corners (17.7 m off on an L-shaped 10 s hole). The default 1 s (50 missing
  rows) bounds that error by the sagitta v^2 t^2 / (8 r): under 0.4 m at 5 m/s around a 10 m radius
  street corner, 0 on a straight, while a normal 50 Hz file never has a gap near it.
"""
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import utm

from seqvpr.camera_model import load_camera_model
from seqvpr.datasets.frames import NormaliseResult, frame_path, frame_table, read_image, resize_for_model, save_frame
from seqvpr.datasets.catalog import CAMERA_MODELS, MAX_INS_GAP_S, ROBOTCAR_TRAVERSALS
from seqvpr.errors import DataError

SDK_URL = "https://github.com/ori-mrg/robotcar-dataset-sdk"
INS_REQUIRED = ("timestamp", "northing", "easting", "utm_zone", "yaw")
# NovAtel SPAN INSPVA inertial solution statuses that carry a position (the others are start-up states).
INS_SOLUTIONS = ("INS_SOLUTION_GOOD", "INS_SOLUTION_FREE", "INS_HIGH_VARIANCE", "INS_ALIGNMENT_COMPLETE")
FRAME_NAME = re.compile(r"^(\d+)\.png$")


def discover_partitions(raw_root: Path) -> list[str]:
    return sorted(p.name for p in Path(raw_root).iterdir() if (p / "stereo.timestamps").is_file())


def missing_run_message(raw_root: Path, run: str) -> str:
    """The note of a run absent from the raw data: what is there and where to get the run."""
    present = discover_partitions(raw_root) if Path(raw_root).is_dir() else []
    return f"RobotCar run {run} is not in the raw data {raw_root} (runs there: {', '.join(present) or 'none'}); {_where(run)}"


def _where(run: str) -> str:
    return f"get {run}_stereo_left_NN.tar and {run}_gps.tar from robotcar-dataset.robots.ox.ac.uk/datasets/{run}/"


def read_timestamps(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps and chunk numbers of ``stereo.timestamps`` (a line without a chunk is chunk 0)."""
    if not path.is_file():
        raise DataError(path, "stereo.timestamps missing")
    stamps, chunks = [], []
    for line_no, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            fields = [int(v) for v in line.split()]
        except ValueError:
            raise DataError(path, f"line {line_no}: not a timestamp: {line!r}") from None
        stamps.append(fields[0])
        chunks.append(fields[1] if len(fields) > 1 else 0)
    stamps, chunks = np.array(stamps, dtype=np.int64), np.array(chunks, dtype=np.int64)
    if len(stamps) == 0:
        raise DataError(path, "no timestamps")
    if np.any(np.diff(stamps) <= 0):
        bad = int(np.argmax(np.diff(stamps) <= 0)) + 2
        raise DataError(path, f"timestamps not strictly increasing at line {bad}")
    return stamps, chunks


def read_ins(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(path, "INS file missing")
    try:
        ins = pd.read_csv(path, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(path, f"unreadable CSV: {err}") from None
    missing = [c for c in INS_REQUIRED if c not in ins.columns]
    if missing:
        raise DataError(path, f"missing column(s) {', '.join(missing)}")
    if len(ins) < 2:
        raise DataError(path, f"no poses to interpolate: {len(ins)} row(s)")
    numeric = ins[["timestamp", "northing", "easting", "yaw"]].apply(pd.to_numeric, errors="coerce")
    if numeric.isna().any().any() or not np.isfinite(numeric.to_numpy()).all():
        row = int(numeric.isna().any(axis=1).to_numpy().argmax()) + 2
        raise DataError(path, f"non-numeric or NaN pose at line {row}")
    stamps = numeric["timestamp"].to_numpy()
    if np.any(np.diff(stamps) <= 0):
        bad = int(np.argmax(np.diff(stamps) <= 0))
        raise DataError(path, f"timestamps not strictly increasing: line {bad + 3} has {int(stamps[bad + 1])} after "
                              f"{int(stamps[bad])} on line {bad + 2} (sort the rows by timestamp, or re-extract the run's gps.tar)")
    status = ins["ins_status"].astype(str).str.strip() if "ins_status" in ins.columns else None
    usable = np.ones(len(ins), dtype=bool) if status is None else status.isin(INS_SOLUTIONS).to_numpy()
    usable &= ~((numeric["northing"] == 0) & (numeric["easting"] == 0)).to_numpy()
    if not usable.any():
        found = sorted(status.unique()) if status is not None else []
        raise DataError(path, f"no row holds an INS solution (ins_status {found[:5]}, expected one of "
                              f"{', '.join(INS_SOLUTIONS)} with a non-zero position)")
    numeric["usable"] = usable
    zones = sorted(ins["utm_zone"].astype(str).unique())
    if len(zones) != 1:
        raise DataError(path, f"run spans several UTM zones: {zones}")
    if not re.fullmatch(r"([1-9]|[1-5][0-9]|60)[C-HJ-NP-X]", zones[0]):
        raise DataError(path, f"utm_zone {zones[0]!r} is not a UTM zone number with its band letter (e.g. 30U)")
    numeric["utm_zone"] = zones[0]
    return numeric


def interpolate_poses(ins: pd.DataFrame, stamps: np.ndarray, max_gap_s: float = MAX_INS_GAP_S):
    """Poses at image timestamps from the rows around each (see the module docstring).

    Returns (reason, easting, northing, heading_deg): ``reason`` is "" for a placed frame, else
    ``outside_ins_range``, ``ins_status_not_solution`` or ``ins_gap``; the other arrays hold the
    interpolated pose (metres, degrees clockwise from north) of the placed frames, NaN elsewhere.
    """
    t = ins["timestamp"].to_numpy(dtype=np.int64)
    usable = ins["usable"].to_numpy() if "usable" in ins.columns else np.ones(len(t), dtype=bool)
    stamps = np.asarray(stamps, dtype=np.int64)
    reason = np.full(len(stamps), "", dtype=object)
    inside = (stamps >= t[0]) & (stamps <= t[-1])
    reason[~inside] = "outside_ins_range"
    upper = np.clip(np.searchsorted(t, stamps, side="left"), 0, len(t) - 1)
    lower = np.where(t[upper] == stamps, upper, np.maximum(upper - 1, 0))
    from_invalid = inside & ~(usable[lower] & usable[upper])
    reason[from_invalid] = "ins_status_not_solution"
    reason[inside & ~from_invalid & (t[upper] - t[lower] > max_gap_s * 1e6)] = "ins_gap"
    placed = reason == ""
    easting, northing, heading = (np.full(len(stamps), np.nan) for _ in range(3))
    if placed.any():
        good = ins[usable]
        q, tg = stamps[placed].astype(np.float64), good["timestamp"].to_numpy(dtype=np.float64)
        easting[placed] = np.interp(q, tg, good["easting"].to_numpy())
        northing[placed] = np.interp(q, tg, good["northing"].to_numpy())
        heading[placed] = np.degrees(np.interp(q, tg, np.unwrap(good["yaw"].to_numpy()))) % 360.0
    return reason, easting, northing, heading


def demosaic(raw: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(raw, cv2.COLOR_BayerGR2RGB)


def find_models_dir(raw_root: Path, models_dir: str | Path | None) -> Path:
    """The SDK ``models/`` folder: the setting, else ``<raw>/models`` (a loose ``models`` folder
    beside the tars is linked there on ingest), else ``robotcar-dataset-sdk/models`` beside the raw folder."""
    if models_dir:
        return Path(models_dir)
    for candidate in (raw_root / "models", raw_root.parent / "robotcar-dataset-sdk" / "models"):
        if candidate.is_dir():
            return candidate
    raise DataError(raw_root / "models", f"RobotCar camera models not found: set models_dir to the models/ folder "
                                         f"of a robotcar-dataset-sdk checkout ({SDK_URL})")


def _downloaded(images: Path, stamps: np.ndarray, chunks: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Frames of chunks with at least one image on disk (the other chunks were not downloaded), and
    the names of files beside the images that are not ``<timestamp>.png`` frames (macOS ``._*``
    companions, browser duplicates ``<ts> (1).png``), which are ignored."""
    on_disk, strays = set(), []
    for path in sorted(images.iterdir()) if images.is_dir() else []:
        match = FRAME_NAME.match(path.name)
        if match:
            on_disk.add(int(match.group(1)))
        else:
            strays.append(path.name)
    present_chunks = {int(c) for ts, c in zip(stamps, chunks) if int(ts) in on_disk}
    return np.isin(chunks, list(present_chunks)), strays


def normalise_partition(raw_root: Path, partition: str, out_dir: Path, data_root: Path, size: int = 384,
                        camera: str = "left", models_dir: str | Path | None = None,
                        max_ins_gap_s: float = MAX_INS_GAP_S) -> NormaliseResult:
    """Normalise one run's frames. A run that is not in the raw data at all (a local copy with some
    of the runs), or whose stereo tars were not extracted (only its gps tar), gives an empty table
    and a note, as Nordland's absent seasons do."""
    if camera not in CAMERA_MODELS:
        raise ValueError(f"unknown stereo camera {camera!r}; expected one of {', '.join(CAMERA_MODELS)}")
    raw_root, out_dir, data_root = Path(raw_root), Path(out_dir), Path(data_root)
    run_dir = raw_root / partition
    images = run_dir / "stereo" / camera
    if not run_dir.exists():
        return NormaliseResult(table=frame_table([]), notes=[missing_run_message(raw_root, partition)])
    if not (run_dir / "stereo.timestamps").exists() and not images.exists():
        return NormaliseResult(table=frame_table([]), notes=[
            f"{run_dir}: no stereo.timestamps and no stereo/{camera}/ images: the run's stereo tars were not extracted "
            f"(only {', '.join(sorted(p.name for p in run_dir.iterdir())) or 'an empty folder'}); {_where(partition)}"])
    stamps, chunks = read_timestamps(run_dir / "stereo.timestamps")
    ins_path = run_dir / "gps" / "ins.csv"
    ins = read_ins(ins_path)
    dropped, notes = Counter(), []
    downloaded, strays = _downloaded(images, stamps, chunks)
    if strays:
        notes.append(f"{images}: ignored {len(strays)} file(s) that are not <timestamp>.png frames: {', '.join(strays[:5])}")
    dropped["chunk_not_downloaded"] = int((~downloaded).sum())
    if not downloaded.any():
        raise DataError(images, f"no image of any chunk of stereo.timestamps ({len(stamps)} frames): "
                                f"extract the run's {partition}_stereo_{camera}_NN.tar chunks here")
    stamps = stamps[downloaded]
    reason, easting, northing, heading = interpolate_poses(ins, stamps, max_ins_gap_s)
    if (reason == "outside_ins_range").all():
        t = ins["timestamp"].to_numpy(dtype=np.int64)
        raise DataError(ins_path, f"INS covers {t[0]}..{t[-1]} but run {partition}'s images are "
                                  f"{stamps[0]}..{stamps[-1]}: an ins.csv of another run?")
    dropped.update(Counter(r for r in reason if r))
    placed = reason == ""
    easting, northing, heading = easting[placed], northing[placed], heading[placed]
    zone_text = ins["utm_zone"].iloc[0]
    zone, band = int(zone_text[:-1]), zone_text[-1]
    model = None
    rows = []
    for i, ts in enumerate(stamps[placed]):
        source = images / f"{ts}.png"
        if not source.is_file():
            raise DataError(source, "image listed in stereo.timestamps is missing")
        raw = read_image(source, cv2.IMREAD_UNCHANGED)
        if raw.ndim != 2 or raw.dtype != np.uint8:
            raise DataError(source, f"expected an 8-bit single-channel Bayer image, got shape {raw.shape} {raw.dtype}")
        if model is None:
            model = load_camera_model(find_models_dir(raw_root, models_dir), CAMERA_MODELS[camera], *raw.shape)
        rgb = model.undistort(demosaic(raw), source)
        target = frame_path(out_dir, str(ts))
        save_frame(resize_for_model(rgb, size), target)
        lat, lon = utm.to_latlon(easting[i], northing[i], zone, band)
        rows.append({
            "frame_id": f"{partition}_{ts}", "dataset": "robotcar", "location": "oxford", "traversal": partition,
            "condition": ROBOTCAR_TRAVERSALS.get(partition, "day"), "frame_index": i, "timestamp_us": int(ts),
            "image_path": str(target.relative_to(data_root)), "source_file": str(source.relative_to(raw_root)),
            "lat": float(lat), "lon": float(lon), "easting": float(easting[i]), "northing": float(northing[i]),
            "utm_zone": zone, "utm_band": band, "heading_deg": float(heading[i]), "place_index": -1,
        })
    return NormaliseResult(table=frame_table(rows), dropped={k: v for k, v in sorted(dropped.items()) if v}, notes=notes)

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
"""
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import utm

from seqvpr.camera_model import load_camera_model
from seqvpr.datasets.catalog import ROBOTCAR_TRAVERSALS
from seqvpr.datasets.frames import NormaliseResult, frame_table, resize_for_model, save_frame
from seqvpr.errors import DataError

CAMERA_MODELS = {"left": "stereo_wide_left", "centre": "stereo_narrow_left", "right": "stereo_wide_right"}
SDK_URL = "https://github.com/ori-mrg/robotcar-dataset-sdk"
INS_REQUIRED = ("timestamp", "northing", "easting", "utm_zone", "yaw")


def discover_partitions(raw_root: Path) -> list[str]:
    return sorted(p.name for p in Path(raw_root).iterdir() if (p / "stereo.timestamps").is_file())


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
    if np.any(np.diff(numeric["timestamp"].to_numpy()) <= 0):
        raise DataError(path, "timestamps not strictly increasing")
    zones = sorted(ins["utm_zone"].astype(str).unique())
    if len(zones) != 1:
        raise DataError(path, f"run spans several UTM zones: {zones}")
    if not re.fullmatch(r"([1-9]|[1-5][0-9]|60)[C-HJ-NP-X]", zones[0]):
        raise DataError(path, f"utm_zone {zones[0]!r} is not a UTM zone number with its band letter (e.g. 30U)")
    numeric["utm_zone"] = zones[0]
    return numeric


def interpolate_poses(ins: pd.DataFrame, stamps: np.ndarray):
    """(inside mask, easting, northing, heading_deg) at the stamps inside the INS time range."""
    t = ins["timestamp"].to_numpy(dtype=np.int64)
    inside = (stamps >= t[0]) & (stamps <= t[-1])
    q = stamps[inside].astype(np.float64)
    easting = np.interp(q, t, ins["easting"].to_numpy())
    northing = np.interp(q, t, ins["northing"].to_numpy())
    yaw = np.interp(q, t, np.unwrap(ins["yaw"].to_numpy()))
    return inside, easting, northing, np.degrees(yaw) % 360.0


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


def _downloaded(images: Path, stamps: np.ndarray, chunks: np.ndarray) -> np.ndarray:
    """Frames of chunks with at least one image on disk (the other chunks were not downloaded)."""
    on_disk = {int(p.stem) for p in images.glob("*.png")} if images.is_dir() else set()
    present_chunks = {int(c) for ts, c in zip(stamps, chunks) if int(ts) in on_disk}
    return np.isin(chunks, list(present_chunks))


def normalise_partition(raw_root: Path, partition: str, out_dir: Path, data_root: Path, size: int = 384,
                        camera: str = "left", models_dir: str | Path | None = None) -> NormaliseResult:
    if camera not in CAMERA_MODELS:
        raise ValueError(f"unknown stereo camera {camera!r}; expected one of {', '.join(CAMERA_MODELS)}")
    raw_root, out_dir, data_root = Path(raw_root), Path(out_dir), Path(data_root)
    run_dir = raw_root / partition
    images = run_dir / "stereo" / camera
    stamps, chunks = read_timestamps(run_dir / "stereo.timestamps")
    ins_path = run_dir / "gps" / "ins.csv"
    ins = read_ins(ins_path)
    dropped = Counter()
    downloaded = _downloaded(images, stamps, chunks)
    dropped["chunk_not_downloaded"] = int((~downloaded).sum())
    if not downloaded.any():
        raise DataError(images, f"no image of any chunk of stereo.timestamps ({len(stamps)} frames): "
                                f"extract the run's {partition}_stereo_{camera}_NN.tar chunks here")
    stamps = stamps[downloaded]
    inside, easting, northing, heading = interpolate_poses(ins, stamps)
    if not inside.any():
        t = ins["timestamp"].to_numpy(dtype=np.int64)
        raise DataError(ins_path, f"INS covers {t[0]}..{t[-1]} but run {partition}'s images are "
                                  f"{stamps[0]}..{stamps[-1]}: an ins.csv of another run?")
    dropped["outside_ins_range"] = int((~inside).sum())
    zone_text = ins["utm_zone"].iloc[0]
    zone, band = int(zone_text[:-1]), zone_text[-1]
    model = None
    rows = []
    for i, ts in enumerate(stamps[inside]):
        source = images / f"{ts}.png"
        if not source.is_file():
            raise DataError(source, "image listed in stereo.timestamps is missing")
        raw = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.size == 0:
            raise DataError(source, "cannot decode image (corrupt, truncated or empty PNG)")
        if raw.ndim != 2 or raw.dtype != np.uint8:
            raise DataError(source, f"expected an 8-bit single-channel Bayer image, got shape {raw.shape} {raw.dtype}")
        if model is None:
            model = load_camera_model(find_models_dir(raw_root, models_dir), CAMERA_MODELS[camera], *raw.shape)
        rgb = model.undistort(demosaic(raw), source)
        target = out_dir / f"{ts}.png"
        save_frame(resize_for_model(rgb, size), target)
        lat, lon = utm.to_latlon(easting[i], northing[i], zone, band)
        rows.append({
            "frame_id": f"{partition}_{ts}", "dataset": "robotcar", "location": "oxford", "traversal": partition,
            "condition": ROBOTCAR_TRAVERSALS.get(partition, "day"), "frame_index": i, "timestamp_us": int(ts),
            "image_path": str(target.relative_to(data_root)), "source_file": str(source.relative_to(raw_root)),
            "lat": float(lat), "lon": float(lon), "easting": float(easting[i]), "northing": float(northing[i]),
            "utm_zone": zone, "utm_band": band, "heading_deg": float(heading[i]), "place_index": -1,
        })
    return NormaliseResult(table=frame_table(rows), dropped={k: v for k, v in sorted(dropped.items()) if v})

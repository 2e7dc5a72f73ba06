"""Oxford RobotCar: one run (traversal) per partition, `stereo/centre` frames.

Each frame is demosaiced (Bayer GBRG, as the SDK's `load_image`; OpenCV calls this pattern
BayerGR), undistorted with the camera model's LUT, resized for the model, and placed by the INS:
position interpolated linearly in UTM at the image timestamp, yaw on the circle. Frames outside the
INS time range are dropped and counted, never extrapolated.
"""
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import utm

from seqvpr.camera_model import CENTRE_MODEL, load_camera_model
from seqvpr.datasets.catalog import ROBOTCAR_TRAVERSALS
from seqvpr.datasets.frames import NormaliseResult, frame_table, resize_for_model, save_frame
from seqvpr.errors import DataError

INS_REQUIRED = ("timestamp", "northing", "easting", "utm_zone", "yaw")


def discover_partitions(raw_root: Path) -> list[str]:
    return sorted(p.name for p in Path(raw_root).iterdir() if (p / "stereo.timestamps").is_file())


def read_timestamps(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(path, "stereo.timestamps missing")
    stamps = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            stamps.append(int(line.split()[0]))
        except ValueError:
            raise DataError(path, f"line {line_no}: not a timestamp: {line!r}") from None
    stamps = np.array(stamps, dtype=np.int64)
    if len(stamps) == 0:
        raise DataError(path, "no timestamps")
    if np.any(np.diff(stamps) <= 0):
        bad = int(np.argmax(np.diff(stamps) <= 0)) + 2
        raise DataError(path, f"timestamps not strictly increasing at line {bad}")
    return stamps


def read_ins(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(path, "INS file missing")
    try:
        ins = pd.read_csv(path)
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


def normalise_partition(raw_root: Path, partition: str, out_dir: Path, data_root: Path, size: int = 384) -> NormaliseResult:
    raw_root, out_dir, data_root = Path(raw_root), Path(out_dir), Path(data_root)
    run_dir = raw_root / partition
    stamps = read_timestamps(run_dir / "stereo.timestamps")
    ins = read_ins(run_dir / "gps" / "ins.csv")
    inside, easting, northing, heading = interpolate_poses(ins, stamps)
    zone_text = ins["utm_zone"].iloc[0]
    zone, band = int(zone_text[:-1]), zone_text[-1]
    model = None
    rows = []
    for i, ts in enumerate(stamps[inside]):
        source = run_dir / "stereo" / "centre" / f"{ts}.png"
        if not source.is_file():
            raise DataError(source, "image listed in stereo.timestamps is missing")
        raw = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.size == 0:
            raise DataError(source, "cannot decode image (corrupt, truncated or empty PNG)")
        if raw.ndim != 2 or raw.dtype != np.uint8:
            raise DataError(source, f"expected an 8-bit single-channel Bayer image, got shape {raw.shape} {raw.dtype}")
        if model is None:
            model = load_camera_model(raw_root / "models", CENTRE_MODEL, *raw.shape)
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
    dropped = int((~inside).sum())
    return NormaliseResult(table=frame_table(rows), dropped={"outside_ins_range": dropped} if dropped else {})

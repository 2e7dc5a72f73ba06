"""RobotCar camera models in the SDK's on-disk layout.

`models/<name>.txt`: first line `fx fy cx cy`, then the 4 x 4 G_camera_image. `models/<name>_distortion_lut.bin`:
float64 values reshaped to [2, H*W]: for every pixel of the undistorted image (row-major), the
(u, v) source position in the raw image, sampled bilinearly. The `stereo/centre` camera uses
`stereo_narrow_left`. The remap tables are built once per model and reused for every frame.
"""
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from seqvpr.errors import DataError

CENTRE_MODEL = "stereo_narrow_left"


@dataclass
class CameraModel:
    focal: tuple[float, float]
    principal: tuple[float, float]
    g_camera_image: np.ndarray
    lut: np.ndarray  # (H*W, 2) source (u, v) per undistorted pixel
    height: int
    width: int

    def __post_init__(self):
        self.map_x = self.lut[:, 0].reshape(self.height, self.width).astype(np.float32)
        self.map_y = self.lut[:, 1].reshape(self.height, self.width).astype(np.float32)

    def undistort(self, image: np.ndarray, source: Path | str = "<image>") -> np.ndarray:
        if image.shape[:2] != (self.height, self.width):
            raise DataError(source, f"image is {image.shape[1]}x{image.shape[0]} but the camera model's LUT is for {self.width}x{self.height}")
        return cv2.remap(image, self.map_x, self.map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def load_camera_model(models_dir: Path, name: str, height: int, width: int) -> CameraModel:
    """Read intrinsics and LUT; the image size comes from the images (the LUT must match it)."""
    models_dir = Path(models_dir)
    intrinsics_path = models_dir / f"{name}.txt"
    lut_path = models_dir / f"{name}_distortion_lut.bin"
    if not intrinsics_path.is_file():
        raise DataError(intrinsics_path, "camera intrinsics file missing")
    try:
        lines = [[float(v) for v in line.split()] for line in intrinsics_path.read_text().splitlines() if line.strip()]
    except ValueError:
        raise DataError(intrinsics_path, "intrinsics are not numbers") from None
    if len(lines) != 5 or len(lines[0]) != 4 or any(len(row) != 4 for row in lines[1:]):
        raise DataError(intrinsics_path, "expected 'fx fy cx cy' and a 4x4 G_camera_image")
    if not lut_path.is_file():
        raise DataError(lut_path, "distortion LUT missing")
    lut = np.fromfile(lut_path, dtype=np.float64)
    if lut.size != 2 * height * width:
        raise DataError(lut_path, f"LUT has {lut.size} values, expected 2 x {height} x {width} for the images")
    if not np.isfinite(lut).all():
        raise DataError(lut_path, f"{int((~np.isfinite(lut)).sum())} of its {lut.size} values are NaN or infinite")
    fx, fy, cx, cy = lines[0]
    return CameraModel((fx, fy), (cx, cy), np.array(lines[1:]), lut.reshape(2, -1).T, height, width)


def radial_lut(width: int, height: int, focal: float, k1: float, k2: float) -> np.ndarray:
    """LUT of a radial distortion model: undistorted pixel -> distorted source position."""
    cx, cy = width / 2.0, height / 2.0
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    x, y = (u - cx) / focal, (v - cy) / focal
    r2 = x * x + y * y
    scale = 1 + k1 * r2 + k2 * r2 * r2
    return np.stack([(x * scale * focal + cx).ravel(), (y * scale * focal + cy).ravel()], axis=1)


def distort(image: np.ndarray, focal: float, k1: float, k2: float) -> np.ndarray:
    """The raw (distorted) image whose LUT undistortion gives `image` back: inverts the radial
    model per raw pixel by fixed-point iteration, then samples the undistorted image there."""
    height, width = image.shape[:2]
    cx, cy = width / 2.0, height / 2.0
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    xd, yd = (u - cx) / focal, (v - cy) / focal
    x, y = xd.copy(), yd.copy()
    for _ in range(20):
        r2 = x * x + y * y
        scale = 1 + k1 * r2 + k2 * r2 * r2
        x, y = xd / scale, yd / scale
    map_x = (x * focal + cx).astype(np.float32)
    map_y = (y * focal + cy).astype(np.float32)
    return cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

"""The normalised frame store (seqvpr/datasets/frames.py): uncompressed TIFF that an independent reader
(Pillow) reads back with the exact pixels, the same bytes for the same pixels, and a partition folder
that ends up holding exactly its frame table's frames."""
import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from seqvpr.datasets.frames import FRAME_SUFFIX, frame_path, load_frame, remove_stale_frames, save_frame
from seqvpr.errors import DataError


def test_frames_are_uncompressed_rgb_tiff_that_pillow_reads_exactly(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (384, 384, 3), dtype=np.uint8)
    path = frame_path(tmp_path / "run", "frame-1")
    path.parent.mkdir()
    save_frame(rgb, path)
    assert path.name == "frame-1.tif" and FRAME_SUFFIX == ".tif"
    data = path.read_bytes()
    assert data[:4] in (b"II*\x00", b"MM\x00*")  # TIFF 6.0 header: byte order, then 42
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "TIFF" and image.mode == "RGB" and image.size == (384, 384)
        assert image.tag_v2[259] == 1  # Compression: none
        assert image.tag_v2[258] == (8, 8, 8)  # BitsPerSample
        assert np.array_equal(np.asarray(image), rgb)
    assert len(data) >= rgb.nbytes  # uncompressed: the pixels plus the header and strip tables
    assert np.array_equal(load_frame(path), rgb)
    save_frame(rgb, tmp_path / "again.tif")
    assert (tmp_path / "again.tif").read_bytes() == data  # no time stamp or other varying tag


def test_remove_stale_frames_keeps_exactly_the_tables_frames(tmp_path):
    data_root = tmp_path / "data"
    folder = data_root / "frames" / "robotcar" / "run"
    folder.mkdir(parents=True)
    rgb = np.zeros((8, 8, 3), np.uint8)
    for name in ("1", "2"):
        save_frame(rgb, frame_path(folder, name))
    (folder / "1.png").write_bytes(b"the PNG an earlier version wrote")
    (folder / "3.tif").write_bytes(b"a frame dropped since")
    table = pa.table({"image_path": ["frames/robotcar/run/1.tif", "frames/robotcar/run/2.tif"]})
    assert remove_stale_frames(folder, table, data_root) == 2
    assert sorted(p.name for p in folder.iterdir()) == ["1.tif", "2.tif"]
    assert remove_stale_frames(folder, table, data_root) == 0
    assert remove_stale_frames(tmp_path / "absent", table, data_root) == 0


def test_a_truncated_frame_is_refused_naming_it(tmp_path):
    """The image file directory is written after the pixels: any truncation loses it, and the reader
    says which frame and why instead of returning part of an image."""
    path = tmp_path / "f.tif"
    save_frame(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8), path)
    data = path.read_bytes()
    for keep in (len(data) - 1, len(data) // 2, 8):
        path.write_bytes(data[:keep])
        with pytest.raises(DataError, match=r"f\.tif: cannot decode normalised frame"):
            load_frame(path)

"""Acceptance: from season folders named as the real release, the Nordland loader and the default
`nordland` benchmark write seqNet's three Nordland struct files field by field."""
import numpy as np
import pytest
from scipy.io import loadmat

from conftest import REFERENCE_DIR
from seqvpr.benchmarks import BENCHMARKS
from seqvpr.datasets.frames import frame_table
from seqvpr.datasets.nordland import season_rows
from seqvpr.splits import build_split
from seqvpr.structfile import write_struct_files

REFERENCE_FILES = ("nordland_train_d-40_d2-10.db", "nordland_val_d-1_d2-1.db", "nordland_test_d-1_d2-1.db")
# Frames of the real seasons that are not in Nordland-clean (read off the clean list: 00202 is its
# first line, 01260 lies in its first gap, 01259 -> 01810), which the loader must skip.
NOT_CLEAN = ("images-00001.png", "images-00201.png", "images-01260.png")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    base = tmp_path_factory.mktemp("nordland_real")
    clean = (REFERENCE_DIR / "imageNamesFiles" / "nordland_clean_imageNames.txt").read_text().split()
    raw = base / "raw"
    for season in ("spring", "summer", "fall", "winter"):
        (raw / season).mkdir(parents=True)
        for name in (*clean, *NOT_CLEAN):
            (raw / season / name).touch()  # image-free: the struct files never look at pixels
    rows, skipped = [], {}
    for season in ("spring", "summer", "fall", "winter"):
        season_table, season_skips, _ = season_rows(raw, season, base / "frames" / season, base)
        rows += season_table
        skipped[season] = dict(season_skips)
    result = build_split(frame_table(rows), BENCHMARKS["nordland"])
    out = base / "struct_files"
    outputs = write_struct_files(result.table, BENCHMARKS["nordland"], out)
    return out, outputs, skipped, len(clean)


def test_frames_outside_the_clean_list_are_skipped_and_counted(written):
    _, _, skipped, _ = written
    assert skipped == {season: {"not_in_clean_list": 3} for season in ("spring", "summer", "fall", "winter")}


def test_written_file_names_are_seqnets(written):
    out, outputs, _, _ = written
    assert sorted(p.name for p in outputs.struct_files) == sorted(REFERENCE_FILES)


@pytest.mark.parametrize("name", REFERENCE_FILES)
def test_struct_file_equals_the_reference_field_by_field(written, name):
    out, _, _, _ = written
    ours, ref = loadmat(out / name)["dbStruct"][0, 0], loadmat(REFERENCE_DIR / name)["dbStruct"][0, 0]
    assert ours.dtype.names == ref.dtype.names
    for field in ref.dtype.names:
        a, b = ours[field], ref[field]
        if b.dtype == object:
            assert a.shape == b.shape, field
            assert [x[0].item() for x in a[:, 0]] == [x[0].item() for x in b[:, 0]], field
        else:
            assert a.dtype == b.dtype and a.shape == b.shape, field
            np.testing.assert_array_equal(a, b, err_msg=field)

"""Bad-input corpus: tiny synthetic worlds, each case breaking exactly one thing.

Every case first runs its stage on the intact copy (writing real outputs into a work folder), then
breaks the input and runs the stage again: the call must raise DataError naming the broken file and
the problem, and every output of the first run must still be there, byte for byte, with no
temporary files left behind.

The test ids read as the corpus: ``<dataset>: <what is broken> -> <expected problem>``.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import re
import shutil
import tarfile
import threading
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import cv2
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from seqvpr.acquire import download_manifest, extract
from seqvpr.benchmarks import BENCHMARKS
from seqvpr.datasets import nordland, nuscenes, robotcar
from seqvpr.datasets.frames import merge_tables, write_table
from seqvpr.errors import DataError
from seqvpr.splits import build_split, read_split, write_split
from seqvpr.structfile import write_struct_files
from seqvpr.synthetic import generate

NORDLAND_FRAMES = 7  # per stretch of the shipped track (test stretch: frames 19159..19165), in every season
NUSCENES_MAP = "singapore-onenorth"
ROBOTCAR_RUN = "2015-03-17-11-08-44"


# --------------------------------------------------------------------------- worlds (once per module)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> dict[str, Path]:
    """Pristine inputs per kind; every case works on its own copy."""
    base = tmp_path_factory.mktemp("worlds")
    generate("nordland", base / "nordland", seed=5, truth_root=base / "nordland_truth",
             frames=NORDLAND_FRAMES, width=64, height=48)
    generate("robotcar", base / "robotcar", seed=5, truth_root=base / "robotcar_truth",
             frames_per_traversal=6, width=32, height=24, sdk_root=base / "robotcar")  # SDK models/ beside the runs
    generate("nuscenes", base / "nuscenes", seed=5, truth_root=base / "nuscenes_truth",
             scenes_per_location=1, samples_per_scene=3, sweeps_per_sample=1, width=96, height=64)
    # Frame table of all four Nordland seasons, as the frame-table asset writes it.
    tables = base / "tables"
    for season in ("spring", "summer", "fall", "winter"):
        result = nordland.normalise_partition(base / "nordland", season, base / "frames" / season, base, size=16)
        write_table(result.table, tables / "nordland" / f"{season}.parquet")
    write_table(merge_tables((tables / "nordland").glob("*.parquet")), base / "frame_table" / "nordland.parquet")
    # Split table with its benchmark settings, as the split asset writes it.
    split = build_split(pq.read_table(base / "frame_table" / "nordland.parquet"), BENCHMARKS["nordland"])
    write_split(split, "nordland", {}, base / "split_table" / "nordland.parquet")
    # Season archives as a user would download them.
    archives = base / "archives"
    archives.mkdir()
    _tar(archives / "summer.tar.gz", base / "nordland", ["summer"])
    return {"nordland": base / "nordland", "robotcar": base / "robotcar", "nuscenes": base / "nuscenes", "frame_table": base / "frame_table",
            "split_table": base / "split_table", "archives": archives}


def _tar(path: Path, root: Path, names: list[str], extra: Callable[[tarfile.TarFile], None] | None = None) -> None:
    """A gzip tar of ``root/<name>`` folders with sorted members (plus ``extra`` members)."""
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            tar.add(root / name, arcname=name, filter=lambda info: info, recursive=True)
        if extra is not None:
            extra(tar)


def _add_member(tar: tarfile.TarFile, name: str, data: bytes = b"x", linkname: str | None = None) -> None:
    info = tarfile.TarInfo(name)
    if linkname is not None:
        info.type, info.linkname = tarfile.SYMTYPE, linkname
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def http_folder(tmp_path):
    """A folder served over HTTP on 127.0.0.1: (folder, base url)."""
    folder = tmp_path / "served"
    folder.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


# --------------------------------------------------------------------------- stages under test


def normalise_nordland(season: str):
    def stage(inputs: Path, work: Path) -> None:
        result = nordland.normalise_partition(inputs, season, work / "frames" / season, work, size=16)
        write_table(result.table, work / "tables" / f"{season}.parquet")
    return stage


def normalise_robotcar(inputs: Path, work: Path) -> None:
    result = robotcar.normalise_partition(inputs, ROBOTCAR_RUN, work / "frames" / ROBOTCAR_RUN, work, size=16)
    write_table(result.table, work / "tables" / f"{ROBOTCAR_RUN}.parquet")


def normalise_nuscenes(inputs: Path, work: Path) -> None:
    result = nuscenes.normalise_partition(inputs, NUSCENES_MAP, work / "frames" / NUSCENES_MAP, work, size=16)
    write_table(result.table, work / "tables" / f"{NUSCENES_MAP}.parquet")


def split_nordland(inputs: Path, work: Path) -> None:
    path = inputs / "nordland.parquet"
    write_split(build_split(pq.read_table(path), BENCHMARKS["nordland"], source=path), "nordland", {},
                work / "splits" / "nordland.parquet")


def struct_files_nordland(inputs: Path, work: Path) -> None:
    table, bench = read_split(inputs / "nordland.parquet")
    write_struct_files(table, bench, work / "struct_files" / "nordland")


def extract_summer(inputs: Path, work: Path) -> None:
    extract(inputs / "summer.tar.gz", work / "raw" / "nordland")


def download_listed(inputs: Path, work: Path) -> None:
    download_manifest(inputs / "manifest.json", work / "downloads", retries=0, backoff_s=0.0, timeout_s=5.0)


# --------------------------------------------------------------------------- damage


def _rewrite_lines(path: Path, edit: Callable[[list[str]], list[str]]) -> Path:
    path.write_text("".join(edit(path.read_text().splitlines(keepends=True))))
    return path


def _json_edit(path: Path, edit: Callable[[list[dict]], object]) -> Path:
    records = json.loads(path.read_text())
    edit(records)
    path.write_text(json.dumps(records, indent=0))
    return path


def _nusc_key_frame(raw: Path, index: int = 0) -> dict:
    """The ``index``-th CAM_FRONT key-frame sample_data record of the tested map's scene."""
    tables = raw / "v1.0-mini"
    logs = {r["token"] for r in json.loads((tables / "log.json").read_text()) if r["location"] == NUSCENES_MAP}
    scenes = {r["token"] for r in json.loads((tables / "scene.json").read_text()) if r["log_token"] in logs}
    samples = {r["token"] for r in json.loads((tables / "sample.json").read_text()) if r["scene_token"] in scenes}
    records = [r for r in json.loads((tables / "sample_data.json").read_text())
               if r["is_key_frame"] and r["sample_token"] in samples and "CAM_FRONT/" in r["filename"]]
    return sorted(records, key=lambda r: r["timestamp"])[index]


def _truncate(path: Path, keep: int) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


def _table_edit(path: Path, edit: Callable[[pa.Table], pa.Table]) -> Path:
    table = pq.read_table(path)
    pq.write_table(edit(table), path)
    return path


def _set_column(table: pa.Table, name: str, values) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, table.schema.field(i), pa.array(values, type=table.schema.field(i).type))


# Each damage function breaks one thing in the copied inputs and returns the file the error must name.


def nl_truncated_png(raw: Path) -> Path:
    return _truncate(raw / "spring" / "images-19161.png", 60)


def nl_zero_byte_png(raw: Path) -> Path:
    return _truncate(raw / "spring" / "images-19162.png", 0)


def nl_duplicate_frame(raw: Path) -> Path:
    shutil.copy(raw / "spring" / "images-19160.png", raw / "spring" / "images-019160.png")
    return raw / "spring" / "images-19160.png"


def nl_empty_season(raw: Path) -> Path:
    for image in (raw / "spring").iterdir():
        image.unlink()
    return raw / "spring"


def _rc_image(raw: Path, index: int) -> Path:
    """The ``index``-th image listed in the run's stereo.timestamps."""
    stamp = (raw / ROBOTCAR_RUN / "stereo.timestamps").read_text().splitlines()[index].split()[0]
    return raw / ROBOTCAR_RUN / "stereo" / "left" / f"{stamp}.png"


def rc_truncated_png(raw: Path) -> Path:
    return _truncate(_rc_image(raw, 2), 50)


def rc_zero_byte_png(raw: Path) -> Path:
    return _truncate(_rc_image(raw, 3), 0)


def rc_wrong_bayer_size(raw: Path) -> Path:
    path = _rc_image(raw, 2)
    bayer = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(path), bayer[: bayer.shape[0] // 2, : bayer.shape[1] // 2])
    return path


def rc_colour_not_bayer(raw: Path) -> Path:
    path = _rc_image(raw, 4)
    cv2.imwrite(str(path), cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BayerGR2BGR))
    return path


def rc_missing_png(raw: Path) -> Path:
    path = _rc_image(raw, 1)
    path.unlink()
    return path


def rc_timestamps_not_monotonic(raw: Path) -> Path:
    return _rewrite_lines(raw / ROBOTCAR_RUN / "stereo.timestamps", lambda lines: lines[:2] + [lines[3], lines[2]] + lines[4:])


def rc_nan_ins_pose(raw: Path) -> Path:
    def edit(lines: list[str]) -> list[str]:
        fields = lines[3].split(",")
        fields[6] = "nan"  # easting
        return lines[:3] + [",".join(fields)] + lines[4:]
    return _rewrite_lines(raw / ROBOTCAR_RUN / "gps" / "ins.csv", edit)


def rc_renamed_ins_column(raw: Path) -> Path:
    return _rewrite_lines(raw / ROBOTCAR_RUN / "gps" / "ins.csv", lambda lines: [lines[0].replace(",northing,", ",north,")] + lines[1:])


def rc_ins_header_only(raw: Path) -> Path:
    return _rewrite_lines(raw / ROBOTCAR_RUN / "gps" / "ins.csv", lambda lines: lines[:1])


def rc_ins_zone_without_band(raw: Path) -> Path:
    return _rewrite_lines(raw / ROBOTCAR_RUN / "gps" / "ins.csv", lambda lines: lines[:1] + [l.replace(",30U,", ",30,") for l in lines[1:]])


def rc_ins_zone_garbage(raw: Path) -> Path:
    return _rewrite_lines(raw / ROBOTCAR_RUN / "gps" / "ins.csv", lambda lines: lines[:1] + [l.replace(",30U,", ",XX,") for l in lines[1:]])


def rc_ins_missing(raw: Path) -> Path:
    (raw / ROBOTCAR_RUN / "gps" / "ins.csv").unlink()
    return raw / ROBOTCAR_RUN / "gps" / "ins.csv"


def ns_dangling_ego_pose(raw: Path) -> Path:
    token = _nusc_key_frame(raw)["token"]
    path = raw / "v1.0-mini" / "sample_data.json"
    _json_edit(path, lambda rs: next(r for r in rs if r["token"] == token).update(ego_pose_token="e" * 32))
    return path


def ns_dangling_log(raw: Path) -> Path:
    path = raw / "v1.0-mini" / "scene.json"
    return _json_edit(path, lambda rs: rs[0].update(log_token="d" * 32))


def ns_missing_jpeg(raw: Path) -> Path:
    path = raw / _nusc_key_frame(raw, 1)["filename"]
    path.unlink()
    return path


def ns_truncated_jpeg(raw: Path) -> Path:
    return _truncate(raw / _nusc_key_frame(raw, 1)["filename"], 200)


def ns_wrong_jpeg_size(raw: Path) -> Path:
    from PIL import Image

    path = raw / _nusc_key_frame(raw, 2)["filename"]
    with Image.open(path) as image:
        image.resize((image.width // 2, image.height // 2)).save(path, "JPEG")
    return path


def ns_table_not_json(raw: Path) -> Path:
    return _truncate(raw / "v1.0-mini" / "ego_pose.json", 100)


def ns_missing_map_mask(raw: Path) -> Path:
    record = json.loads((raw / "v1.0-mini" / "map.json").read_text())[0]
    (raw / record["filename"]).unlink()
    return raw / record["filename"]


def ns_nan_ego_pose(raw: Path) -> Path:
    token = _nusc_key_frame(raw)["ego_pose_token"]
    path = raw / "v1.0-mini" / "ego_pose.json"
    # json writes NaN as the bare token NaN, which the devkit's json.load accepts.
    return _json_edit(path, lambda rs: next(r for r in rs if r["token"] == token).update(translation=[float("nan"), 0.0, 0.0]))


def ns_zero_quaternion(raw: Path) -> Path:
    token = _nusc_key_frame(raw)["ego_pose_token"]
    path = raw / "v1.0-mini" / "ego_pose.json"
    return _json_edit(path, lambda rs: next(r for r in rs if r["token"] == token).update(rotation=[0.0, 0.0, 0.0, 0.0]))


def ns_timestamp_not_a_number(raw: Path) -> Path:
    token = _nusc_key_frame(raw)["sample_token"]
    path = raw / "v1.0-mini" / "sample.json"
    return _json_edit(path, lambda rs: next(r for r in rs if r["token"] == token).update(timestamp="noon"))


def ns_record_without_filename(raw: Path) -> Path:
    token = _nusc_key_frame(raw)["token"]
    path = raw / "v1.0-mini" / "sample_data.json"
    return _json_edit(path, lambda rs: next(r for r in rs if r["token"] == token).pop("filename"))


def ft_duplicate_frame_id(tables: Path) -> Path:
    path = tables / "nordland.parquet"
    return _table_edit(path, lambda t: _set_column(t, "frame_id", [t["frame_id"][0].as_py()] * 2 + t["frame_id"].to_pylist()[2:]))


def ft_negative_place_index(tables: Path) -> Path:
    path = tables / "nordland.parquet"
    return _table_edit(path, lambda t: _set_column(t, "place_index", [-1] + t["place_index"].to_pylist()[1:]))


def ft_missing_column(tables: Path) -> Path:
    return _table_edit(tables / "nordland.parquet", lambda t: t.drop_columns(["heading_deg"]))


def ft_empty_season(tables: Path) -> Path:
    return _table_edit(tables / "nordland.parquet", lambda t: t.filter(pc.invert(pc.is_in(t["condition"], pa.array(["winter", "fall"])))))


def st_no_settings(tables: Path) -> Path:
    return _table_edit(tables / "nordland.parquet", lambda t: t.replace_schema_metadata(None))


def st_renamed_column(tables: Path) -> Path:
    return _table_edit(tables / "nordland.parquet", lambda t: t.rename_columns(
        ["seq_begin" if n == "seq_start" else n for n in t.schema.names]))


def _bad_archive(extra: Callable[[tarfile.TarFile], None]):
    def damage(archives: Path) -> Path:
        path = archives / "summer.tar.gz"
        _tar(path, archives.parent / "nordland", ["summer"], extra)
        return path
    return damage


ar_dotdot = _bad_archive(lambda tar: _add_member(tar, "summer/../../x.png"))
ar_absolute = _bad_archive(lambda tar: _add_member(tar, "/tmp/seqvpr-bad-input.png"))
ar_symlink_escape = _bad_archive(lambda tar: _add_member(tar, "summer/link.png", linkname="../../../etc/passwd"))
ar_symlink_absolute = _bad_archive(lambda tar: _add_member(tar, "summer/abs.png", linkname="/etc/passwd"))


def ar_truncated(archives: Path) -> Path:
    path = archives / "summer.tar.gz"
    return _truncate(path, path.stat().st_size * 2 // 3)


def dl_corrupt(served: Path) -> Path:
    """A second file joins the manifest with the right checksum, but the server's copy is corrupt."""
    good = (served / "summer.tar.gz").read_bytes()
    corrupt = bytearray(good)
    corrupt[len(corrupt) // 2] ^= 0xFF
    (served / "winter.tar.gz").write_bytes(bytes(corrupt))
    manifest = json.loads((served / "manifest.json").read_text())
    manifest.append({**manifest[0], "url": manifest[0]["url"].replace("summer", "winter"), "filename": "winter.tar.gz"})
    (served / "manifest.json").write_text(json.dumps(manifest))
    return Path("downloads") / "winter.tar.gz"  # relative: the destination in the work folder


def dl_short(served: Path) -> Path:
    """The server's file is shorter than the manifest says (a cut-off upload)."""
    path = served / "summer.tar.gz"
    data = path.read_bytes()
    (served / "fall.tar.gz").write_bytes(data[:-100])
    manifest = json.loads((served / "manifest.json").read_text())
    manifest.append({**manifest[0], "url": manifest[0]["url"].replace("summer", "fall"), "filename": "fall.tar.gz"})
    (served / "manifest.json").write_text(json.dumps(manifest))
    return Path("downloads") / "fall.tar.gz"


# --------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Case:
    inputs: str  # key of the pristine world in ``worlds`` ("download" is served over HTTP)
    damage: Callable[[Path], Path]
    stage: Callable[[Path, Path], None]
    problem: str  # regular expression the error's problem must match


CASES = {
    # Nordland: season folders of images-<frame>.png (no GPS file)
    "nordland: truncated PNG -> cannot decode": Case("nordland", nl_truncated_png, normalise_nordland("spring"), r"cannot decode image"),
    "nordland: zero-byte PNG -> empty image file": Case("nordland", nl_zero_byte_png, normalise_nordland("spring"), r"empty image file \(0 bytes\)"),
    "nordland: duplicate frame id -> duplicate frame number": Case("nordland", nl_duplicate_frame, normalise_nordland("spring"), r"duplicate frame number 19160"),
    "nordland: empty season folder -> no frames": Case("nordland", nl_empty_season, normalise_nordland("spring"), r"season folder has no images"),
    # Oxford RobotCar: <run>/stereo.timestamps, stereo/left/<timestamp>.png (Bayer), gps/ins.csv, SDK models/
    "robotcar: truncated Bayer PNG -> cannot decode": Case("robotcar", rc_truncated_png, normalise_robotcar, r"cannot decode image"),
    "robotcar: zero-byte PNG -> cannot decode": Case("robotcar", rc_zero_byte_png, normalise_robotcar, r"cannot decode image"),
    "robotcar: Bayer image of the wrong size -> size differs from the camera LUT": Case("robotcar", rc_wrong_bayer_size, normalise_robotcar, r"image is 16x12 but the camera model's LUT is for 32x24"),
    "robotcar: colour PNG instead of Bayer -> not single-channel": Case("robotcar", rc_colour_not_bayer, normalise_robotcar, r"expected an 8-bit single-channel Bayer image"),
    "robotcar: image listed in stereo.timestamps missing -> missing": Case("robotcar", rc_missing_png, normalise_robotcar, r"image listed in stereo.timestamps is missing"),
    "robotcar: non-monotonic stereo.timestamps -> not increasing": Case("robotcar", rc_timestamps_not_monotonic, normalise_robotcar, r"not strictly increasing at line 4"),
    "robotcar: NaN easting in ins.csv -> NaN pose": Case("robotcar", rc_nan_ins_pose, normalise_robotcar, r"NaN pose at line 4"),
    "robotcar: renamed ins.csv column -> missing column northing": Case("robotcar", rc_renamed_ins_column, normalise_robotcar, r"missing column\(s\) northing"),
    "robotcar: ins.csv missing -> INS file missing": Case("robotcar", rc_ins_missing, normalise_robotcar, r"INS file missing"),
    "robotcar: ins.csv with a header and no rows -> no poses": Case(
        "robotcar", rc_ins_header_only, normalise_robotcar, r"(?i)no (poses|rows)|empty"),
    "robotcar: utm_zone without band letter -> bad utm_zone": Case(
        "robotcar", rc_ins_zone_without_band, normalise_robotcar, r"utm_zone"),
    "robotcar: utm_zone not a zone -> bad utm_zone": Case(
        "robotcar", rc_ins_zone_garbage, normalise_robotcar, r"utm_zone"),
    # nuScenes: v1.0-mini JSON tables, samples/CAM_FRONT JPEGs, map masks
    "nuscenes: dangling ego_pose_token -> names sample_data.json": Case("nuscenes", ns_dangling_ego_pose, normalise_nuscenes, r"ego_pose_token.*e{32}"),
    "nuscenes: dangling log_token -> names scene.json": Case("nuscenes", ns_dangling_log, normalise_nuscenes, r"log_token.*d{32}"),
    "nuscenes: missing JPEG -> image missing": Case("nuscenes", ns_missing_jpeg, normalise_nuscenes, r"image of sample_data \w+ is missing"),
    "nuscenes: truncated JPEG -> corrupt JPEG": Case("nuscenes", ns_truncated_jpeg, normalise_nuscenes, r"corrupt or unreadable JPEG"),
    "nuscenes: JPEG of the wrong size -> size differs from sample_data": Case("nuscenes", ns_wrong_jpeg_size, normalise_nuscenes, r"image is 48x32, sample_data.json says 96x64"),
    "nuscenes: table cut short -> not valid JSON": Case("nuscenes", ns_table_not_json, normalise_nuscenes, r"not valid JSON"),
    "nuscenes: map mask missing -> map mask missing": Case("nuscenes", ns_missing_map_mask, normalise_nuscenes, r"map mask of map \w+ in map.json is missing"),
    "nuscenes: NaN ego translation -> non-finite pose": Case(
        "nuscenes", ns_nan_ego_pose, normalise_nuscenes, r"(?i)nan|finite"),
    "nuscenes: zero ego rotation quaternion -> invalid rotation": Case(
        "nuscenes", ns_zero_quaternion, normalise_nuscenes, r"(?i)quaternion|rotation"),
    "nuscenes: sample timestamp not a number -> bad timestamp": Case(
        "nuscenes", ns_timestamp_not_a_number, normalise_nuscenes, r"timestamp"),
    "nuscenes: sample_data record without filename -> missing field": Case(
        "nuscenes", ns_record_without_filename, normalise_nuscenes, r"filename"),
    # Frame table -> split (build_split / write_split)
    "frame table: duplicate frame_id -> duplicate frame_id": Case("frame_table", ft_duplicate_frame_id, split_nordland, r"duplicate frame_id 'fall_images-00202'"),
    "frame table: negative place_index -> not a clean index": Case("frame_table", ft_negative_place_index, split_nordland, r"place_index -1, not a Nordland-clean index"),
    "frame table: missing heading_deg column -> lacks columns": Case("frame_table", ft_missing_column, split_nordland, r"lacks columns \['heading_deg'\]"),
    "frame table: no winter and no fall -> no split can be built": Case("frame_table", ft_empty_season, split_nordland, r"no split of the benchmark can be built: nordland/train needs summer and winter"),
    # Split table -> struct files
    "split table: benchmark settings stripped -> no settings": Case("split_table", st_no_settings, struct_files_nordland, r"no benchmark settings"),
    "split table: renamed column -> differs from schema": Case("split_table", st_renamed_column, struct_files_nordland, r"differ from the split table schema"),
    # Archives (extract)
    "archive: member with '..' -> escapes the target": Case("archives", ar_dotdot, extract_summer, r"escapes the target with '\.\.'"),
    "archive: absolute member -> absolute path": Case("archives", ar_absolute, extract_summer, r"has an absolute path"),
    "archive: symlink climbing out -> links outside": Case("archives", ar_symlink_escape, extract_summer, r"links outside the target"),
    "archive: symlink to absolute path -> links to absolute path": Case("archives", ar_symlink_absolute, extract_summer, r"links to the absolute path '/etc/passwd'"),
    "archive: truncated tar.gz -> truncated or corrupt": Case("archives", ar_truncated, extract_summer, r"truncated or corrupt archive"),
    # Downloads (manifest with sha256 and size)
    "download: corrupt bytes -> sha256 mismatch": Case("download", dl_corrupt, download_listed, r"sha256 mismatch"),
    "download: short file -> size mismatch": Case("download", dl_short, download_listed, r"transfer ended at byte|size mismatch"),
}


def _params() -> list:
    return [pytest.param(case, id=name) for name, case in CASES.items()]


def _snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file (temporary files included, so leftovers show)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def _inputs(case: Case, worlds: dict[str, Path], tmp_path: Path, request) -> Path:
    if case.inputs == "download":
        served, url = request.getfixturevalue("http_folder")
        shutil.copy(worlds["archives"] / "summer.tar.gz", served / "summer.tar.gz")
        data = (served / "summer.tar.gz").read_bytes()
        (served / "manifest.json").write_text(json.dumps([{"url": f"{url}/summer.tar.gz", "filename": "summer.tar.gz",
                                                            "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}]))
        return served
    copy = tmp_path / "inputs" / case.inputs
    shutil.copytree(worlds[case.inputs], copy)
    if case.inputs == "archives":
        shutil.copytree(worlds["nordland"], copy.parent / "nordland")
    return copy


@pytest.mark.parametrize("case", _params())
def test_bad_input_is_named_and_outputs_survive(case: Case, worlds, tmp_path, request):
    inputs = _inputs(case, worlds, tmp_path, request)
    work = tmp_path / "work"
    case.stage(inputs, work)  # the intact input goes through
    before = _snapshot(work)
    assert before, "the intact run wrote nothing"
    broken = case.damage(inputs)
    expected = (work / broken) if not broken.is_absolute() else broken
    try:
        case.stage(inputs, work)
    except DataError as err:
        assert Path(err.path).resolve() == expected.resolve(), str(err)
        assert str(err).startswith(err.path) and expected.name in str(err)
        assert err.problem and re.search(case.problem, err.problem), str(err)
    except Exception as err:  # a bare traceback is a defect of the stage, reported as a failed assertion
        raise AssertionError(f"{type(err).__name__} instead of DataError: {err}") from err
    else:
        raise AssertionError("no error raised")
    after = _snapshot(work)
    assert {name: after.get(name) for name in before} == before, "an earlier output changed or vanished"
    # Only a download may leave something new: its resumable ``.part`` file, never a final name.
    assert all(name.endswith(".part") for name in set(after) - set(before)), sorted(set(after) - set(before))


def test_scene_without_front_camera_key_frame_is_a_counted_skip(worlds, tmp_path):
    """A sample whose CAM_FRONT record is not a key frame is dropped and counted, not an error."""
    raw = tmp_path / "nuscenes"
    shutil.copytree(worlds["nuscenes"], raw)
    token = _nusc_key_frame(raw, 1)["token"]
    _json_edit(raw / "v1.0-mini" / "sample_data.json",
               lambda rs: next(r for r in rs if r["token"] == token).update(is_key_frame=False))
    result = nuscenes.normalise_partition(raw, NUSCENES_MAP, tmp_path / "frames", tmp_path, size=16)
    assert result.dropped == {"no_CAM_FRONT": 1}
    assert result.table.num_rows == 2 and result.table["frame_index"].to_pylist() == [0, 1]


def test_corpus_covers_every_stage_and_dataset():
    """At least 20 cases, across the three datasets' loaders and the archive/download/split stages."""
    kinds = {case.inputs for case in CASES.values()}
    assert len(CASES) >= 20 and {"nordland", "robotcar", "nuscenes", "archives", "download", "frame_table"} <= kinds


def test_robotcar_frames_after_the_ins_ends_are_a_counted_skip(worlds, tmp_path):
    """An INS log that stops between frames 3 and 4 drops frames 4 and 5 (counted), it never extrapolates."""
    raw = tmp_path / "robotcar"
    shutil.copytree(worlds["robotcar"], raw)
    stamps = [int(line.split()[0]) for line in (raw / ROBOTCAR_RUN / "stereo.timestamps").read_text().splitlines()]
    _rewrite_lines(raw / ROBOTCAR_RUN / "gps" / "ins.csv",
                   lambda lines: lines[:1] + [line for line in lines[1:] if int(line.split(",")[0]) < stamps[4]])
    result = robotcar.normalise_partition(raw, ROBOTCAR_RUN, tmp_path / "frames", tmp_path, size=16)
    assert len(stamps) == 6 and result.dropped == {"outside_ins_range": 2}
    assert result.table["timestamp_us"].to_pylist() == stamps[:4]


# --------------------------------------------------------------------------- the raw-data stage never deletes a user's files

ROBOTCAR_TINY = {"frames_per_traversal": 2, "width": 32, "height": 24}


def _acquire_robotcar(home: Path, **source) -> dict:
    from seqvpr.acquire import acquire_dataset
    from seqvpr.layout import Layout

    layout = Layout.from_home(home)
    return acquire_dataset("robotcar", layout.raw("robotcar"), layout.downloads("robotcar"),
                           layout.data_root / "truth" / "robotcar", **source)


def test_local_source_inside_the_pipeline_home_is_refused_and_kept(tmp_path):
    """The README's raw folder given as the local source: refused, the synthetic world and the user's file intact."""
    home = tmp_path / "home"
    _acquire_robotcar(home, source="synthetic", scale=ROBOTCAR_TINY)
    raw = home / "data" / "raw" / "robotcar"
    (raw / "my_notes.txt").write_text("mine")
    before = _snapshot(raw)
    for path in (raw, home / "datasets" / "robotcar", home):
        with pytest.raises(DataError, match="inside the pipeline's folder") as err:
            _acquire_robotcar(home, source="local", path=str(path))
        assert err.value.path == str(path.resolve())
    assert _snapshot(raw) == before and (raw / "my_notes.txt").read_text() == "mine"


def test_a_file_added_to_a_generated_world_stops_its_replacement(tmp_path):
    """Switching source would replace the synthetic world; a file the user put in it is named and kept."""
    home = tmp_path / "home"
    _acquire_robotcar(home, source="synthetic", scale=ROBOTCAR_TINY)
    raw = home / "data" / "raw" / "robotcar"
    run = next(p for p in raw.iterdir() if p.is_dir())
    (run / "my_notes.txt").write_text("mine")
    before = _snapshot(raw)
    with pytest.raises(DataError, match="added or changed after the pipeline wrote") as err:
        _acquire_robotcar(home, source="synthetic", seed=1, scale=ROBOTCAR_TINY)
    assert err.value.path == str(run / "my_notes.txt")
    assert _snapshot(raw) == before


# --------------------------------------------------------------------------- settings that empty a split leave nothing stale


def test_split_emptied_by_new_settings_loses_its_struct_file_and_the_check_fails_on_stale_data(tmp_path):
    """`frame_separation: 1e9` keeps each run's first frame (section 1), so a test split of section 6
    is empty: its struct file goes, the train one is rewritten, and the check fails when an old
    test struct file is put back."""
    from dagster import materialize

    from assets.splits import split_assets, split_checks
    from pipelines.resources import PipelineHome
    from seqvpr.layout import Layout
    from test_splits import robotcar_frames

    layout = Layout.from_home(tmp_path)
    write_table(robotcar_frames(), layout.frame_table("robotcar"))
    selected = [a for a in split_assets if a.key.to_user_string().startswith("oxford_easy")]
    checks = [c for c in split_checks if any(k.asset_key.to_user_string() == "oxford_easy_struct_files" for k in c.check_keys)]

    def materialise(**settings):
        result = materialize([*selected, *checks], resources={"home": PipelineHome(home=str(tmp_path))},
                             run_config={"ops": {"oxford_easy_split": {"config": settings}}})
        assert result.success
        return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}

    folder = layout.struct_files("oxford_easy")
    assert materialise(frame_separation=4.0) == {"struct_files_match_split": True}
    old_test = next(folder.glob("*_test.db"))
    stale = old_test.read_bytes()
    assert materialise(frame_separation=1e9, test_sections=[6]) == {"struct_files_match_split": True}
    assert not list(folder.glob("*_test.db")) and len(list(folder.glob("*_train.db"))) == 1
    negatives = sorted(p.name for p in layout.split_table("oxford_easy").parent.glob("oxford_easy_negatives_*.npy"))
    assert negatives == ["oxford_easy_negatives_train.npy"]
    old_test.write_bytes(stale)  # what an earlier pipeline left in place
    (check,) = checks
    stale_result = check(home=PipelineHome(home=str(tmp_path)))
    assert not stale_result.passed and f"{old_test.name}: not a struct file" in str(stale_result.metadata["problems"].value)


# --------------------------------------------------------------------------- run settings, refused before any work


@pytest.fixture(scope="module")
def run_home(tmp_path_factory):
    """A home holding one materialised asset, whose outputs every refused run must leave alone."""
    import os

    from pipelines.run import run

    home = tmp_path_factory.mktemp("run_home") / "home"
    os.environ.setdefault("DAGSTER_HOME", str(home / ".dagster_home"))
    run(str(home), 1, {"ops": {"nordland_raw": {"config": {"scale": {"frames": 3, "width": 32, "height": 24}}}}},
        selection=["nordland_raw"])
    return home


def _config_problems(home: Path, config: dict, **names) -> str:
    from pipelines.run import run
    from pipelines.validate import ConfigError

    before = _snapshot(home / "data")
    runs = sorted((home / ".dagster_home").rglob("*.db"))
    with pytest.raises(ConfigError) as err:
        run(str(home), 1, config, **names)
    assert _snapshot(home / "data") == before and sorted((home / ".dagster_home").rglob("*.db")) == runs
    return str(err.value)


@pytest.mark.parametrize("config, names, expected", [
    ({"ops": {"oxford_hard_splits": {"config": {"frame_separation": 2.0}}}}, {},
     "ops: unknown asset 'oxford_hard_splits' (did you mean 'oxford_hard_split'?)"),
    ({"resources": {"encoder": {"config": {"chekpoint": "/weights.pth"}}}}, {},
     "resources.encoder.config: unknown setting 'chekpoint' (did you mean 'checkpoint'?)"),
    ({"ops": {"oxford_hard_split": {"config": {"frame_seperation": 2.0}}}}, {},
     "ops.oxford_hard_split.config: unknown setting 'frame_seperation' (did you mean 'frame_separation'?)"),
    ({"op": {}}, {}, "config: unknown top-level key 'op' (did you mean 'ops'?)"),
    ({}, {"selection": ["nordlnd_shards"]}, "--select: unknown asset 'nordlnd_shards' (did you mean 'nordland_shards'?)"),
    ({}, {"rebuild_from": ["oxford_hard_splitt"]}, "--rebuild-from: unknown asset 'oxford_hard_splitt' (did you mean 'oxford_hard_split'?)"),
    ({"ops": {"oxford_hard_split": {"config": {"radius": -10}}}}, {},
     "ops.oxford_hard_split.config.radius: Input should be greater than or equal to 0 (got -10)"),
    ({"ops": {"oxford_hard_split": {"config": {"frame_separation": float("nan")}}}}, {},
     "ops.oxford_hard_split.config.frame_separation: Input should be a finite number (got nan)"),
    ({"ops": {"oxford_easy_split": {"config": {"nontrivial_radius": -1.0}}}}, {},
     "ops.oxford_easy_split.config.nontrivial_radius: Input should be greater than or equal to 0"),
    ({"ops": {"nordland_split": {"config": {"negatives_per_query": -1}}}}, {},
     "ops.nordland_split.config.negatives_per_query: Input should be greater than or equal to 1 (got -1)"),
    ({"ops": {"oxford_hard_split": {"config": {"test_sections": [7, 8]}}}}, {},
     "test_sections must be section numbers 1..n_sections (6), got [7, 8]"),
    ({"ops": {"nordland_split": {"config": {"test_range": [18100, 15100]}}}}, {},
     "test_range must be [start, end) with start < end, got [18100, 15100]"),
    ({"ops": {"oxford_seqnet_split": {"config": {"test_route_ranges": [0.9, 0.2]}}}}, {},
     "test_route_ranges must be [lo, hi) pairs of route fractions with lo < hi, got [0.9, 0.2]"),
    ({"ops": {"nuscenes_split": {"config": {"max_heading_deg": 400.0}}}}, {},
     "ops.nuscenes_split.config.max_heading_deg: Input should be less than or equal to 180"),
    ({"ops": {"nordland_split": {"config": {"test_db": []}}}}, {}, "ops.nordland_split.config.test_db: List should have at least 1 item"),
    ({"ops": {"nordland_frame_table": {"config": {"size": 3}}}}, {}, "ops.nordland_frame_table.config: nordland_frame_table takes no settings"),
    ({"ops": {"nordland_raw": {"settings": {}}}}, {}, "ops.nordland_raw: unknown key 'settings'"),
    ({"resources": {"encoder": {"config": {"checkpoint": "/nowhere/cct_14_7x2_384.pth"}}}}, {},
     "resources.encoder.config.checkpoint: no such file or folder: /nowhere/cct_14_7x2_384.pth"),
    ({"resources": {"encoder": {"config": {"batch_size": 0}}}}, {},
     "resources.encoder.config.batch_size: Input should be greater than or equal to 1 (got 0)"),
    ({"resources": {"baselines": {"config": {"baseline_feature": "published"}}}}, {},
     "resources.baselines.config: unknown setting 'baseline_feature' (did you mean 'baseline_features'?)"),
    ({"resources": {"baselines": {"config": {"baseline_features": "publish"}}}}, {},
     "resources.baselines.config.baseline_features: Input should be 'auto', 'published' or 'pooled_cct' (got 'publish')"),
    ({"resources": {"baselines": {"config": {"vgg16_netvlad_checkpoint": "/nowhere/mapillary_WPCA4096.pth.tar"}}}}, {},
     "resources.baselines.config.vgg16_netvlad_checkpoint: no such file or folder: /nowhere/mapillary_WPCA4096.pth.tar"),
    ({"resources": {"baselines": {"config": {"resnet18_gem_chekpoint": "/weights.pth"}}}}, {},
     "resources.baselines.config: unknown setting 'resnet18_gem_chekpoint' (did you mean 'resnet18_gem_checkpoint'?)"),
    ({"ops": {"nuscenes_raw": {"config": {"source": "local", "path": "/nowhere/nuscenes"}}}}, {},
     "ops.nuscenes_raw.config.path: no such file or folder: /nowhere/nuscenes"),
    ({"ops": {"robotcar_raw": {"config": {"source": "lcoal"}}}}, {},
     "ops.robotcar_raw.config.source: Input should be 'synthetic', 'local' or 'url' (got 'lcoal')"),
], ids=lambda value: str(value)[:60])
def test_bad_setting_is_refused_before_any_work(run_home, config, names, expected):
    assert expected in _config_problems(run_home, config, **names)


def test_every_problem_is_reported_at_once(run_home):
    config = {"ops": {"oxford_hard_split": {"config": {"radius": -10, "negative_radius": -1}}, "nordlnd_raw": {}},
              "resources": {"encoder": {"config": {"chekpoint": "x"}}}}
    message = _config_problems(run_home, config)
    assert all(part in message for part in ("radius", "negative_radius", "nordlnd_raw", "chekpoint")), message


def test_local_source_inside_the_home_is_refused_before_any_work(run_home):
    config = {"ops": {"nordland_raw": {"config": {"source": "local", "path": str(run_home / "data" / "raw" / "nordland")}}}}
    assert "lies inside the pipeline home" in _config_problems(run_home, config)

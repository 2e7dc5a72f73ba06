"""Downloads against a real HTTP server on 127.0.0.1, and extraction of real tar/zip archives."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from seqvpr.acquire import download, download_manifest, extract, ingest_local, load_manifest
from seqvpr.errors import DataError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, every byte position distinguishable
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Behaviour:
    """What the test server does; tests flip these fields."""

    def __init__(self):
        self.payload = PAYLOAD
        self.honour_range = True
        self.cut_after: list[int] = []  # per response, in order: bytes of body sent before hanging up
        self.fail_with: list[int] = []  # per request, in order: status codes to answer before serving
        self.corrupt = False
        self.served_bytes = 0
        self.requests: list[str | None] = []  # Range header of every request


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        b: Behaviour = self.server.behaviour
        b.requests.append(self.headers.get("Range"))
        if b.fail_with:
            self.send_response(b.fail_with.pop(0))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = bytearray(b.payload)
        if b.corrupt:
            body[len(body) // 2] ^= 0xFF
        start = 0
        rng = self.headers.get("Range")
        if rng and b.honour_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        chunk = bytes(body[start:])
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        if b.cut_after:
            chunk = chunk[: b.cut_after.pop(0)]
        self.wfile.write(chunk)
        self.wfile.flush()
        b.served_bytes += len(chunk)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.behaviour = Behaviour()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def url_of(httpd, name="data.bin"):
    return f"http://127.0.0.1:{httpd.server_address[1]}/{name}"


# --------------------------------------------------------------------------- download


def test_download_verifies_and_second_call_is_a_no_op(server, tmp_path):
    dest = tmp_path / "data.bin"
    seen = []
    download(url_of(server), dest, sha256=PAYLOAD_SHA, size=len(PAYLOAD), backoff_s=0.001,
             progress=lambda done, total: seen.append((done, total)))
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "data.bin.part").exists()
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    download(url_of(server), dest, sha256=PAYLOAD_SHA, size=len(PAYLOAD))
    assert len(server.behaviour.requests) == 1
    assert server.behaviour.served_bytes == len(PAYLOAD)


def test_resume_after_cut_fetches_only_missing_bytes(server, tmp_path):
    server.behaviour.cut_after = [300_000, 200_000]
    dest = tmp_path / "data.bin"
    download(url_of(server), dest, sha256=PAYLOAD_SHA, size=len(PAYLOAD), backoff_s=0.001)
    assert dest.read_bytes() == PAYLOAD
    assert server.behaviour.requests == [None, "bytes=300000-", "bytes=500000-"]
    assert server.behaviour.served_bytes == len(PAYLOAD)  # nothing fetched twice


def test_resumes_an_existing_part_file(server, tmp_path):
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:123_456])
    download(url_of(server), dest, sha256=PAYLOAD_SHA, size=len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert server.behaviour.requests == ["bytes=123456-"]
    assert server.behaviour.served_bytes == len(PAYLOAD) - 123_456


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.behaviour.honour_range = False
    dest = tmp_path / "data.bin"
    # a stale part file whose bytes are wrong: appending the 200 body to it would corrupt the file
    (tmp_path / "data.bin.part").write_bytes(b"x" * 1000)
    download(url_of(server), dest, sha256=PAYLOAD_SHA, size=len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert server.behaviour.requests == ["bytes=1000-"]


def test_part_file_already_complete_is_finished_by_416(server, tmp_path):
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)  # size unknown to the caller
    download(url_of(server), dest, sha256=PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD
    assert server.behaviour.requests == [f"bytes={len(PAYLOAD)}-"]
    assert server.behaviour.served_bytes == 0


def test_cuts_that_make_progress_do_not_use_up_retries(server, tmp_path):
    server.behaviour.cut_after = [100_000] * 6
    download(url_of(server), tmp_path / "data.bin", sha256=PAYLOAD_SHA, retries=0, backoff_s=0.001)
    assert len(server.behaviour.requests) == 7
    assert server.behaviour.served_bytes == len(PAYLOAD)


def test_checksum_mismatch_deletes_file_and_names_it(server, tmp_path):
    server.behaviour.corrupt = True
    dest = tmp_path / "data.bin"
    with pytest.raises(DataError) as err:
        download(url_of(server), dest, sha256=PAYLOAD_SHA, size=len(PAYLOAD))
    assert str(err.value).startswith(str(dest))
    assert f"sha256 mismatch: expected {PAYLOAD_SHA} got " in str(err.value)
    assert not dest.exists() and not (tmp_path / "data.bin.part").exists()


def test_size_mismatch_is_reported(server, tmp_path):
    with pytest.raises(DataError, match="size mismatch: expected 10 bytes"):
        download(url_of(server), tmp_path / "data.bin", size=10)


def test_retries_with_exponential_backoff_then_succeeds(server, tmp_path):
    server.behaviour.fail_with = [503, 503, 503]
    t0 = time.monotonic()
    download(url_of(server), tmp_path / "data.bin", sha256=PAYLOAD_SHA, retries=3, backoff_s=0.05)
    elapsed = time.monotonic() - t0
    assert len(server.behaviour.requests) == 4
    assert elapsed >= 0.05 + 0.10 + 0.20  # 0.05 * (1 + 2 + 4)


def test_gives_up_after_retries(server, tmp_path):
    server.behaviour.fail_with = [503] * 10
    dest = tmp_path / "data.bin"
    with pytest.raises(DataError, match="failed after 2 retries") as err:
        download(url_of(server), dest, retries=2, backoff_s=0.001)
    assert err.value.path == str(dest)
    assert len(server.behaviour.requests) == 3


def test_connection_refused_is_retried_then_reported(tmp_path):
    import socket

    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError, match="failed after 1 retries"):
        download(f"http://127.0.0.1:{port}/x", tmp_path / "x", retries=1, backoff_s=0.001, timeout_s=2)


def test_not_found_is_not_retried(server, tmp_path):
    server.behaviour.fail_with = [404]
    with pytest.raises(DataError, match="HTTP 404"):
        download(url_of(server), tmp_path / "data.bin", retries=5, backoff_s=0.001)
    assert len(server.behaviour.requests) == 1


def test_manifest_downloads_and_validates(server, tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps([
        {"url": url_of(server, "a.bin"), "filename": "a.bin", "size": len(PAYLOAD), "sha256": PAYLOAD_SHA},
        {"url": url_of(server, "b.bin"), "filename": "b.bin", "size": None, "sha256": None},
    ]))
    paths = download_manifest(manifest, tmp_path / "dl")
    assert [p.name for p in paths] == ["a.bin", "b.bin"]
    assert hashlib.sha256(paths[1].read_bytes()).hexdigest() == PAYLOAD_SHA
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"url": "http://x/a", "filename": "../a", "size": 1, "sha256": None}]))
    with pytest.raises(DataError, match="plain file name") as err:
        load_manifest(bad)
    assert err.value.path == str(bad)


# --------------------------------------------------------------------------- extraction


def make_tar(path: Path, members: list[tuple], mode: str = "w") -> Path:
    """members: (name, bytes) for files, (name, "sym"|"hard", target) for links."""
    with tarfile.open(path, mode) as tar:
        for m in members:
            info = tarfile.TarInfo(m[0])
            if len(m) == 3:
                info.type = tarfile.SYMTYPE if m[1] == "sym" else tarfile.LNKTYPE
                info.linkname = m[2]
                tar.addfile(info)
            else:
                info.size = len(m[1])
                tar.addfile(info, io.BytesIO(m[1]))
    return path


def test_extracts_tgz_and_merges_chunks(tmp_path):
    run = "2014-12-16-18-44-24"
    a = make_tar(tmp_path / f"{run}_stereo_centre_01.tar", [(f"{run}/stereo/centre/1.png", b"one"),
                                                          (f"{run}/stereo.timestamps", b"1 1\n")])
    b = make_tar(tmp_path / f"{run}_stereo_centre_02.tgz", [(f"{run}/stereo/centre/2.png", b"two")], "w:gz")
    target = tmp_path / "raw"
    assert extract(a, target) and extract(b, target)
    assert sorted(p.name for p in (target / run / "stereo" / "centre").iterdir()) == ["1.png", "2.png"]
    assert (target / run / "stereo.timestamps").read_text() == "1 1\n"
    assert not any(p.name.endswith(".extracting") for p in tmp_path.iterdir())


def test_re_extract_is_a_no_op(tmp_path):
    arc = make_tar(tmp_path / "a.tar", [("d/f.txt", b"original")])
    target = tmp_path / "raw"
    assert extract(arc, target) is True
    (target / "d" / "f.txt").write_bytes(b"edited after extraction")
    assert extract(arc, target) is False
    assert (target / "d" / "f.txt").read_bytes() == b"edited after extraction"
    (target / "d" / "f.txt").unlink()
    (target / "d").rmdir()  # the extracted entry is gone: extract again
    assert extract(arc, target) is True
    assert (target / "d" / "f.txt").read_bytes() == b"original"


@pytest.mark.parametrize("members, problem", [
    ([("ok.txt", b"x"), ("../evil.txt", b"x")], "'../evil.txt' escapes the target"),
    ([("a/../../evil.txt", b"x")], "escapes the target"),
    ([("/tmp/evil.txt", b"x")], "'/tmp/evil.txt' has an absolute path"),
    ([("link", "sym", "../../etc")], "'link' links outside the target"),
    ([("link", "sym", "/etc/passwd")], "'link' links to the absolute path"),
    ([("d/link", "hard", "../outside")], "'d/link' links outside the target"),
])
def test_refuses_escaping_members(tmp_path, members, problem):
    arc = make_tar(tmp_path / "evil.tar", members)
    target = tmp_path / "sub" / "raw"
    with pytest.raises(DataError, match=problem) as err:
        extract(arc, target)
    assert err.value.path == str(arc)
    assert not target.exists()  # nothing was moved in
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "sub" / "evil.txt").exists()
    assert [p.name for p in (tmp_path / "sub").iterdir()] == []


def test_refuses_symlink_that_escapes_through_another_link(tmp_path):
    # "c" -> "." is inside; "c/../x" looks inside lexically but really resolves next to the target
    arc = make_tar(tmp_path / "evil.tar", [("c", "sym", "."), ("a", "sym", "c/../x")])
    with pytest.raises(DataError, match="unsafe member refused") as err:
        extract(arc, tmp_path / "raw")
    assert err.value.path == str(arc)


@pytest.mark.parametrize("name, problem", [("../evil.txt", "'../evil.txt' escapes"),
                                           ("/abs/evil.txt", "'/abs/evil.txt' has an absolute path")])
def test_refuses_zip_members_outside(tmp_path, name, problem):
    arc = tmp_path / "evil.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("fine.txt", b"x")
        zf.writestr(zipfile.ZipInfo(name), b"x")
    with pytest.raises(DataError, match=problem) as err:
        extract(arc, tmp_path / "raw")
    assert err.value.path == str(arc)
    assert not (tmp_path / "raw").exists()


def test_truncated_tar_and_gzip_raise_data_error(tmp_path):
    plain = make_tar(tmp_path / "full.tar", [("big.bin", PAYLOAD)])
    cut = tmp_path / "cut.tar"
    cut.write_bytes(plain.read_bytes()[:600_000])
    target = tmp_path / "raw"
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        extract(cut, target)
    assert err.value.path == str(cut)
    gz = make_tar(tmp_path / "full.tgz", [("big.bin", PAYLOAD)], "w:gz")
    cut_gz = tmp_path / "cut.tgz"
    cut_gz.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        extract(cut_gz, target)
    assert err.value.path == str(cut_gz)
    assert not target.exists()


def test_corrupt_zip_raises_data_error(tmp_path):
    arc = tmp_path / "c.zip"
    with zipfile.ZipFile(arc, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a.bin", PAYLOAD)
    data = bytearray(arc.read_bytes())
    data[1000] ^= 0xFF  # inside a.bin's stored bytes: CRC fails on read
    arc.write_bytes(bytes(data))
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        extract(arc, tmp_path / "raw")
    assert err.value.path == str(arc)


# --------------------------------------------------------------------------- local ingest


def test_ingest_links_a_folder_already_in_layout(tmp_path):
    src = tmp_path / "my_nuscenes"
    (src / "v1.0-mini").mkdir(parents=True)
    (src / "v1.0-mini" / "scene.json").write_text("[]")
    dest = tmp_path / "home" / "raw" / "nuscenes"
    report = ingest_local(src, dest, "nuscenes")
    assert report.mode == "linked"
    assert dest.is_symlink() and dest.resolve() == src.resolve()
    assert (dest / "v1.0-mini" / "scene.json").read_text() == "[]"


def test_ingest_extracts_nordland_season_archives(tmp_path):
    src = tmp_path / "downloads"
    src.mkdir()
    make_tar(src / "summer.tar.gz", [("summer/images-00001.png", b"s1")], "w:gz")  # season folder inside
    make_tar(src / "winter.tar.gz", [("images-00001.png", b"w1")], "w:gz")  # bare frames
    with zipfile.ZipFile(src / "spring_images_test.zip", "w") as zf:
        zf.writestr("images-00001.png", b"p1")
    (src / "gps.csv").write_text("frame,lat,lon\n")
    dest = tmp_path / "raw"
    report = ingest_local(src, dest, "nordland")
    assert report.mode == "extracted"
    assert (dest / "summer" / "images-00001.png").read_bytes() == b"s1"
    assert (dest / "winter" / "images-00001.png").read_bytes() == b"w1"
    assert (dest / "spring" / "images-00001.png").read_bytes() == b"p1"
    assert (dest / "gps.csv").is_symlink()
    again = ingest_local(src, dest, "nordland")
    assert again.extracted == [] and len(again.skipped) == 3


def test_ingest_rejects_folder_without_layout_or_archives(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither a robotcar folder layout"):
        ingest_local(tmp_path / "empty", tmp_path / "raw", "robotcar")


def test_ingest_robotcar_chunks_and_sdk_models(tmp_path):
    run = "2014-12-16-18-44-24"
    src = tmp_path / "downloads"
    (src / "models").mkdir(parents=True)
    (src / "models" / "stereo_narrow_left.txt").write_text("fx fy cx cy\n")
    make_tar(src / f"{run}_stereo_centre_01.tar", [(f"{run}/stereo/centre/1418756721000000.png", b"a"),
                                                   (f"{run}/stereo.timestamps", b"1418756721000000 1\n")])
    make_tar(src / f"{run}_stereo_centre_02.tar", [(f"{run}/stereo/centre/1418756722000000.png", b"b")])
    make_tar(src / f"{run}_gps.tar", [(f"{run}/gps/ins.csv", b"timestamp\n")])
    (src / f"{run}_stereo_centre_03.tar.part").write_bytes(b"partial download, ignored")
    dest = tmp_path / "raw"
    report = ingest_local(src, dest, "robotcar")
    assert report.extracted == [f"{run}_gps.tar", f"{run}_stereo_centre_01.tar", f"{run}_stereo_centre_02.tar"]
    assert report.linked == ["models"]
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        f"{run}/gps/ins.csv", f"{run}/stereo.timestamps",
        f"{run}/stereo/centre/1418756721000000.png", f"{run}/stereo/centre/1418756722000000.png"]
    assert (dest / "models").is_symlink()
    assert (dest / "models" / "stereo_narrow_left.txt").read_text() == "fx fy cx cy\n"

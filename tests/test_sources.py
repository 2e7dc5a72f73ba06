"""The `*_raw` source assets, materialised through Dagster against real folders and a real HTTP server."""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import json
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from dagster import materialize

from assets.sources import source_assets
from pipelines.resources import PipelineHome
from seqvpr.errors import DataError

ASSETS = {a.key.path[-1]: a for a in source_assets}


def run(asset_name: str, home: Path, **config):
    result = materialize([ASSETS[asset_name]], resources={"home": PipelineHome(home=str(home))},
                         run_config={"ops": {asset_name: {"config": config}}}, raise_on_error=True)
    (mat,) = result.asset_materializations_for_node(asset_name)
    return {k: v.value for k, v in mat.metadata.items()}


def tgz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class CountingHandler(SimpleHTTPRequestHandler):
    served: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        CountingHandler.served.append(self.path)
        super().do_GET()


def test_assets_exist_in_group_sources():
    assert sorted(ASSETS) == ["nordland_raw", "nuscenes_raw", "robotcar_raw"]
    for a in ASSETS.values():
        assert a.group_names_by_key[a.key] == "sources"


def test_local_copy_in_layout_is_linked_not_copied(tmp_path):
    src = tmp_path / "my_robotcar"
    run_dir = src / "2014-12-16-18-44-24" / "stereo" / "centre"
    run_dir.mkdir(parents=True)
    (run_dir / "1418756721.png").write_bytes(b"x" * 10)
    home = tmp_path / "home"
    meta = run("robotcar_raw", home, source="local", path=str(src))
    raw = home / "data" / "raw" / "robotcar"
    assert raw.is_symlink() and raw.resolve() == src.resolve()
    assert meta["source"] == "local" and meta["mode"] == "linked"
    assert (meta["files"], meta["bytes"]) == (1, 10)


def test_url_manifest_downloads_verifies_extracts_and_reruns_cheaply(tmp_path):
    served = tmp_path / "www"
    served.mkdir()
    blob = tgz({"v1.0-mini/scene.json": b"[]", "samples/CAM_FRONT/a.jpg": b"jpeg"})
    (served / "v1.0-mini.tgz").write_bytes(blob)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(CountingHandler, directory=str(served)))
    threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True).start()
    try:
        manifest = tmp_path / "manifest.json"
        manifest.write_text(json.dumps([{
            "url": f"http://127.0.0.1:{httpd.server_address[1]}/v1.0-mini.tgz", "filename": "v1.0-mini.tgz",
            "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}]))
        home = tmp_path / "home"
        CountingHandler.served = []
        meta = run("nuscenes_raw", home, source="url", manifest=str(manifest))
        raw = home / "data" / "raw" / "nuscenes"
        assert (raw / "samples" / "CAM_FRONT" / "a.jpg").read_bytes() == b"jpeg"
        assert (home / "data" / "downloads" / "nuscenes" / "v1.0-mini.tgz").read_bytes() == blob
        assert meta["checksums_verified"] == 1 and meta["archives_extracted"] == 1
        assert (meta["files"], meta["bytes"]) == (2, 6)
        again = run("nuscenes_raw", home, source="url", manifest=str(manifest))
        assert CountingHandler.served == ["/v1.0-mini.tgz"]  # nothing downloaded the second time
        assert again["archives_extracted"] == 0 and again["archives_skipped"] == 1
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_switching_source_replaces_raw_but_never_touches_the_users_copy(tmp_path):
    src = tmp_path / "my_nordland"
    (src / "summer").mkdir(parents=True)
    (src / "summer" / "images-00001.png").write_bytes(b"mine")
    archives = tmp_path / "archives"
    archives.mkdir()
    (archives / "winter.tar.gz").write_bytes(tgz({"images-00007.png": b"w"}))
    home = tmp_path / "home"
    run("nordland_raw", home, source="local", path=str(src))
    meta = run("nordland_raw", home, source="local", path=str(archives))
    raw = home / "data" / "raw" / "nordland"
    assert not raw.is_symlink()
    assert sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*")) == ["winter", "winter/images-00007.png"]
    assert (src / "summer" / "images-00001.png").read_bytes() == b"mine"
    assert meta["archives_extracted"] == 1


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path):
    raw = tmp_path / "home" / "data" / "raw" / "nordland"
    raw.mkdir(parents=True)
    (raw / "precious.png").write_bytes(b"p")
    src = tmp_path / "archives"
    src.mkdir()
    (src / "winter.tar.gz").write_bytes(tgz({"images-00007.png": b"w"}))
    from seqvpr.acquire import acquire_dataset

    with pytest.raises(DataError, match="not written by this pipeline") as err:
        acquire_dataset("nordland", raw, tmp_path / "dl", tmp_path / "truth", source="local", path=str(src))
    assert err.value.path == str(raw)
    assert (raw / "precious.png").read_bytes() == b"p"


def test_bad_source_is_a_clear_error(tmp_path):
    from seqvpr.acquire import acquire_dataset

    with pytest.raises(ValueError, match="unknown source 'ftp'"):
        acquire_dataset("nordland", tmp_path / "raw", tmp_path / "dl", tmp_path / "t", source="ftp")
    with pytest.raises(ValueError, match="source=local needs path"):
        acquire_dataset("nordland", tmp_path / "raw", tmp_path / "dl", tmp_path / "t", source="local")


GENERATED = [d for d in ("nuscenes", "nordland", "robotcar") if importlib.util.find_spec(f"seqvpr.synthetic.{d}")]
TINY = {"nuscenes": {"scenes_per_location": 1, "samples_per_scene": 3, "width": 64, "height": 48},
        "nordland": {"frames": 5, "width": 64, "height": 48},
        "robotcar": {"frames_per_traversal": 5, "width": 64, "height": 48}}


@pytest.mark.skipif(not GENERATED, reason="no synthetic generator has landed yet")
def test_synthetic_generates_once_per_seed(tmp_path):
    dataset = GENERATED[0]
    home = tmp_path / "home"
    first = run(f"{dataset}_raw", home, seed=3, scale=TINY[dataset])
    raw = home / "data" / "raw" / dataset
    assert first["skipped"] is False and first["files"] > 0
    assert any((home / "data" / "truth" / dataset).iterdir())
    assert not any(p.name.endswith(".partial") for p in raw.parent.iterdir())
    before = {p: p.stat().st_mtime_ns for p in raw.rglob("*") if p.is_file()}
    second = run(f"{dataset}_raw", home, seed=3, scale=TINY[dataset])
    assert second["skipped"] is True and second["files"] == first["files"]
    assert {p: p.stat().st_mtime_ns for p in raw.rglob("*") if p.is_file()} == before
    assert json.loads((raw.parent / f".{dataset}.source.json").read_text())["seed"] == 3
    third = run(f"{dataset}_raw", home, seed=4, scale=TINY[dataset])
    assert third["skipped"] is False


def test_failed_ingest_can_be_continued(tmp_path):
    from seqvpr.acquire import acquire_dataset

    src = tmp_path / "archives"
    src.mkdir()
    (src / "summer.tar.gz").write_bytes(tgz({"images-00001.png": b"s"}))
    good_winter = tgz({"images-00001.png": b"w"})
    (src / "winter.tar.gz").write_bytes(good_winter[: len(good_winter) // 2])  # still downloading
    raw = tmp_path / "raw"
    args = ("nordland", raw, tmp_path / "dl", tmp_path / "truth")
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        acquire_dataset(*args, source="local", path=str(src))
    assert err.value.path == str(src / "winter.tar.gz")
    (src / "winter.tar.gz").write_bytes(good_winter)
    summary = acquire_dataset(*args, source="local", path=str(src))
    assert (summary["archives_extracted"], summary["archives_skipped"]) == (1, 1)
    assert (raw / "winter" / "images-00001.png").read_bytes() == b"w"
    assert (raw / "summer" / "images-00001.png").read_bytes() == b"s"

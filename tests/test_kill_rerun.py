"""Kill-and-rerun: a stage SIGKILLed half-way, then run again, ends byte-identical to a clean run.

Each stage runs in a real subprocess (``sys.executable -c``). The test watches the output folder
and sends SIGKILL as soon as the stage's first output appears under its final name, i.e. while the
stage is still writing the rest. At that moment every file under a final name must already be
complete (identical to the clean run's file of that name); temporary files may only carry the
hidden ``.<name>.*.partial`` names of seqvpr.atomic (or a download's ``.part``); a shard folder,
built whole under a temporary name, must not be visible at all. The rerun must then produce exactly
the clean run's files, byte for byte.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from seqvpr.benchmarks import BENCHMARKS, configure
from seqvpr.datasets.frames import frame_table
from seqvpr.splits import build_split, write_split
from seqvpr.synthetic import generate

REPO = Path(__file__).resolve().parents[1]
SEASONS = ("spring", "summer", "fall", "winter")


def _final_files(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file whose name is final (no hidden temporary names)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts) and not path.name.endswith(".part"):
            out[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _temporary_files(folder: Path) -> list[str]:
    """Files under a hidden (temporary) name or inside a hidden folder, and download ``.part`` files."""
    return sorted(rel.as_posix() for rel in (p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
                  if any(part.startswith(".") for part in rel.parts) or rel.name.endswith(".part"))


def _run(script: str, **kw) -> None:
    subprocess.run([sys.executable, "-c", textwrap.dedent(script)], check=True, cwd=REPO, env=_env(), timeout=120, **kw)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _kill_when(script: str, appeared: callable, timeout_s: float = 60.0) -> None:
    """Start ``script``; SIGKILL it once ``appeared()`` is true. Fails if it finished first."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout_s
    try:
        while not appeared():
            if proc.poll() is not None:
                pytest.fail(f"stage ended (rc {proc.returncode}) before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("stage made no visible progress in time")
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL, "the stage finished before the kill landed"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def _assert_interrupted_state(out: Path, clean: dict[str, str], final_output: str) -> dict[str, str]:
    """After the kill: the stage's last output is absent and every final-named file is complete."""
    partial = _final_files(out)
    assert final_output not in partial, "killed too late: the stage's last output was already written"
    assert partial, "killed too early: nothing under a final name yet"
    assert {name: clean.get(name) for name in partial} == partial, "a file under a final name is incomplete"
    return partial


# --------------------------------------------------------------------------- download


PAYLOAD = hashlib.sha256(b"seed").digest() * (1 << 15)  # 1 MiB, not compressible by accident
CHUNK = 16 << 10


class SlowHandler(BaseHTTPRequestHandler):
    """Serves PAYLOAD honouring Range; sleeps ``server.delay_s`` after each 16 KiB chunk."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.ranges.append(self.headers.get("Range"))
        start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0]) if self.headers.get("Range") else 0
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            for i in range(0, len(body), CHUNK):
                self.wfile.write(body[i:i + CHUNK])
                self.wfile.flush()
                time.sleep(self.server.delay_s)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client was killed


@pytest.fixture
def slow_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    httpd.delay_s, httpd.ranges = 0.02, []
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_killed_download_resumes_to_the_exact_file(slow_server, tmp_path):
    url = f"http://127.0.0.1:{slow_server.server_address[1]}/v1.0-mini.tgz"
    dest = tmp_path / "downloads" / "v1.0-mini.tgz"
    part = dest.with_name(dest.name + ".part")
    script = f"""
        from seqvpr.acquire import download
        download({url!r}, {str(dest)!r}, sha256={hashlib.sha256(PAYLOAD).hexdigest()!r}, size={len(PAYLOAD)},
                 retries=2, backoff_s=0.1)
    """
    _kill_when(script, lambda: part.exists() and part.stat().st_size >= 4 * CHUNK)
    assert not dest.exists(), "a partial download is visible under its final name"
    kept = part.stat().st_size
    assert 0 < kept < len(PAYLOAD) and part.read_bytes() == PAYLOAD[:kept]

    slow_server.delay_s = 0.0
    _run(script)
    assert dest.read_bytes() == PAYLOAD and not part.exists()
    assert slow_server.ranges[0] is None and slow_server.ranges[-1] == f"bytes={kept}-", "the rerun did not resume"


# --------------------------------------------------------------------------- normalisation


NORMALISE = """
    from pathlib import Path
    from seqvpr.datasets import nordland
    from seqvpr.datasets.frames import write_table
    raw, data = Path({raw!r}), Path({data!r})
    result = nordland.normalise_partition(raw, "summer", data / "frames" / "nordland" / "summer", data, size=384)
    write_table(result.table, data / "tables" / "nordland" / "summer.parquet")
"""


def test_killed_normalisation_reruns_to_identical_frames_and_table(tmp_path):
    raw = tmp_path / "raw" / "nordland"
    generate("nordland", raw, seed=4, truth_root=tmp_path / "truth", frames=9, width=64, height=48)
    clean_dir, killed_dir = tmp_path / "clean", tmp_path / "killed"
    _run(NORMALISE.format(raw=str(raw), data=str(clean_dir)))
    clean = _final_files(clean_dir)
    assert len(clean) == 55 and pq.read_table(clean_dir / "tables" / "nordland" / "summer.parquet").num_rows == 54  # 4 x 9 training frames, 9 val, 9 test

    frames = killed_dir / "frames" / "nordland" / "summer"
    _kill_when(NORMALISE.format(raw=str(raw), data=str(killed_dir)),
               lambda: frames.is_dir() and sum(1 for p in frames.iterdir() if not p.name.startswith(".")) >= 3)
    _assert_interrupted_state(killed_dir, clean, "tables/nordland/summer.parquet")
    assert all(name.endswith(".partial") for name in _temporary_files(killed_dir))

    _run(NORMALISE.format(raw=str(raw), data=str(killed_dir)))
    assert _final_files(killed_dir) == clean


# --------------------------------------------------------------------------- struct files


def _long_nordland_table(frames_per_season: int):
    """Four Nordland seasons along a straight 2 m-per-frame track (no images needed for splits)."""
    rows = []
    for season in SEASONS:
        for i in range(frames_per_season):
            rows.append({
                "frame_id": f"{season}_images-{i:05d}", "dataset": "nordland", "location": "nordland",
                "traversal": season, "condition": season, "frame_index": i, "timestamp_us": i * 40_000,
                "image_path": f"frames/nordland/{season}/{season}_images-{i:05d}.png",
                "source_file": f"{season}/images-{i:05d}.png", "lat": 65.0, "lon": 13.0,
                "easting": 400_000.0 + 2.0 * i, "northing": 7_300_000.0, "utm_zone": 33, "utm_band": "W",
                "heading_deg": 90.0, "place_index": i,
            })
    return frame_table(rows)


STRUCT = """
    from pathlib import Path
    from seqvpr.splits import read_split
    from seqvpr.structfile import write_struct_files
    table, bench = read_split(Path({split!r}))
    write_struct_files(table, bench, Path({out!r}))
"""


def test_killed_struct_file_writing_reruns_to_identical_files(tmp_path):
    split = tmp_path / "splits" / "nordland.parquet"
    ranges = {"train_range": [0, 6000], "val_range": [6000, 8000], "test_range": [8000, 10000]}
    write_split(build_split(_long_nordland_table(10_000), configure(BENCHMARKS["nordland"], ranges)), "nordland", ranges, split)
    clean_dir, killed_dir = tmp_path / "clean", tmp_path / "killed"
    _run(STRUCT.format(split=str(split), out=str(clean_dir)))
    clean = _final_files(clean_dir)
    assert set(clean) >= {"nordland_train_d-40_d2-10.db", "nordland_val_d-1_d2-1.db", "nordland_test_d-1_d2-1.db",
                          "nordland_splitInds.npz"}

    _kill_when(STRUCT.format(split=str(split), out=str(killed_dir)),
               lambda: (killed_dir / "nordland_train_d-40_d2-10.db").exists())
    _assert_interrupted_state(killed_dir, clean, "nordland_splitInds.npz")

    _run(STRUCT.format(split=str(split), out=str(killed_dir)))
    assert _final_files(killed_dir) == clean


# --------------------------------------------------------------------------- shards


SHARDS = """
    import numpy as np
    from pathlib import Path
    from seqvpr.shards import Sample, write_split_shards
    def samples():
        rng = np.random.default_rng(7)
        for i in range(120):
            role = "db" if i < 60 else "query"
            yield Sample(key=f"summer_images-{{i:05d}}", tokens=rng.standard_normal((576, 384)).astype(np.float16),
                         descriptor=rng.standard_normal(384).astype(np.float32),
                         row={{"split": "test", "role": role, "order": i % 60}})
    write_split_shards(Path({out!r}), "nordland", "test", samples(), max_count=10)
"""


def test_killed_shard_writing_reruns_to_identical_shards(tmp_path):
    clean_dir, killed_dir = tmp_path / "clean" / "test", tmp_path / "killed" / "test"
    _run(SHARDS.format(out=str(clean_dir)))
    clean = _final_files(clean_dir)
    assert len([name for name in clean if name.endswith(".tar")]) == 12 and "manifest.json" in clean

    def building() -> list[Path]:
        return list(killed_dir.parent.glob(f".{killed_dir.name}.*.partial/*.tar")) if killed_dir.parent.exists() else []

    _kill_when(SHARDS.format(out=str(killed_dir)), lambda: len(building()) >= 2)
    assert not killed_dir.exists(), "a split folder with partial shards is visible under its final name"
    assert building(), "the killed run's temporary folder is gone: the kill came too late"

    _run(SHARDS.format(out=str(killed_dir)))
    assert _final_files(killed_dir) == clean
    assert _temporary_files(killed_dir.parent) == [], "the rerun left the killed run's temporary folder behind"


# --------------------------------------------------------------------------- archive extraction

EXTRACT = """
    from seqvpr.acquire import extract
    extract({archive!r}, {target!r})
"""


def test_killed_extraction_leaves_a_folder_the_next_run_sweeps(tmp_path):
    """A SIGKILL mid-extraction leaves a hidden `.extracting` folder; the runner's sweep (under the
    home's lock) removes it, nothing else, and the rerun extracts exactly what a clean run does."""
    import tarfile

    from seqvpr.housekeeping import home_lock, sweep_temporaries

    content = tmp_path / "content" / "summer"
    content.mkdir(parents=True)
    for i in range(400):  # incompressible, so extraction takes long enough to be caught half-way
        (content / f"images-{i:05d}.png").write_bytes(os.urandom(64 * 1024))
    archive = tmp_path / "summer.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(content, arcname="summer")
    clean_home, killed_home = tmp_path / "clean", tmp_path / "killed"
    _run(EXTRACT.format(archive=str(archive), target=str(clean_home / "data" / "raw" / "nordland")))
    clean = _final_files(clean_home)
    assert len(clean) == 400

    raw_parent = killed_home / "data" / "raw"
    raw_parent.mkdir(parents=True)
    (raw_parent / "nordland.tar.part").write_bytes(b"a resumable download")
    _kill_when(EXTRACT.format(archive=str(archive), target=str(raw_parent / "nordland")),
               lambda: any(p.name.endswith(".extracting") and any(p.rglob("*.png")) for p in raw_parent.iterdir()))
    assert [p.name for p in raw_parent.iterdir() if p.name.endswith(".extracting")]
    with home_lock(killed_home):
        removed = sweep_temporaries(killed_home)
    assert [p.name for p in removed if p.name.endswith(".extracting")] and all(p.parent == raw_parent for p in removed)
    assert sorted(p.name for p in raw_parent.iterdir()) == ["nordland.tar.part"]
    _run(EXTRACT.format(archive=str(archive), target=str(raw_parent / "nordland")))
    assert {k: v for k, v in _final_files(killed_home).items() if not k.endswith(".part")} == clean

"""Shards read back with webdataset and tarfile, byte-identical rebuilds, no partial shard after a kill."""
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading

import numpy as np
import pytest
import webdataset as wds

from seqvpr.shards import Sample, verify_manifest, write_split_shards


def samples(n=5, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        role = "db" if i < 3 else "query"
        tokens = rng.normal(size=(576, 384)).astype(np.float16)
        yield Sample(key=f"run-a_{i:04d}", tokens=tokens, descriptor=tokens.astype(np.float32).mean(0),
                     row={"frame_id": f"run-a_{i:04d}", "role": role, "order": i if i < 3 else i - 3, "positives": [i % 3]})


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_webdataset_reads_every_sample_once(tmp_path):
    manifest = write_split_shards(tmp_path / "test", "bench", "test", samples(), max_count=2)
    assert [s["samples"] for s in manifest["shards"]] == [2, 2, 1]
    urls = [str(tmp_path / "test" / s["name"]) for s in manifest["shards"]]
    seen = []
    for sample in wds.WebDataset(urls, shardshuffle=False).decode():
        row = sample["json"]
        assert row["frame_id"] == sample["__key__"]
        assert sample["tokens.npy"].shape == (576, 384) and sample["tokens.npy"].dtype == np.float16
        seen.append(sample["__key__"])
    assert seen == [f"run-a_{i:04d}" for i in range(5)]
    expected = list(samples())
    db = np.load(tmp_path / "test" / "db_descriptors.npy")
    assert db.shape == (3, 384) and np.allclose(db[1], expected[1].descriptor)
    index = json.loads((tmp_path / "test" / "index.wids.json").read_text())
    assert index["__kind__"] == "wids-shard-index-v1" and [s["nsamples"] for s in index["shardlist"]] == [2, 2, 1]
    assert verify_manifest(tmp_path / "test") == []


def test_tar_headers_are_fixed_and_rebuild_is_identical(tmp_path):
    write_split_shards(tmp_path / "a", "bench", "train", samples())
    write_split_shards(tmp_path / "b", "bench", "train", samples())
    assert sha(tmp_path / "a" / "train-000000.tar") == sha(tmp_path / "b" / "train-000000.tar")
    with tarfile.open(tmp_path / "a" / "train-000000.tar") as tar:
        member = tar.getmembers()[0]
        assert (member.mtime, member.uid, member.gid, member.uname, member.gname, member.mode) == (0, 0, 0, "", "", 0o644)
        assert np.load(io.BytesIO(tar.extractfile(member).read())).dtype == np.float16
    (tmp_path / "a" / "train-000000.tar").write_bytes(b"tampered")
    assert "sha256 differs" in verify_manifest(tmp_path / "a")[0]


def test_killed_writer_leaves_no_shard_and_rerun_completes(tmp_path):
    script = textwrap.dedent(f"""
        import time, numpy as np
        from seqvpr.shards import Sample, write_split_shards
        def slow():
            for i in range(100):
                t = np.zeros((576, 384), np.float16)
                yield Sample(f"k{{i}}", t, t.mean(0).astype(np.float32), {{"role": "db"}})
                if i == 3:
                    print("writing", flush=True)
                    time.sleep(60)
        write_split_shards({str(tmp_path / "train")!r}, "bench", "train", slow(), max_count=2)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "train").exists()
    assert not list(tmp_path.rglob("*.tar")) or all(".partial" in str(p) for p in tmp_path.rglob("*.tar"))
    manifest = write_split_shards(tmp_path / "train", "bench", "train", samples())
    assert manifest["samples"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["train"]


def test_shards_equal_plain_tarfile_archives_of_the_same_members(tmp_path):
    """Our own member writing (zero-copy npy buffers, hashing thread) gives the bytes `tarfile` and
    `np.save` give, padding included (JSON rows of many lengths), and the manifest hashes them."""
    rows = [dict(s.row, note="x" * (i * 97)) for i, s in enumerate(samples(7))]
    data = [Sample(s.key, s.tokens, s.descriptor, row) for s, row in zip(samples(7), rows)]
    manifest = write_split_shards(tmp_path / "out", "bench", "train", data, max_count=3)
    assert [s["samples"] for s in manifest["shards"]] == [3, 3, 1]
    for index, shard in enumerate(manifest["shards"]):
        expected = tmp_path / f"plain-{index}.tar"
        with tarfile.open(expected, "w", format=tarfile.USTAR_FORMAT) as tar:
            for sample in data[3 * index: 3 * index + 3]:
                tokens, desc = io.BytesIO(), io.BytesIO()
                np.save(tokens, sample.tokens)
                np.save(desc, sample.descriptor)
                row = json.dumps(sample.row, sort_keys=True).encode()
                for suffix, payload in (("tokens.npy", tokens.getvalue()), ("desc.npy", desc.getvalue()), ("json", row)):
                    info = tarfile.TarInfo(f"{sample.key}.{suffix}")
                    info.size, info.mode = len(payload), 0o644
                    tar.addfile(info, io.BytesIO(payload))
        written = (tmp_path / "out" / shard["name"]).read_bytes()
        assert written == expected.read_bytes()
        assert shard["bytes"] == len(written) and shard["sha256"] == hashlib.sha256(written).hexdigest()


def test_failing_source_stops_the_hashing_thread(tmp_path):
    def broken():
        yield from samples(2)
        raise RuntimeError("decoder failed")

    before = threading.active_count()
    with pytest.raises(RuntimeError, match="decoder failed"):
        write_split_shards(tmp_path / "out", "bench", "train", broken())
    assert threading.active_count() == before and not (tmp_path / "out").exists()

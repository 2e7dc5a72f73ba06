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

import numpy as np
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

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


# --------------------------------------------------------------------------- the public reader


def split_samples(seed=0, db_runs=(9, 4, 2), queries=(7, 5)):
    """A split as the pipeline writes it: database runs then query runs (one a run shorter than L = 5,
    whose sequences repeat edge frames), positives within 1 place, seeded random token maps of the
    real shape."""
    rng = np.random.default_rng(seed)
    out = []
    for role, runs in (("db", db_runs), ("query", queries)):
        order = 0
        for run, length in enumerate(runs):
            for _ in range(length):
                tokens = rng.normal(size=(576, 384)).astype(np.float16)
                key = f"{role}-{run}_{order:04d}"
                positives = [p for p in (order - 1, order, order + 1) if 0 <= p < sum(db_runs)] if role == "query" else []
                row = {"frame_id": key, "role": role, "order": order, "seq_start": sum(runs[:run]),
                       "seq_end": sum(runs[:run + 1]), "positives": positives,
                       "nontrivial_positives": positives[:1] if role == "query" and order % 3 else []}
                out.append(Sample(key, tokens, tokens.astype(np.float32).mean(0), row))
                order += 1
    return out


PROVENANCE = {"encoder": {"model_id": "cct384-test"}, "split_settings": {"frame_separation": 2.0}, "code_version": "test"}


@pytest.fixture
def split_folder(tmp_path):
    data = split_samples()
    negatives = np.array([[(q * 5 + j) % 15 if j < 4 else -1 for j in range(6)] for q in range(12)], np.int64)
    write_split_shards(tmp_path / "train", "bench", "train", data, max_count=256, total=len(data), min_shards=4,
                       provenance=PROVENANCE, negatives=negatives)
    return tmp_path / "train", data, negatives


def windows_by_hand(bounds, length):
    """seqNet's centred window, shifted inside its run; edge frames repeated in a shorter run."""
    out = []
    for i, (start, end) in enumerate(bounds):
        first = i - length // 2
        if end - start >= length:
            first = min(max(first, start), end - length)
        out.append(np.clip(np.arange(first, first + length), start, end - 1))
    return np.array(out)


def test_plain_webdataset_wids_and_the_reader_give_the_same_sequences(split_folder):
    import torch
    import wids

    from seqvpr.data import SequenceDataset, ShardFolder

    folder, data, _ = split_folder
    manifest = json.loads((folder / "manifest.json").read_text())
    assert len(manifest["shards"]) >= 4 and manifest["counts"] == {"db": 15, "query": 12}
    # plain webdataset, two DataLoader workers, one shard each at a time
    urls = [str(folder / s["name"]) for s in manifest["shards"]]
    dataset = wds.WebDataset(urls, shardshuffle=False, workersplitter=wds.split_by_worker).decode()
    loader = torch.utils.data.DataLoader(dataset, num_workers=2, batch_size=None)
    frames = {s["__key__"]: (s["json"], s["tokens.npy"]) for s in loader}
    assert sorted(frames) == sorted(s.key for s in data)
    # wids through index.wids.json: sample numbers in shard order
    index = json.loads((folder / "index.wids.json").read_text())
    assert [s["filesize"] for s in index["shardlist"]] == [(folder / s["url"]).stat().st_size for s in index["shardlist"]]
    by_number = wids.ShardListDataset(str(folder / "index.wids.json"), localname=lambda url: url, transformations=[])
    assert len(by_number) == len(data)
    reader = ShardFolder(folder)
    for role in ("db", "query"):
        rows = sorted((row for row, _ in frames.values() if row["role"] == role), key=lambda r: r["order"])
        tokens = np.stack([frames[r["frame_id"]][1] for r in rows])
        windows = windows_by_hand([(r["seq_start"], r["seq_end"]) for r in rows], 5)
        offset = 0 if role == "db" else manifest["counts"]["db"]
        sequences = SequenceDataset(reader, role, 5)
        wids_sequences = SequenceDataset(reader, role, 5, backend="wids")
        batches = torch.utils.data.DataLoader(sequences, batch_size=4, num_workers=2, collate_fn=SequenceDataset.collate)
        streamed = torch.cat([b["tokens"] for b in batches]).numpy()
        for i, window in enumerate(windows):
            expected = tokens[window]
            assert np.array_equal(streamed[i], expected) and np.array_equal(wids_sequences[i]["tokens"], expected)
            assert np.array_equal(np.stack([np.load(by_number[int(offset + f)][".tokens.npy"]) for f in window]), expected)
            assert sequences[i]["frame_id"] == rows[i]["frame_id"]
            if role == "query":
                assert sequences[i]["positives"].tolist() == rows[i]["positives"]


def test_manifest_carries_provenance_and_the_negatives(split_folder):
    from seqvpr.data import ShardFolder

    folder, data, negatives = split_folder
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {k: manifest[k] for k in PROVENANCE} == PROVENANCE
    assert manifest["negatives"] == {"file": "negatives.npy", "sha256": sha(folder / "negatives.npy"),
                                     "shape": [12, 6], "dtype": "int64"}
    assert np.array_equal(np.load(folder / "negatives.npy"), negatives)
    assert np.array_equal(ShardFolder(folder).negatives, negatives)
    assert manifest["window"]["centred"].startswith("the length-L sequence")
    assert verify_manifest(folder) == []
    (folder / "negatives.npy").write_bytes(b"x")
    assert verify_manifest(folder) == [f"{folder / 'negatives.npy'}: sha256 differs from the manifest"]


def test_rerun_is_byte_identical_and_old_folders_are_refused(split_folder, tmp_path):
    from seqvpr.data import ShardFolder
    from seqvpr.errors import DataError

    folder, data, negatives = split_folder
    again = tmp_path / "again"
    write_split_shards(again, "bench", "train", data, total=len(data), min_shards=4, provenance=PROVENANCE, negatives=negatives)
    assert sorted(p.name for p in again.iterdir()) == sorted(p.name for p in folder.iterdir())
    assert all(sha(p) == sha(again / p.name) for p in folder.iterdir())
    write_split_shards(tmp_path / "old", "bench", "train", data)
    with pytest.raises(DataError, match="rebuild the shards"):
        ShardFolder(tmp_path / "old")


def test_shard_capacity_from_samples_bytes_and_workers():
    from seqvpr.shards import shard_capacity

    assert shard_capacity(50, 256, 8) == 7 and shard_capacity(100_000, 256, 8) == 256 and shard_capacity(3, 256, 8) == 1
    assert shard_capacity(None, 256, 8) == 256


def in_memory(folder):
    """The split as training read it before the reader: every token map stacked in memory (tarfile)."""
    from seqvpr.train import SplitData

    manifest = json.loads((folder / "manifest.json").read_text())
    rows, tokens = [], []
    for shard in manifest["shards"]:
        with tarfile.open(folder / shard["name"]) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    rows.append(json.loads(tar.extractfile(member).read()))
                elif member.name.endswith(".tokens.npy"):
                    tokens.append(np.load(io.BytesIO(tar.extractfile(member).read())))
    roles = np.array([r["role"] for r in rows])
    db, q = np.flatnonzero(roles == "db"), np.flatnonzero(roles == "query")
    bounds = np.array([[r["seq_start"], r["seq_end"]] for r in rows])
    tokens = np.stack(tokens)
    return SplitData(tokens[db], tokens[q], bounds[db], bounds[q], [np.array(rows[i]["positives"], np.int64) for i in q],
                     [np.array(rows[i]["nontrivial_positives"], np.int64) for i in q], np.load(folder / "negatives.npy"),
                     [rows[i]["frame_id"] for i in np.concatenate([db, q])])


@pytest.mark.parametrize("model, spill, kmeans", [
    ("seqvlad", True, False), ("seqnet", True, False),
    pytest.param("seqvlad", False, True, marks=pytest.mark.slow), pytest.param("seqvlad", True, True, marks=pytest.mark.slow)])
def test_training_and_evaluation_through_the_reader_equal_the_in_memory_split(split_folder, monkeypatch, model, spill, kmeans):
    """Same seed, same losses, validation recalls and Recall@K, whether the tokens are stacked in
    memory (the previous path) or read from the shards, and whether descriptor caches stay in memory
    or go to a temporary file (budget 0). SeqVLAD reads the token maps (as Adapt-STformer), SeqNet
    their pooled means."""
    import seqvpr.data
    from seqvpr.evaluate import evaluate_model
    from seqvpr.train import TrainConfig, load_split_data, train

    folder, _, _ = split_folder
    cfg = TrainConfig(model=model, epochs=2 if kmeans else 1, queries_per_epoch=6 if kmeans else 4, lr=1e-3, kmeans_init=kmeans)
    before = in_memory(folder)
    reference = train(cfg, before, before, log=lambda *_: None)
    if spill:
        monkeypatch.setattr(seqvpr.data, "DESCRIPTOR_BUDGET", 0)
    streamed = load_split_data(folder)
    assert isinstance(streamed.db_tokens, seqvpr.data.FrameArray)
    result = train(cfg, streamed, streamed, log=lambda *_: None)
    assert result.losses == reference.losses and len(result.losses) > 0
    assert result.history == reference.history and result.initial_recall == reference.initial_recall
    assert all(torch_equal(result.state_dict[k], reference.state_dict[k]) for k in reference.state_dict)
    from seqvpr.train import load_checkpoint, save_checkpoint

    save_checkpoint(folder.parent / "m.pt", model, result.state_dict, {"seq_len": 5, "model_kwargs": {}, "tail_blocks": 0})
    trained, _ = load_checkpoint(folder.parent / "m.pt")
    assert evaluate_model(trained, streamed, 5)["recall"] == evaluate_model(trained, before, 5)["recall"]


def torch_equal(a, b):
    import torch

    return torch.equal(a, b)


def test_manifest_check_compares_each_split_with_the_runs_encoder_and_split_settings(tmp_path):
    """Shards written with the asset's provenance for one encoder and split settings pass the
    `manifest_matches_settings` check; another encoder seed or cut, or a split rebuilt with another
    frame separation, fail it."""
    import dataclasses

    from dagster import AssetKey, AssetSelection, materialize

    from assets.shards import shard_assets_and_checks, shard_provenance
    from pipelines.resources import FrameEncoder, PipelineHome
    from seqvpr.splits import read_split, role_rows
    from test_exports import materialise, oxford_bench, robotcar_like

    home = tmp_path / "home"
    bench = dataclasses.replace(oxford_bench("oxford_easy"), separation=0.0)
    layout, table = materialise(home, robotcar_like(16), bench, images=False)
    encoder = FrameEncoder(freeze_te=3)
    _, configured = read_split(layout.split_table("oxford_easy"))
    provenance = shard_provenance(encoder, configured)
    assert provenance["encoder"]["model_id"] == encoder.model_id() and provenance["encoder"]["freeze_te"] == 3
    assert provenance["split_settings"]["frame_separation"] == 0.0 and provenance["split_settings"]["radius"] == 5.0
    for split in ("train", "test"):
        rows = [r for role in ("db", "query") for r in role_rows(table, split, role).to_dict("records")]
        data = [Sample(r["frame_id"], np.zeros((2, 384), np.float16), np.zeros(384, np.float32),
                       {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items()}) for r in rows]
        write_split_shards(layout.shards("oxford_easy", split), "oxford_easy", split, data, provenance=provenance)
    defs = [d for d in shard_assets_and_checks if AssetKey("oxford_easy_shards") in d.keys
            or any(k.asset_key == AssetKey("oxford_easy_shards") for k in getattr(d, "check_keys", []))]

    def check(encoder):
        result = materialize(defs, selection=AssetSelection.checks_for_assets(AssetKey("oxford_easy_shards")),
                             resources={"home": PipelineHome(home=str(home)), "encoder": encoder}, raise_on_error=False)
        return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}["manifest_matches_settings"]

    assert check(encoder) and not check(FrameEncoder(freeze_te=3, seed=1)) and not check(FrameEncoder(freeze_te=2))
    materialise(home, robotcar_like(16), dataclasses.replace(bench, separation=1.0), images=False)
    assert not check(encoder)

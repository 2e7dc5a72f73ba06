"""CCT384 layout against the official checkpoint's keys, and the content-addressed cache."""
import hashlib
import json
import mmap
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from seqvpr.datasets.frames import frame_path, load_frame, resize_for_model, save_frame
from seqvpr.embed.cct import CCT384, build_cct384, build_cct_tail, frozen_blocks
from seqvpr.embed.chunks import cached_digests, chunk_folder, load_descriptor, load_tokens
from seqvpr.embed.embed import (FrameEmbedder, NullCCT, global_descriptor, model_id, normalise, normalise_on_cpu,
                                pooled_descriptors, read_frame, to_batch)
from seqvpr.errors import DataError
from seqvpr.synthetic import generate

OFFICIAL_KEYS = json.loads((Path(__file__).parent / "fixtures" / "cct_14_7x2_384_state_dict.json").read_text())


def test_official_state_dict_loads_strictly(tmp_path):
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randn(*shape, generator=generator) * 0.02 for k, shape in OFFICIAL_KEYS.items()}
    checkpoint = tmp_path / "cct_14_7x2_384_imagenet.pth"
    torch.save(state, checkpoint)
    model, weights = build_cct384(num_layers=2, checkpoint=checkpoint)
    assert len(weights) == 64
    assert torch.equal(model.classifier.blocks[1].linear1.weight, state["classifier.blocks.1.linear1.weight"])
    with torch.inference_mode():
        assert model(torch.zeros(2, 3, 384, 384)).shape == (2, 576, 384)


def test_missing_official_key_is_refused(tmp_path):
    state = {k: torch.zeros(*s) for k, s in OFFICIAL_KEYS.items() if k != "classifier.norm.bias"}
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(RuntimeError, match="classifier.norm.bias"):
        build_cct384(checkpoint=tmp_path / "partial.pth")


def test_layer_truncation_changes_features_and_is_validated():
    full, _ = build_cct384(num_layers=14)
    truncated = CCT384(num_layers=3)
    truncated.load_state_dict(full.state_dict())
    x = torch.randn(1, 3, 384, 384, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert not torch.allclose(full(x), truncated(x))
    with pytest.raises(ValueError, match="num_layers must be in 1..14"):
        CCT384(num_layers=15)


def _random_frames(folder, count, seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        paths.append(frame_path(folder, f"f{i}"))
        save_frame(rng.integers(0, 255, (384, 384, 3), dtype=np.uint8), paths[-1])
    return paths


def _chunks(cache):
    """The complete chunk files of a cache, by name."""
    return {p.name: p.read_bytes() for p in chunk_folder(cache).glob("*.chunk")}


def test_cache_embeds_each_frame_once(tmp_path):
    paths = _random_frames(tmp_path, 3)
    embedder = FrameEmbedder(num_layers=1, device="cpu")
    calls = []
    forward = embedder.model.forward_cut
    embedder.model.forward_cut = lambda x, cut: calls.append(len(x)) or forward(x, cut)
    digests, stats = embedder.embed_files(paths[:2], tmp_path / "cache", batch_size=8, workers=0)
    assert (stats.embedded, stats.cache_hits, stats.chunks, calls) == (2, 0, 1, [2])
    digests2, stats2 = embedder.embed_files(paths, tmp_path / "cache", batch_size=8, workers=1)  # decoded in a worker
    assert digests2[:2] == digests and (stats2.embedded, stats2.cache_hits, calls) == (1, 2, [2, 1])
    assert len(_chunks(tmp_path / "cache")) == 2
    _, stats3 = embedder.embed_files(paths, tmp_path / "cache", batch_size=8, workers=0)
    assert (stats3.embedded, stats3.cache_hits, calls) == (0, 3, [2, 1])
    tokens = load_tokens(tmp_path / "cache", digests[0])
    assert tokens.shape == (576, 384) and tokens.dtype == np.float16
    desc = load_descriptor(tmp_path / "cache", digests[0])
    assert desc.shape == (384,) and desc.dtype == np.float32 and np.linalg.norm(desc) == pytest.approx(1.0, abs=1e-5)
    assert desc == pytest.approx(global_descriptor(tokens), abs=1e-6)  # frozen backbone: tokens are the final ones
    with pytest.raises(DataError, match="embedding missing from the cache"):
        load_tokens(tmp_path / "cache", "0" * 64)


def test_chunk_file_is_three_npy_arrays(tmp_path):
    """What the module docstring promises an independent reader: digests, tokens, descriptors."""
    paths = _random_frames(tmp_path, 3, seed=1)
    embedder = FrameEmbedder(num_layers=1, device="cpu")
    digests, stats = embedder.embed_files(paths, tmp_path / "cache", batch_size=2, workers=0, chunk_frames=2)
    assert stats.chunks == 2
    rows = {}
    for chunk in chunk_folder(tmp_path / "cache").glob("*.chunk"):
        with open(chunk, "rb") as fh:
            names, tokens, descriptors = (np.load(fh, allow_pickle=False) for _ in range(3))
            assert fh.read() == b""
        assert names.dtype == "S64" and tokens.dtype == np.float16 and descriptors.dtype == np.float32
        assert tokens.shape == (len(names), 576, 384) and descriptors.shape == (len(names), 384)
        rows.update({n.decode(): (t, d) for n, t, d in zip(names, tokens, descriptors)})
    assert sorted(rows) == sorted(digests) == sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in paths)
    for digest, (t, d) in rows.items():
        assert np.array_equal(load_tokens(tmp_path / "cache", digest), t)
        assert np.array_equal(load_descriptor(tmp_path / "cache", digest), d)


def _rendered_frames(folder):
    """Three views of the synthetic Nordland world, normalised as the frames stage does."""
    generate("nordland", folder / "raw", seed=0, frames=1, seasons="summer")
    paths = []
    for raw in sorted((folder / "raw" / "summer").glob("*.png")):
        paths.append(folder / "frames" / raw.name)
        save_frame(resize_for_model(load_frame(raw), 384), paths[-1])
    return paths


@pytest.mark.parametrize("freeze_te", [None, 0])
def test_tokens_equal_the_per_frame_path(tmp_path, freeze_te):
    """The batched, chunked stage stores what embedding each frame alone and converting on the CPU
    gives (the stage before chunks), to float16 rounding; descriptors to float32 rounding."""
    paths = _rendered_frames(tmp_path)
    embedder = FrameEmbedder(num_layers=2, device="cpu", freeze_te=freeze_te)
    digests, _ = embedder.embed_files(paths, tmp_path / "cache", batch_size=2, workers=1)
    for path, digest in zip(paths, digests):
        with torch.inference_mode():
            at_cut, final = embedder.model.forward_cut(to_batch([load_frame(path)], torch.device("cpu")), embedder.cut)
        expected = at_cut[0].float().numpy().astype(np.float16)
        tokens = load_tokens(tmp_path / "cache", digest)
        ulp = np.spacing(np.maximum(np.abs(expected), np.abs(tokens)))
        assert np.all(np.abs(tokens.astype(np.float32) - expected.astype(np.float32)) <= ulp)
        final16 = final[0].float().numpy().astype(np.float16)
        assert load_descriptor(tmp_path / "cache", digest) == pytest.approx(global_descriptor(final16), abs=1e-6)


def test_chunk_bytes_do_not_depend_on_how_the_rows_reach_the_file(tmp_path):
    """Token rows start on a 4096-byte boundary, so page-aligned batches go around the page cache
    (O_DIRECT where the file system allows it) and others through it: the same chunk bytes, which
    three np.load calls read back."""
    from seqvpr.embed.chunks import DIRECT_ALIGN, ChunkWriter

    rng = np.random.default_rng(12)
    tokens = rng.normal(size=(5, 576, 384)).astype(np.float16)
    descriptors = rng.normal(size=(5, 384)).astype(np.float32)
    digests = [f"{i:064x}" for i in range(5)]
    memory = mmap.mmap(-1, tokens.nbytes + DIRECT_ALIGN)
    aligned = np.frombuffer(memory, np.float16, count=tokens.size).reshape(tokens.shape)
    unaligned = np.frombuffer(memory, np.float16, count=tokens.size, offset=2).reshape(tokens.shape)
    assert aligned.ctypes.data % DIRECT_ALIGN == 0 and unaligned.ctypes.data % DIRECT_ALIGN == 2
    written = {}
    for name, rows in (("aligned", aligned), ("unaligned", unaligned)):
        rows[:] = tokens
        writer = ChunkWriter(tmp_path / name, [digests])
        for batch in (slice(0, 3), slice(3, 5)):
            writer.put(rows[batch], descriptors[batch])
        writer.finish()
        [chunk] = (tmp_path / name).glob("*.chunk")
        written[name] = chunk.read_bytes()
        with open(chunk, "rb") as fh:
            assert np.load(fh).tolist() == [d.encode() for d in digests]
            assert fh.tell() % 64 == 0
            np.lib.format.read_magic(fh)
            np.lib.format.read_array_header_1_0(fh)
            assert fh.tell() % DIRECT_ALIGN == 0
    assert written["aligned"] == written["unaligned"]
    with open(tmp_path / "aligned" / next(p.name for p in (tmp_path / "aligned").glob("*.chunk")), "rb") as fh:
        _, got_tokens, got_descriptors = (np.load(fh) for _ in range(3))
    assert np.array_equal(got_tokens, tokens) and np.array_equal(got_descriptors, descriptors)


def test_reruns_are_byte_identical(tmp_path):
    paths = _random_frames(tmp_path, 5, seed=3)
    embedder = FrameEmbedder(num_layers=1, device="cpu")
    for run in ("a", "b"):
        embedder.embed_files(paths, tmp_path / run, batch_size=2, workers=0, chunk_frames=2)
    assert _chunks(tmp_path / "a") == _chunks(tmp_path / "b") and len(_chunks(tmp_path / "a")) == 3


def test_null_model_fills_the_cache_with_seeded_tokens_of_the_real_shape(tmp_path):
    paths = _random_frames(tmp_path, 3, seed=4)
    null = FrameEmbedder(device="cpu", null_model=True)
    assert null.model_id != FrameEmbedder(num_layers=1, device="cpu").model_id == model_id("random-init-0", 1)
    digests, stats = null.embed_files(paths, tmp_path / "cache", batch_size=2, workers=0)
    tokens = [load_tokens(tmp_path / "cache", d) for d in digests]
    assert all(t.shape == (576, 384) and t.dtype == np.float16 for t in tokens)
    assert not np.array_equal(tokens[0], tokens[1])
    again = FrameEmbedder(device="cpu", null_model=True)
    again.embed_files(paths, tmp_path / "again", batch_size=2, workers=0)
    assert _chunks(tmp_path / "cache") == _chunks(tmp_path / "again")


def test_bad_frame_is_named_and_leaves_no_chunk(tmp_path):
    paths = _random_frames(tmp_path, 2, seed=6)
    save_frame(np.zeros((100, 384, 3), dtype=np.uint8), tmp_path / "small.png")
    embedder = FrameEmbedder(num_layers=1, device="cpu")
    with pytest.raises(DataError, match=r"small\.png: frame is uint8 \(100, 384, 3\)"):
        embedder.embed_files([*paths, tmp_path / "small.png"], tmp_path / "cache", batch_size=1, workers=1)
    assert not _chunks(tmp_path / "cache") and not list(chunk_folder(tmp_path / "cache").glob(".*"))


def test_cut_caches_tokens_after_the_frozen_blocks_and_the_tail_finishes_them(tmp_path):
    """freeze_te = 0 of 2 blocks: the cache keeps block 0's output, block 1 and the norm are the
    tail; the descriptor keeps its meaning (pooled final tokens) whatever the cut."""
    frame = np.random.default_rng(2).integers(0, 255, (384, 384, 3), dtype=np.uint8)
    save_frame(frame, tmp_path / "f.png")
    frozen = FrameEmbedder(num_layers=2, device="cpu")
    cut = FrameEmbedder(num_layers=2, device="cpu", freeze_te=0)
    assert frozen.model_id != cut.model_id and frozen.cut == 2 and cut.cut == 1
    [digest], _ = frozen.embed_files([tmp_path / "f.png"], tmp_path / "frozen")
    cut.embed_files([tmp_path / "f.png"], tmp_path / "cut")
    final, at_cut = load_tokens(tmp_path / "frozen", digest), load_tokens(tmp_path / "cut", digest)
    assert not np.allclose(final, at_cut, atol=1e-2)
    assert load_descriptor(tmp_path / "cut", digest) == pytest.approx(load_descriptor(tmp_path / "frozen", digest), abs=1e-6)
    tail = build_cct_tail(freeze_te=0, num_layers=2)
    assert len(tail.blocks) == 1
    with torch.inference_mode():
        finished = tail(torch.from_numpy(at_cut.astype(np.float32))[None])[0].numpy()
    assert finished == pytest.approx(final.astype(np.float32), abs=2e-2)  # float16 rounding of the cached tokens
    assert all(p.requires_grad for p in tail.blocks.parameters()) and not any(p.requires_grad for p in tail.norm.parameters())
    assert build_cct_tail(freeze_te=1, num_layers=2) is None  # every block frozen: nothing to train


def test_freeze_te_follows_the_authors_and_is_validated():
    assert frozen_blocks(1, 8) == 2  # --freeze_te 1: blocks 0 and 1 frozen, 2..7 train
    assert frozen_blocks(-1, 8) == 0 and frozen_blocks(7, 8) == 8
    with pytest.raises(ValueError, match="freeze_te must be in -1..7"):
        frozen_blocks(8, 8)


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            children = [int(c) for c in (task / "children").read_text().split()]
            found += children
            todo += children
    return found


def test_killed_embedding_leaves_only_complete_chunks(tmp_path):
    """Killed mid-chunk: the chunks already renamed are whole and load, the one being written is
    only a hidden temporary, and the resumed run writes exactly the chunks of an uninterrupted one."""
    paths = _random_frames(tmp_path / "frames", 5, seed=5)
    cache = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from seqvpr.embed.embed import FrameEmbedder
        def progress(done, total):
            if done == 4:  # chunk 0 handed to one writer, chunk 1's first frame to the other
                print("embedded", done, flush=True)
                time.sleep(60)
        paths = sorted(Path({str(tmp_path / 'frames')!r}).glob("*.tif"))
        FrameEmbedder(num_layers=1, device="cpu").embed_files(paths, Path({str(cache)!r}), 1, progress, workers=1,
                                                              chunk_frames=2)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().split() == ["embedded", "4"]
        deadline = time.monotonic() + 60  # one writer renames chunk 0, the other has started chunk 1
        while not (_chunks(cache) and list(chunk_folder(cache).glob(".*.partial"))) and time.monotonic() < deadline:
            time.sleep(0.1)
        helpers = _descendants(proc.pid)  # the forkserver and its decoding worker
        assert len(helpers) >= 2
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in helpers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in helpers if Path(f"/proc/{pid}").exists()], "decoding processes outlived the killed run"
    assert len(_chunks(cache)) == 1 and len(list(chunk_folder(cache).glob(".*.partial"))) == 1
    assert len(cached_digests(cache)) == 2
    embedder = FrameEmbedder(num_layers=1, device="cpu")
    _, resumed = embedder.embed_files(paths, cache, batch_size=1, workers=0, chunk_frames=2)
    assert (resumed.embedded, resumed.cache_hits, resumed.chunks) == (3, 2, 2)
    embedder.embed_files(paths, tmp_path / "clean", batch_size=1, workers=0, chunk_frames=2)
    assert _chunks(cache) == _chunks(tmp_path / "clean") and len(_chunks(cache)) == 3


def test_cpu_normalisation_is_bit_identical_to_normalise():
    """normalise_on_cpu (per-plane lookup tables) gives normalise()'s float32 values exactly."""
    frames = np.random.default_rng(7).integers(0, 256, (3, 384, 384, 3), dtype=np.uint8)
    frames[0, 0, :2] = [[0, 0, 0], [255, 255, 255]]  # both ends of the range
    out = torch.full((3, 3, 384, 384), np.nan)
    assert normalise_on_cpu(frames, out) is out
    assert torch.equal(out, normalise(torch.from_numpy(frames)))
    with pytest.raises(ValueError, match="out must be a contiguous float32"):
        normalise_on_cpu(frames, torch.empty(3, 384, 384, 3))
    with pytest.raises(ValueError, match=r"frames must be \(B, H, W, 3\) uint8"):
        normalise_on_cpu(frames.astype(np.float32), out)


def test_cpu_pooling_rounds_the_tokens_and_matches_the_device_formula():
    """The CPU path's stepwise pooling: the rounded tokens are the float16 cast, the descriptor
    the float32 mean of them (the CUDA formula) to float32 rounding, 577 tokens (a partial step)."""
    final = torch.randn(3, 577, 384, generator=torch.Generator().manual_seed(8)) * 4
    rounded = torch.empty(final.shape, dtype=torch.float16)
    pooled = pooled_descriptors(final, rounded=rounded)
    assert torch.equal(rounded, final.to(torch.float16))
    mean = torch.mean(final.to(torch.float16), dim=-2, dtype=torch.float32)
    assert torch.allclose(pooled, mean / mean.norm(dim=-1, keepdim=True), atol=1e-7, rtol=0)
    assert torch.equal(pooled_descriptors(final), pooled)


def test_frames_are_read_into_the_batch_slot(tmp_path):
    """read_frame writes a PNG or .npy frame straight into the slot row it is given; a missing or
    truncated .npy frame is a DataError naming it."""
    frame = np.random.default_rng(9).integers(0, 256, (384, 384, 3), dtype=np.uint8)
    save_frame(frame, tmp_path / "f.png")
    np.save(tmp_path / "f.npy", frame)
    slot = np.zeros((2, 384, 384, 3), np.uint8)
    for row, name in enumerate(("f.png", "f.npy")):
        assert np.shares_memory(read_frame(tmp_path / name, slot[row]), slot[row])
        assert np.array_equal(slot[row], frame)
    other = read_frame(tmp_path / "f.npy", np.zeros((10, 384, 3), np.uint8))  # another shape: a new array
    assert np.array_equal(other, frame)
    with pytest.raises(DataError, match=r"gone\.npy: normalised frame missing"):
        read_frame(tmp_path / "gone.npy", slot[0])
    (tmp_path / "cut.npy").write_bytes((tmp_path / "f.npy").read_bytes()[:-10])
    with pytest.raises(DataError, match=r"cut\.npy: frame array is truncated"):
        read_frame(tmp_path / "cut.npy", slot[0])


def test_reused_token_buffers_keep_every_batch(tmp_path):
    """One frame a batch, three chunks across two writers: the CPU path's reused host buffers are
    taken again only after the writer wrote them, so every frame's tokens are its own (the null
    model's per-frame map), and the stats count both processes' CPU time."""
    paths = _random_frames(tmp_path, 7, seed=10)
    embedder = FrameEmbedder(device="cpu", null_model=True)
    digests, stats = embedder.embed_files(paths, tmp_path / "cache", batch_size=1, workers=1, chunk_frames=3)
    assert stats.chunks == 3 and stats.timings["process_cpu"] > 0 and stats.timings["workers_cpu"] > 0
    model = NullCCT(8)
    for path, digest in zip(paths, digests):
        expected, _ = model.forward_cut(normalise(torch.from_numpy(load_frame(path))[None]), 8)
        assert np.array_equal(load_tokens(tmp_path / "cache", digest), expected[0].to(torch.float16).numpy())

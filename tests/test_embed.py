"""CCT384 layout against the official checkpoint's keys, and the content-addressed cache."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seqvpr.datasets.frames import save_frame
from seqvpr.embed.cct import CCT384, build_cct384, build_cct_tail, frozen_blocks
from seqvpr.embed.embed import FrameEmbedder, cache_file, global_descriptor, load_descriptor, load_tokens

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


def test_cache_embeds_each_frame_once(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"f{i}.png")
        save_frame(rng.integers(0, 255, (384, 384, 3), dtype=np.uint8), paths[-1])
    embedder = FrameEmbedder(num_layers=1, device="cpu")
    calls = []
    forward = embedder.model.forward_cut
    embedder.model.forward_cut = lambda x, cut: calls.append(len(x)) or forward(x, cut)
    digests, stats = embedder.embed_files(paths[:2], tmp_path / "cache", batch_size=8)
    assert (stats.embedded, stats.cache_hits, calls) == (2, 0, [2])
    digests2, stats2 = embedder.embed_files(paths, tmp_path / "cache", batch_size=8)
    assert digests2[:2] == digests and (stats2.embedded, stats2.cache_hits, calls) == (1, 2, [2, 1])
    tokens = load_tokens(tmp_path / "cache", digests[0])
    assert tokens.shape == (576, 384) and tokens.dtype == np.float16
    assert cache_file(tmp_path / "cache", digests[0]).parent.name == digests[0][:2]
    desc = load_descriptor(tmp_path / "cache", digests[0])
    assert desc.shape == (384,) and desc.dtype == np.float32 and np.linalg.norm(desc) == pytest.approx(1.0, abs=1e-5)
    assert desc == pytest.approx(global_descriptor(tokens), abs=1e-6)  # frozen backbone: tokens are the final ones


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


def test_killed_embedding_leaves_only_complete_cache_entries(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    rng = np.random.default_rng(5)
    for i in range(4):
        save_frame(rng.integers(0, 255, (384, 384, 3), dtype=np.uint8), tmp_path / "frames" / f"{i}.png")
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from seqvpr.embed.embed import FrameEmbedder
        def progress(done, total):
            print("embedded", done, flush=True)
            time.sleep(60)
        paths = sorted(Path({str(tmp_path / 'frames')!r}).glob("*.png"))
        FrameEmbedder(num_layers=1, device="cpu").embed_files(paths, Path({str(tmp_path / 'killed')!r}), 1, progress)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().split() == ["embedded", "1"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sorted(p for p in (tmp_path / "killed").rglob("*.npy") if not p.name.endswith(".desc.npy"))
    assert len(finished) == 1 and np.load(finished[0]).shape == (576, 384)
    assert finished[0].with_name(finished[0].stem + ".desc.npy").exists()  # tokens are written last
    paths = sorted((tmp_path / "frames").glob("*.png"))
    embedder = FrameEmbedder(num_layers=1, device="cpu")
    _, resumed = embedder.embed_files(paths, tmp_path / "killed", batch_size=1)
    assert (resumed.embedded, resumed.cache_hits) == (3, 1)
    embedder.embed_files(paths, tmp_path / "clean", batch_size=1)
    killed = {p.name: p.read_bytes() for p in (tmp_path / "killed").rglob("*.npy")}
    clean = {p.name: p.read_bytes() for p in (tmp_path / "clean").rglob("*.npy")}
    assert killed == clean

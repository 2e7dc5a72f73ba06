"""Sequence heads: shapes, sequence-length behaviour, one training step lowers the loss, Table II
parameter counts, stage names for timing hooks; deformable attention samples where its offsets
point; the authors' encoder layer; STformer's windowed space-time attention; OptiCorNet's DSD,
quadruplet loss and hierarchical retrieval against the paper's equations computed by hand."""
import math
import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seqvpr.models import MODELS, PAPER_PARAMETERS, build_model, parameter_count
from seqvpr.models.layers import DeformableAttention, DeformableEncoderLayer, grid_reference_points
from seqvpr.models.opticornet import DifferentiableSequenceDelta, hierarchical_retrieval, quadruplet_loss
from seqvpr.models.stformer import WindowedSpaceTimeAttention

ADAPT_SMALL = {"dim": 32, "tokens": 16, "clusters": 8}
SMALL = {  # name -> (kwargs, per-frame input shape)
    "adapt_stformer": (ADAPT_SMALL, (16, 32)),
    "adapt_transformer_temporal": (ADAPT_SMALL, (16, 32)),
    "adapt_seqgem_only": (ADAPT_SMALL, (16, 32)),
    "adapt_dense_k576": (ADAPT_SMALL, (16, 32)),
    "seqvlad": ({"dim": 32, "clusters": 8}, (16, 32)),
    "stformer": ({"dim": 32, "tokens": 36, "heads": 2, "blocks": 1, "clusters": 8, "window": 3, "stride": 3}, (36, 32)),
    "seqnet": ({"dim": 32, "out_dim": 64}, (32,)),
    "jist": ({}, (32,)),
    "opticornet": ({"dim": 32, "channels": 48, "hidden": 64}, (32,)),
}


def small(name):
    kwargs, frame_shape = SMALL[name]
    return build_model(name, **kwargs), frame_shape


@pytest.mark.parametrize("name", sorted(MODELS))
def test_one_training_step_lowers_the_loss(name):
    torch.manual_seed(0)
    model, frame_shape = small(name)
    model.eval()  # dropout off: the same batch gives the same loss before and after
    x = torch.randn(4, 5, *frame_shape, generator=torch.Generator().manual_seed(1)).abs()  # GeM needs x > 0
    # a fixed hard batch: each anchor's negative is a near copy of it, its positive another sequence
    anchor_i, positive_i, negative_i = [0, 1], [1, 0], [2, 3]
    x[2:] = x[:2] + 0.05 * torch.randn(2, 5, *frame_shape, generator=torch.Generator().manual_seed(2)).abs()

    def loss():
        d = model(x)
        norms = d.norm(dim=-1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4)
        return F.triplet_margin_loss(d[anchor_i], d[positive_i], d[negative_i], margin=0.5)

    before = loss()
    assert before.item() > 0
    lr = 1e-2 if name == "jist" else 1e-5  # JIST's head is SeqGeM's single exponent
    optimiser = torch.optim.SGD(model.parameters(), lr=lr)
    optimiser.zero_grad()
    before.backward()
    optimiser.step()
    assert loss().item() < before.item()


@pytest.mark.parametrize("name", sorted(PAPER_PARAMETERS))
def test_parameter_counts_match_table_ii(name):
    assert parameter_count(name) == pytest.approx(PAPER_PARAMETERS[name], rel=0.02)


def test_parameter_counts_exact():
    # CCT384 at 8 blocks without its classifier head: tokenizer 9,408 + 1,204,224, positions
    # 576 * 384, 8 blocks of 1,478,016, final norm 768
    cct8 = 9_408 + 1_204_224 + 576 * 384 + 8 * 1_478_016 + 768
    vlad = 64 * 384 * 2  # centroids and assignment weights (no bias, as the authors' Conv1d)
    assert parameter_count("seqvlad") == cct8 + vlad
    detr = 576 * 384 + (384 * 256 + 256) + (384 * 128 + 128) + 2 * (384 * 384 + 384) + 768
    assert parameter_count("adapt_stformer") == cct8 + detr + 1 + vlad
    assert parameter_count("seqnet") == 4096 * 4096 * 5 + 4096
    assert parameter_count("jist") == 11_176_512 + 1 + 512 * 512 + 512 + 1  # ResNet-18 trunk, GeM, FC, SeqGeM


def test_adapt_stformer_full_size_any_length():
    torch.manual_seed(0)
    model = build_model("adapt_stformer").eval()
    with torch.no_grad():
        shapes = [tuple(model(torch.randn(1, length, 576, 384)).shape) for length in (1, 3, 5)]
    assert shapes == [(1, 64 * 384)] * 3


def test_stformer_is_tied_to_its_length():
    model, frame_shape = small("stformer")
    with pytest.raises(ValueError, match="built for sequences of 5 frames, got 3"):
        model(torch.randn(1, 3, *frame_shape))


def test_seqnet_needs_its_kernel_width():
    model, frame_shape = small("seqnet")
    with pytest.raises(ValueError, match="at least 5 frames, got 3"):
        model(torch.randn(1, 3, *frame_shape))


@pytest.mark.parametrize("name,stages", [("adapt_stformer", ["spatial", "temporal", "aggregation"]),
                                         ("stformer", ["spatial", "temporal", "aggregation"]),
                                         ("seqvlad", ["aggregation"]), ("seqnet", ["temporal"]),
                                         ("jist", ["aggregation"])])
def test_stage_submodules_fire_forward_hooks(name, stages):
    model, frame_shape = small(name)
    fired = []
    for stage in stages:
        getattr(model, stage).register_forward_hook(lambda *_, stage=stage: fired.append(stage))
    model.eval()(torch.rand(1, 5, *frame_shape))
    assert sorted(set(fired)) == sorted(stages)


def test_deformable_attention_samples_at_offsets():
    attn = DeformableAttention(dim=8, heads=1, levels=1, points=1)
    torch.nn.init.zeros_(attn.sampling_offsets.weight)
    attn.sampling_offsets.bias.data = torch.tensor([1.0, 0.0])  # one token to the right
    for layer in (attn.value_proj, attn.output_proj):
        layer.weight.data = torch.eye(8)
        layer.bias.data.zero_()
    value = torch.arange(16, dtype=torch.float32).view(1, 16, 1).repeat(1, 1, 8)  # 4x4 grid, value = index
    reference = grid_reference_points(4).unsqueeze(0)
    out = attn(value, reference, value, (4, 4))
    assert out[0, 5, 0].item() == pytest.approx(6.0)  # token (1,1) reads token (1,2)
    assert out[0, 7, 0].item() == pytest.approx(0.0, abs=1e-6)  # right edge samples zero padding


def test_encoder_layer_is_the_authors_detr_layer_without_ffn():
    layer = DeformableEncoderLayer(384).eval()
    # deformable attention (offsets 8 heads x 2 levels x 8 points x 2, weights, value, output) + one LayerNorm
    assert sum(p.numel() for p in layer.parameters()) == 98_560 + 49_280 + 2 * 147_840 + 768
    query, value = torch.randn(2, 16, 384), torch.randn(2, 16, 384)
    reference = grid_reference_points(4).expand(2, 16, 2)
    expected = F.layer_norm(query + layer.attn(query, reference, value, (4, 4)), (384,), layer.norm1.weight, layer.norm1.bias)
    assert torch.allclose(layer(query, reference, value, (4, 4)), expected, atol=1e-5)
    assert sum(p.numel() for p in DeformableEncoderLayer(384, ffn=1024).parameters()) > 1_230_000  # the +0.79M FFN


def test_windowed_attention_is_local_in_space_and_global_in_time():
    torch.manual_seed(0)
    attn = WindowedSpaceTimeAttention(dim=8, heads=2, seq_len=3, side=6, window=3, stride=3).eval()
    x = torch.randn(3, 36, 8)  # one sequence of 3 frames, 6 x 6 tokens
    moved = x.clone()
    moved[2, 35] += 5.0  # last frame, bottom-right token: only the bottom-right window sees it
    out, out_moved = attn(x), attn(moved)
    changed = (out - out_moved).abs().sum(-1) > 1e-6  # (frame, token)
    grid = changed.view(3, 6, 6)
    assert grid[:, 3:, 3:].all()  # every frame's bottom-right window attends to it
    assert not grid[:, :3].any() and not grid[:, :, :3].any()  # the other windows do not


def test_windowed_attention_relative_bias_matches_its_definition():
    torch.manual_seed(1)
    attn = WindowedSpaceTimeAttention(dim=4, heads=1, seq_len=2, side=2, window=2, stride=2)
    q = torch.randn(1, 1, 8, 4)  # (t, h, w) = (2, 2, 2) query positions
    bias = attn._relative_bias(q)[0, 0]
    positions = [(t, h, w) for t in range(2) for h in range(2) for w in range(2)]
    for i, (tq, hq, wq) in enumerate(positions):
        for j, (tk, hk, wk) in enumerate(positions):
            expected = q[0, 0, i] @ (attn.rel_pos_h[hq - hk + 1] + attn.rel_pos_w[wq - wk + 1] + attn.rel_pos_t[tq - tk + 1])
            assert bias[i, j].item() == pytest.approx(expected.item(), abs=1e-6)


def test_stformer_branches_start_from_cct_blocks():
    model = build_model("stformer", dim=32, tokens=36, heads=2, blocks=2, clusters=8, window=3, stride=3)
    state = {f"classifier.blocks.{i}.linear1.weight": torch.full((96, 32), float(i + 1)) for i in range(3)}
    state["classifier.positional_emb"] = torch.ones(1, 36, 32)
    model.load_cct(state)
    assert torch.equal(model.spatial.blocks[1].linear1.weight, state["classifier.blocks.1.linear1.weight"])
    assert torch.equal(model.temporal.blocks[1].linear1.weight, state["classifier.blocks.1.linear1.weight"])
    assert torch.equal(model.spatial.positional_emb, state["classifier.positional_emb"])


def _zero_lstm(dsd, g_bias=0.0):
    for p in dsd.lstm.parameters():
        torch.nn.init.zeros_(p)
    hidden = dsd.lstm.hidden_size
    dsd.lstm.bias_ih_l0.data[2 * hidden:3 * hidden] = g_bias  # PyTorch gate order: i, f, g, o


def test_dsd_by_hand():
    dsd = DifferentiableSequenceDelta(dim=2, hidden=2, seq_len=3)
    x = torch.tensor([[[1.0, 2.0], [3.0, 5.0], [4.0, 9.0]]])
    assert dsd.weights().tolist() == [-1.0, 0.0, 1.0]
    _zero_lstm(dsd)  # every gate 0.5, candidate tanh(0) = 0: c = 0, h = 0, so F = R = D
    with torch.no_grad():
        assert dsd(x).tolist() == [[3.0, 7.0]]  # Eq. 1: D = -x_0 + x_2
        _zero_lstm(dsd, g_bias=1.0)  # c = 0.5 * tanh(1), h = 0.5 * tanh(c), the same for each unit
        h = 0.5 * math.tanh(0.5 * math.tanh(1.0))
        assert dsd(x)[0].tolist() == pytest.approx([3.0 + h, 7.0 + h])  # Eq. 6: F = Z + D


def test_dsd_projects_the_residual_when_widths_differ():
    dsd = DifferentiableSequenceDelta(dim=2, hidden=3, seq_len=2)
    _zero_lstm(dsd)
    dsd.project.weight.data = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    dsd.project.bias.data.zero_()
    with torch.no_grad():
        assert dsd(torch.tensor([[[1.0, 1.0], [2.0, 4.0]]])).tolist() == [[1.0, 3.0, 4.0]]  # Proj(D), D = (1, 3)


def test_dsd_weights_stay_antisymmetric():
    dsd = DifferentiableSequenceDelta(dim=4, hidden=4, seq_len=5)
    dsd.raw_weights.data = torch.randn(5)
    w = dsd.weights()
    assert torch.allclose(w, -w.flip(0)) and w[2].item() == 0.0


def test_quadruplet_loss_by_hand():
    a, p = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.3, 0.0]])
    n1, n2 = torch.tensor([[0.0, 0.35]]), torch.tensor([[0.0, 0.2]])
    # d(a,p) = 0.09, d(a,n1) = 0.1225, d(a,n2) = 0.04, m = 0.1:
    # 1.0 * max(0, 0.1 + 0.09 - 0.1225) + 0.5 * max(0, 0.1 + 0.09 - 0.04) = 0.0675 + 0.075
    assert quadruplet_loss(a, p, n1, n2, margin=0.1, gamma1=1.0, gamma2=0.5).item() == pytest.approx(0.1425)
    far = torch.tensor([[0.0, 1.0]])  # d(a, far) = 1 > m + d(a,p): both hinges are zero
    assert quadruplet_loss(a, p, far, far).item() == 0.0


def test_hierarchical_retrieval_reranks_by_frame_alignment():
    db_frames = np.array([[0.0], [1.0], [2.0], [10.0]])
    q_frames = np.array([[2.1], [10.1]])
    db_windows, q_windows = np.array([[0, 1], [2, 3], [1, 2]]), np.array([[0, 1]])
    db_seq = np.array([[5.0], [6.0], [1.4]])
    q_seq = np.array([[1.5]])  # sequence descriptors rank db 2, 0, 1
    ranked = hierarchical_retrieval(q_seq, db_seq, q_frames, db_frames, q_windows, db_windows, shortlist=3, top=2)
    assert ranked.tolist() == [[1, 2]]  # frames (2, 10) align with query (2.1, 10.1); db 1 was last by sequence


def test_hierarchical_retrieval_3000_in_bounded_memory():
    rng = np.random.default_rng(0)
    n, length, seq_dim, frame_dim = 3000, 5, 64, 32
    db_seq, q_seq = rng.standard_normal((n, seq_dim), dtype=np.float32), rng.standard_normal((n, seq_dim), dtype=np.float32)
    db_frames, q_frames = rng.standard_normal((n, frame_dim), dtype=np.float32), rng.standard_normal((n, frame_dim), dtype=np.float32)
    windows = np.clip(np.arange(n)[:, None] + np.arange(length)[None], 0, n - 1)
    tracemalloc.start()
    ranked = hierarchical_retrieval(q_seq, db_seq, q_frames, db_frames, windows, windows, shortlist=50, top=20,
                                    budget_bytes=16 << 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert ranked.shape == (n, 20)
    assert peak < 100 << 20  # an Nq x Ndb x D array alone would be 2.3 GB
    for qi in (0, 1234, 2999):  # brute force for a few queries
        shortlist = np.argsort(((db_seq - q_seq[qi]) ** 2).sum(1), kind="stable")[:50]
        scores = [np.linalg.norm(q_frames[windows[qi]] - db_frames[windows[c]], axis=1).sum() for c in shortlist]
        assert ranked[qi].tolist() == shortlist[np.argsort(scores, kind="stable")][:20].tolist()


def test_stformer_token_pool_averages_the_grid_before_both_branches():
    """CPU budget: token_pool 2 runs both branches on a 12 x 12 grid of 2 x 2 token means."""
    torch.manual_seed(0)
    pooled = build_model("stformer", dim=32, heads=2, blocks=1, clusters=4, seq_len=2, token_pool=2)
    torch.manual_seed(0)
    small = build_model("stformer", dim=32, heads=2, blocks=1, clusters=4, seq_len=2, tokens=144)
    small.load_state_dict(pooled.state_dict())
    tokens = torch.randn(1, 2, 576, 32)
    grid = tokens.view(2, 24, 24, 32).permute(0, 3, 1, 2)
    means = F.avg_pool2d(grid, 2).flatten(2).transpose(1, 2).reshape(1, 2, 144, 32)
    with torch.no_grad():
        assert torch.allclose(pooled(tokens), small(means), atol=1e-5)

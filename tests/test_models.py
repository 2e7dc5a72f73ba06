"""Sequence models: shapes, sequence-length agnosticism, one training step lowers the loss;
deformable attention samples where its offsets point; OptiCorNet's DSD and quadruplet loss."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seqvpr.models import MODELS, build_model
from seqvpr.models.layers import DeformableAttention, grid_reference_points
from seqvpr.models.opticornet import DifferentiableSequenceDelta, hierarchical_retrieval, quadruplet_loss

SMALL = {"dim": 32, "tokens": 16}


def small(name):
    kwargs = {"adapt_stformer": SMALL, "adapt_transformer_temporal": SMALL, "adapt_seqgem_only": SMALL,
              "adapt_dense_k576": SMALL, "seqvlad": {"dim": 32, "clusters": 8}, "stformer": {"dim": 32, "clusters": 8},
              "seqnet": {"dim": 32, "out_dim": 64}, "jist": {"dim": 32, "out_dim": 64},
              "opticornet": {"dim": 32, "hidden": 48, "out_dim": 64}}[name]
    if name.startswith("adapt"):
        kwargs = {**kwargs, "clusters": 8}
    return build_model(name, **kwargs)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_one_training_step_lowers_the_loss(name):
    torch.manual_seed(0)
    model = small(name).eval()  # dropout off: the same batch gives the same loss before and after
    x = torch.randn(4, 5, 16, 32, generator=torch.Generator().manual_seed(1))
    # a fixed hard batch: each anchor's negative is a near copy of it, its positive another sequence
    anchor_i, positive_i, negative_i = [0, 1], [1, 0], [2, 3]
    x[2:] = x[:2] + 0.05 * torch.randn(2, 5, 16, 32, generator=torch.Generator().manual_seed(2))

    def loss():
        d = model(x)
        norms = d.norm(dim=-1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4)
        return F.triplet_margin_loss(d[anchor_i], d[positive_i], d[negative_i], margin=0.5)

    before = loss()
    assert before.item() > 0
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-5)
    optimiser.zero_grad()
    before.backward()
    optimiser.step()
    assert loss().item() < before.item()


def test_adapt_stformer_full_size_any_length():
    torch.manual_seed(0)
    model = build_model("adapt_stformer").eval()
    with torch.no_grad():
        shapes = [tuple(model(torch.randn(1, length, 576, 384)).shape) for length in (1, 3, 5)]
    assert shapes == [(1, 64 * 384)] * 3


def test_stformer_is_tied_to_its_length():
    with pytest.raises(ValueError, match="built for sequences of 5 frames, got 3"):
        small("stformer")(torch.randn(1, 3, 16, 32))


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


def test_dsd_kernel_is_antisymmetric():
    dsd = DifferentiableSequenceDelta(dim=4, kernel=5)
    dsd.half_kernel.data = torch.randn(4, 5)
    k = dsd.kernel()
    assert torch.allclose(k, -k.flip(-1))


def test_quadruplet_loss_by_hand():
    a, p = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.3, 0.0]])
    n1, n2 = torch.tensor([[0.0, 0.35]]), torch.tensor([[0.0, 0.5]])
    # d(a,p) = 0.09, d(a,n1) = 0.1225, d(n1,n2) = 0.0225: relu(0.09 - 0.1225 + 0.1) + relu(0.09 - 0.0225 + 0.05)
    assert quadruplet_loss(a, p, n1, n2).item() == pytest.approx(0.0675 + 0.1175)


def test_hierarchical_retrieval_reranks_by_frame_alignment():
    db_frames = np.array([[0.0], [1.0], [2.0], [10.0]])
    q_frames = np.array([[2.1], [10.1]])
    db_windows, q_windows = np.array([[0, 1], [2, 3], [1, 2]]), np.array([[0, 1]])
    db_seq = np.array([[5.0], [6.0], [1.4]])
    q_seq = np.array([[1.5]])  # sequence descriptors prefer db 2, then 0
    ranked = hierarchical_retrieval(q_seq, db_seq, q_frames, db_frames, q_windows, db_windows, shortlist=3, top=3)
    assert ranked[0, 0] == 1  # frames (2, 10) align with query (2.1, 10.1)

"""The fast deformable attention (fused gather of bilinear corners) equals the `grid_sample`
formulation of Deformable DETR's pure-PyTorch reference, outputs and gradients, including
sampling locations that fall outside the value map."""
import pytest
import torch
import torch.nn.functional as F

from seqvpr.models.layers import DeformableAttention


def grid_sample_reference(attn: DeformableAttention, query, reference_points, value, shape):
    """Deformable DETR's `ms_deform_attn_core_pytorch` for one value map: grid_sample per head."""
    b, lq, _ = query.shape
    h, w = shape
    head_dim = attn.dim // attn.heads
    fed = attn.levels_fed
    v = attn.value_proj(value).view(b, h * w, attn.heads, head_dim).permute(0, 2, 3, 1).reshape(b * attn.heads, head_dim, h, w)
    offsets = attn.sampling_offsets(query).view(b, lq, attn.heads, attn.levels, attn.points, 2)[:, :, :, :fed]
    weights = attn.attention_weights(query).view(b, lq, attn.heads, attn.levels * attn.points)
    weights = weights.softmax(-1).view(b, lq, attn.heads, attn.levels, attn.points)[:, :, :, :fed]
    normaliser = torch.tensor([w, h], dtype=query.dtype, device=query.device)
    locations = reference_points[:, :, None, None, None, :] + offsets / normaliser
    grid = (2.0 * locations - 1.0).permute(0, 2, 1, 3, 4, 5).reshape(b * attn.heads, lq, fed * attn.points, 2)
    sampled = F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    weights = weights.permute(0, 2, 1, 3, 4).reshape(b * attn.heads, 1, lq, fed * attn.points)
    out = (sampled * weights).sum(-1).view(b, attn.heads * head_dim, lq).transpose(1, 2)
    return attn.output_proj(out)


def _random_attention(levels_fed: int, seed: int) -> DeformableAttention:
    torch.manual_seed(seed)
    attn = DeformableAttention(dim=32, heads=4, levels=2, points=3, levels_fed=levels_fed).double()
    with torch.no_grad():  # random, large offsets: many samples land outside the 5 x 6 map
        for p in attn.parameters():
            p.normal_(0, 1.0)
        attn.sampling_offsets.bias.mul_(4.0)
    return attn


@pytest.mark.parametrize("levels_fed", [1, 2])
def test_fast_deformable_attention_equals_grid_sample_reference(levels_fed):
    attn = _random_attention(levels_fed, seed=levels_fed)
    h, w = 5, 6
    query = torch.randn(2, 7, 32, dtype=torch.float64, requires_grad=True)
    value = torch.randn(2, h * w, 32, dtype=torch.float64, requires_grad=True)
    reference = torch.rand(2, 7, 2, dtype=torch.float64, requires_grad=True)
    # locations outside the map exist, or the zero padding would go untested
    offsets = attn.sampling_offsets(query).view(2, 7, 4, 2, 3, 2)[:, :, :, :levels_fed].detach()
    pixel = reference.detach()[:, :, None, None, None] * torch.tensor([w, h]) + offsets - 0.5
    assert ((pixel[..., 0] < -1) | (pixel[..., 0] > w) | (pixel[..., 1] < -1) | (pixel[..., 1] > h)).any()
    assert ((pixel[..., 0] > 0) & (pixel[..., 0] < w - 1) & (pixel[..., 1] > 0) & (pixel[..., 1] < h - 1)).any()

    fast = attn(query, reference, value, (h, w))
    slow = grid_sample_reference(attn, query, reference, value, (h, w))
    assert torch.allclose(fast, slow, atol=1e-5, rtol=0)
    assert fast.abs().max() > 0.1

    upstream = torch.randn_like(fast)
    inputs = [query, value, reference, *attn.parameters()]
    fast_grads = torch.autograd.grad((fast * upstream).sum(), inputs, allow_unused=True)
    slow_grads = torch.autograd.grad((slow * upstream).sum(), inputs, allow_unused=True)
    for fast_grad, slow_grad in zip(fast_grads, slow_grads):
        fast_grad = torch.zeros(()) if fast_grad is None else fast_grad
        slow_grad = torch.zeros(()) if slow_grad is None else slow_grad
        assert torch.allclose(fast_grad, slow_grad, atol=1e-5, rtol=0)
    assert query.grad is None and fast_grads[0].abs().max() > 0 and fast_grads[2].abs().max() > 0


def test_fast_deformable_attention_float32_full_size():
    """The model's own size and dtype (24 x 24 tokens, 384 wide, 8 heads, 8 points, 1 of 2 levels fed)."""
    torch.manual_seed(0)
    attn = DeformableAttention(384)
    with torch.no_grad():
        attn.sampling_offsets.weight.normal_(0, 0.05)
        attn.attention_weights.weight.normal_(0, 0.05)
    query, value = torch.randn(1, 576, 384), torch.randn(1, 576, 384)
    side = (torch.arange(24, dtype=torch.float32) + 0.5) / 24
    y, x = torch.meshgrid(side, side, indexing="ij")
    reference = torch.stack([x.flatten(), y.flatten()], -1)[None]
    with torch.no_grad():
        assert torch.allclose(attn(query, reference, value, (24, 24)),
                              grid_sample_reference(attn, query, reference, value, (24, 24)), atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fast_deformable_attention_on_cuda_equals_grid_sample_reference():
    attn = _random_attention(levels_fed=1, seed=3).float().cuda()
    query, value = torch.randn(2, 7, 32, device="cuda"), torch.randn(2, 30, 32, device="cuda")
    reference = torch.rand(2, 7, 2, device="cuda")
    with torch.no_grad():
        fast = attn(query, reference, value, (5, 6))
        slow = grid_sample_reference(attn, query, reference, value, (5, 6))
    assert torch.allclose(fast, slow, atol=1e-4, rtol=0)

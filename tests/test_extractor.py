"""Whole-sequence extraction: each model runs its published frame backbone, cut where its head
starts, on every frame in order, and the head sees them as a sequence; the Fig. 3 breakdown finds
every model's stages and times them, repeated calls summed."""
import time

import pytest
import torch
from torch import nn

from seqvpr.embed.cct import CCT384, Tokenizer, build_cct384
from seqvpr.models import MODELS, build_model, parameter_count
from seqvpr.models.backbones import ResNet18GeM, VGG16NetVLAD
from seqvpr.models.extractor import SequenceExtractor, build_extractor, module_times, stage_modules

# name -> (backbone class, CCT blocks kept, image side, frames, descriptor size), the papers' layouts:
# CCT384 to block 8 (the authors' --trunc_te 8), STformer on the tokenizer (its branches hold the
# blocks), JIST on CosPlace ResNet-18 + GeM (512), SeqNet / OptiCorNet on VGG16 + NetVLAD + WPCA-4096.
# The models tied to a length run at L = 5, which their Table II counts assume; the convolutional
# backbones take any image size, and 64 px keeps VGG16 cheap on a CPU.
PUBLISHED = {
    "adapt_stformer": (CCT384, 8, 384, 1, 64 * 384),
    "adapt_transformer_temporal": (CCT384, 8, 384, 1, 64 * 384),
    "adapt_seqgem_only": (CCT384, 8, 384, 1, 64 * 384),
    "adapt_dense_k576": (CCT384, 8, 384, 1, 64 * 384),
    "seqvlad": (CCT384, 8, 384, 1, 64 * 384),
    "stformer": (Tokenizer, 0, 384, 5, 64 * 384),
    "jist": (ResNet18GeM, None, 64, 3, 512),
    "seqnet": (VGG16NetVLAD, None, 64, 5, 4096),
    "opticornet": (VGG16NetVLAD, None, 64, 5, 512),
}
# VGG16 features (all 13 convs), NetVLAD assignment conv and centroids, WPCA 1x1 conv 32768 -> 4096
VGG16_NETVLAD_PARAMETERS = 14_714_688 + 2 * 64 * 512 + 64 * 512 * 4096 + 4096


def test_cct_extractor_equals_backbone_per_frame_then_head():
    torch.manual_seed(0)
    extractor = build_extractor("adapt_stformer")  # recurrent: the frame order matters
    images = torch.randn(1, 2, 3, 384, 384)
    with torch.inference_mode():
        descriptor = extractor(images)
        frames = torch.stack([extractor.backbone(images[:, t]) for t in range(2)], 1)
        assert frames.shape == (1, 2, 576, 384)
        expected = extractor.head(frames)
        reversed_order = extractor.head(frames.flip(1))
    assert descriptor.shape == (1, 64 * 384)
    assert torch.allclose(descriptor, expected, atol=1e-5)
    assert not torch.allclose(descriptor, reversed_order, atol=1e-4)


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_every_registry_model_has_a_published_backbone():
    assert set(PUBLISHED) == set(MODELS)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_extractor_is_published_backbone_plus_head(name):
    backbone_class, cct_blocks, side, length, size = PUBLISHED[name]
    extractor = build_extractor(name, seq_len=length)
    assert type(extractor.backbone) is backbone_class
    if cct_blocks:
        assert extractor.backbone.num_layers == len(extractor.backbone.classifier.blocks) == cct_blocks
    # only what runs is kept: Table II's count (backbone parts counted on an uncut CCT), plus
    # SeqNet's VGG16 + NetVLAD + WPCA, which Table II leaves out of SeqNet's count
    assert _count(extractor) == parameter_count(name) + (VGG16_NETVLAD_PARAMETERS if name == "seqnet" else 0)
    images = torch.rand(1, length, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        descriptor = extractor(images)
    assert descriptor.shape == (1, size)
    assert torch.allclose(descriptor.norm(dim=-1), torch.ones(1), atol=1e-5)


def test_cut_cct_gives_the_uncut_encoders_tokens():
    images = torch.rand(1, 3, 384, 384, generator=torch.Generator().manual_seed(0))
    uncut = build_cct384(8, seed=0)[0]
    with torch.inference_mode():
        assert torch.equal(build_extractor("seqvlad").backbone(images), uncut(images))
        tokens = build_extractor("stformer").backbone(images)
        assert torch.equal(tokens, uncut.tokenizer.conv_layers(images).flatten(2).transpose(1, 2))
    assert tokens.shape == (1, 576, 384)


def test_checkpoint_loads_the_backbone_and_starts_stformer_branches(tmp_path):
    state = build_cct384(seed=7)[0].state_dict()
    torch.save(state, tmp_path / "cct_14_7x2_384.pth")
    adapt = build_extractor("adapt_stformer", checkpoint=tmp_path / "cct_14_7x2_384.pth")
    assert torch.equal(adapt.backbone.classifier.blocks[7].linear2.weight, state["classifier.blocks.7.linear2.weight"])
    stformer = build_extractor("stformer", checkpoint=tmp_path / "cct_14_7x2_384.pth")
    assert torch.equal(stformer.backbone.conv_layers[1][0].weight, state["tokenizer.conv_layers.1.0.weight"])
    assert torch.equal(stformer.head.spatial.blocks[3].linear1.weight, state["classifier.blocks.3.linear1.weight"])
    assert torch.equal(stformer.head.temporal.blocks[0].norm1.weight, state["classifier.blocks.0.norm1.weight"])


@pytest.mark.parametrize("name,stages", [
    ("adapt_stformer", {"spatial", "temporal", "aggregation"}),
    ("adapt_transformer_temporal", {"spatial", "temporal", "aggregation"}),
    ("adapt_dense_k576", {"spatial", "temporal", "aggregation"}),
    ("adapt_seqgem_only", {"temporal", "aggregation"}),  # no spatial encoder in this ablation
    ("stformer", {"spatial", "temporal", "aggregation"}),
    ("seqvlad", {"aggregation"}),
    ("seqnet", {"temporal"}),  # the temporal filter; mean and norm have no parameters
    ("jist", {"aggregation"}),  # SeqGeM
    ("opticornet", {"spatial", "temporal"}),  # 1D conv encoder, DSD
])
def test_fig3_stages_found_for_every_model(name, stages):
    with torch.device("meta"):
        head = build_model(name)
    assert set(stage_modules(SequenceExtractor(nn.Identity(), head))) == {"backbone", *stages}


class _Sleep(nn.Module):
    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return x


class _RecurrentHead(nn.Module):
    """A spatial stage called once per frame and an aggregation stage called once."""

    def __init__(self):
        super().__init__()
        self.spatial, self.aggregation, self.other = _Sleep(0.02), _Sleep(0.03), _Sleep(0.05)

    def forward(self, tokens):
        frames = [self.spatial(tokens[:, t]) for t in range(tokens.shape[1])]
        return self.aggregation(self.other(torch.stack(frames, 1)).mean((1, 2)))


def test_module_times_sums_each_stage_over_its_calls():
    extractor = SequenceExtractor(nn.Sequential(_Sleep(0.04), nn.Flatten(2), nn.Identity()), _RecurrentHead())
    times = module_times(extractor, torch.randn(1, 3, 2, 4, 4))
    assert set(times) == {"backbone", "spatial", "aggregation", "total"}
    assert 0.04 <= times["backbone"] < 0.04 + 0.03
    assert 0.06 <= times["spatial"] < 0.06 + 0.03  # three frames of 0.02 s
    assert 0.03 <= times["aggregation"] < 0.03 + 0.03
    assert times["total"] >= 0.04 + 0.06 + 0.03 + 0.05
    assert not extractor.head.spatial._forward_hooks and not extractor.backbone._forward_pre_hooks

"""Whole-sequence extraction: the backbone runs on every frame in order and the head sees them as
a sequence; the Fig. 3 breakdown times the stage modules, repeated calls summed."""
import time

import pytest
import torch
from torch import nn

from seqvpr.models import MODELS
from seqvpr.models.extractor import SequenceExtractor, backbone_for, build_backbone, build_extractor, module_times


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


def test_every_registry_model_has_a_backbone():
    assert {backbone_for(name) for name in MODELS} <= {"cct384"}
    with pytest.raises(ValueError, match="unknown backbone 'vgg99'"):
        build_backbone("vgg99")


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

"""Frame backbones of the baselines against the official checkpoints' key names and shapes
(CosPlace ResNet-18 + GeM, Patch-NetVLAD VGG16 + NetVLAD + WPCA), strict loading, seeded random
weights, and NetVLAD pooling against a direct evaluation of its formula."""
import json
from pathlib import Path

import pytest
import torch

from seqvpr.models import MODEL_BACKBONE, MODELS
from seqvpr.models.backbones import BACKBONES, PatchNetVLADPool, ResNet18GeM, VGG16NetVLAD, build_backbone

FIXTURES = Path(__file__).parent / "fixtures"
OFFICIAL = {
    "resnet18_gem": (ResNet18GeM, "cosplace_resnet18_512_state_dict.json"),
    "vgg16_netvlad": (VGG16NetVLAD, "patchnetvlad_vgg16_wpca4096_state_dict.json"),
}


def official_keys(name):
    return json.loads((FIXTURES / OFFICIAL[name][1]).read_text())


def random_state(keys, seed=0):
    """A checkpoint with the official keys and shapes; variances positive and GeM's p = 3, as trained ones are."""
    generator = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(*shape, generator=generator) * 0.02 for k, shape in keys.items() if shape}
    state.update({k: torch.tensor(7) for k, shape in keys.items() if not shape})  # num_batches_tracked
    state.update({k: 1.0 + state[k].abs() for k in state if k.endswith("running_var")})
    state.update({k: torch.full((1,), 3.0) for k in state if k.endswith(".p")})
    return state


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_layout_has_the_official_keys_and_shapes(name):
    with torch.device("meta"):
        model = OFFICIAL[name][0]()
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == official_keys(name)


def test_resnet18_gem_loads_the_official_layout_strictly(tmp_path):
    state = random_state(official_keys("resnet18_gem"))
    torch.save({"state_dict": state}, tmp_path / "ResNet18_512_cosplace.pth")
    model, weights = build_backbone("resnet18_gem", checkpoint=tmp_path / "ResNet18_512_cosplace.pth")
    assert len(weights) == 64 and not model.training
    assert torch.equal(model.backbone[7][1].conv2.weight, state["backbone.7.1.conv2.weight"])
    assert torch.equal(model.aggregation[3].weight, state["aggregation.3.weight"])
    with torch.inference_mode():
        out = model(torch.rand(2, 3, 96, 96))
    assert out.shape == (2, 512) and torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_missing_official_key_is_refused(tmp_path):
    state = random_state(official_keys("resnet18_gem"))
    del state["backbone.4.0.bn1.running_var"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(RuntimeError, match=r"backbone\.4\.0\.bn1\.running_var"):
        build_backbone("resnet18_gem", checkpoint=tmp_path / "partial.pth")


@pytest.mark.slow
def test_vgg16_netvlad_loads_the_official_layout_strictly(tmp_path):
    state = random_state(official_keys("vgg16_netvlad"))
    torch.save({"state_dict": state}, tmp_path / "pittsburgh_WPCA4096.pth.tar")
    model, _ = build_backbone("vgg16_netvlad", checkpoint=tmp_path / "pittsburgh_WPCA4096.pth.tar")
    assert torch.equal(model.WPCA[0].bias, state["WPCA.0.bias"])
    with torch.inference_mode():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 4096)


def test_vgg16_netvlad_descriptor_shape_and_norm():
    torch.manual_seed(0)
    model = VGG16NetVLAD(clusters=8, pcs=16).eval()
    with torch.inference_mode():
        out = model(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 16) and torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_random_weights_are_seeded():
    first, identity = build_backbone("resnet18_gem", seed=3)
    again, _ = build_backbone("resnet18_gem", seed=3)
    other, _ = build_backbone("resnet18_gem", seed=4)
    assert identity == "random-init-3"
    assert torch.equal(first.backbone[0].weight, again.backbone[0].weight)
    assert not torch.equal(first.backbone[0].weight, other.backbone[0].weight)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet50")


def test_netvlad_pool_matches_its_formula():
    torch.manual_seed(0)
    pool = PatchNetVLADPool(clusters=3, dim=4)
    x = torch.randn(1, 4, 2, 2)
    descriptors = torch.nn.functional.normalize(x, dim=1).flatten(2)[0].T  # (N, D)
    vlad = torch.zeros(3, 4)
    for desc in descriptors:
        logits = torch.stack([pool.conv.weight[k, :, 0, 0] @ desc for k in range(3)])
        for k, a in enumerate(logits.softmax(0)):
            vlad[k] += a * (desc - pool.centroids[k])
    vlad = torch.nn.functional.normalize(vlad, dim=1).flatten()
    assert torch.allclose(pool(x)[0], vlad / vlad.norm(), atol=1e-6)


def test_every_model_names_a_known_backbone():
    assert set(MODEL_BACKBONE) == set(MODELS) and set(MODEL_BACKBONE.values()) <= set(BACKBONES)

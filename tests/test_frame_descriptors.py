"""The baselines' published frame backbones inside the pipeline: frame descriptors written in the
order training reads, equal to the backbone run on the frames read back independently (PIL); the
results table's JIST and SeqNet rows read them at their published widths; other weights invalidate
them. Small hand-made home (24 x 32 frames), so VGG16 + NetVLAD runs in well under a second."""
import json

import numpy as np
import pytest
import torch
from dagster import materialize
from PIL import Image

from assets.frame_descriptors import frame_descriptor_assets
from assets.training import training_assets
from pipelines.resources import BaselineBackbones, FrameEncoder, PipelineHome
from schemas.split_table import SPLITS
from seqvpr.datasets.frames import save_frame
from seqvpr.errors import DataError
from seqvpr.models.backbones import build_backbone
from seqvpr.shards import Sample, encoder_record, write_split_shards
from seqvpr.splits import role_rows
from seqvpr.train import POOLED_DIM
from test_exports import MEAN, STD, materialise, oxford_bench, robotcar_like

BENCHMARK = "oxford_easy"


def _assets(*names):
    wanted = {f"{BENCHMARK}_{name}" for name in names}
    return [a for a in [*frame_descriptor_assets, *training_assets] if a.key.to_user_string() in wanted]


@pytest.fixture
def home(tmp_path):
    """Oxford-easy-like split table, a distinct random PNG frame each, and shards whose rows are the
    split table's (four random 384-D tokens a frame, a 2 x 2 map, for pooled CCT features)."""
    home = tmp_path / "home"
    bench = oxford_bench(BENCHMARK)
    layout, table = materialise(home, robotcar_like(16), bench, images=False)
    rng = np.random.default_rng(0)
    for image_path in sorted(set(table.column("image_path").to_pylist())):
        save_frame(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), layout.data_root / image_path)
    for split in SPLITS:
        if bench.split(split) is None:
            continue
        rows = [r for role in ("db", "query") for r in role_rows(table, split, role).to_dict("records")]
        samples = [Sample(key=r["frame_id"], tokens=rng.normal(size=(4, 384)).astype(np.float16), descriptor=np.zeros(4, np.float32),
                          row={k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items()}) for r in rows]
        write_split_shards(layout.shards(BENCHMARK, split), BENCHMARK, split, samples,
                           provenance={"encoder": encoder_record("random-init-0", 8, None)})
    return home


def _resources(home, **baselines):
    return {"home": PipelineHome(home=str(home)), "encoder": FrameEncoder(),
            "baselines": BaselineBackbones(**{"baseline_features": "published", **baselines})}


def _independent_descriptors(home, backbone, seed):
    """The backbone applied to the test split's frames, read with PIL in the shards' order (db, then queries)."""
    from seqvpr.layout import Layout
    from seqvpr.splits import read_split

    layout = Layout.from_home(home)
    table, _ = read_split(layout.split_table(BENCHMARK))
    df = table.to_pandas()
    test = df[df["split"] == "test"]
    ordered = [*test[test["role"] == "db"].sort_values("order")["image_path"],
               *test[test["role"] == "query"].sort_values("order")["image_path"]]
    images = np.stack([(np.asarray(Image.open(layout.data_root / p).convert("RGB"), np.float64) / 255.0 - MEAN) / STD
                       for p in ordered])
    model, _ = build_backbone(backbone, seed=seed)
    with torch.no_grad():
        return model(torch.from_numpy(images).permute(0, 3, 1, 2).float()).numpy(), len(ordered)


def test_descriptors_equal_the_backbone_on_the_frames_read_back(home):
    result = materialize(_assets("frame_descriptors"), resources=_resources(home))
    assert result.success
    meta = result.asset_materializations_for_node(f"{BENCHMARK}_frame_descriptors")[0].metadata
    assert meta["vgg16_netvlad_weights"].value == meta["resnet18_gem_weights"].value == "random-init-0"
    folder = home / "data" / "features" / BENCHMARK
    for backbone, dim in (("resnet18_gem", 512), ("vgg16_netvlad", 4096)):
        expected, frames = _independent_descriptors(home, backbone, seed=0)
        written = np.load(folder / backbone / "test.npy")
        assert written.shape == (frames, dim) == expected.shape
        assert np.allclose(written, expected, atol=2e-5)
        nearest = np.abs(written[:, None] - expected[None]).max(-1).argmin(1)
        assert nearest.tolist() == list(range(frames))  # distinct frames: the order is checked too
        assert meta[f"{backbone}_splits"].value["test"] == {"frames": frames, "dim": dim, "computed": True}
        record = json.loads((folder / backbone / "test.json").read_text())
        assert (record["backbone"], record["weights"], len(record["frame_ids"])) == (backbone, "random-init-0", frames)


def test_results_rows_of_jist_and_seqnet_read_the_published_backbones(home):
    """A JIST checkpoint trained on ResNet-18 + GeM descriptors, and untrained JIST and SeqNet rows:
    each says which backbone and weights it read, at the published widths (512, SeqNet 4096)."""
    config = {"ops": {f"{BENCHMARK}_checkpoint": {"config": {"epochs": 1, "queries_per_epoch": 4}},
                      f"{BENCHMARK}_results": {"config": {"models": ["jist", "seqnet"], "lengths": [5]}}}}
    result = materialize(_assets("frame_descriptors", "checkpoint", "results"), resources=_resources(home),
                         run_config=config, partition_key="jist")
    assert result.success
    rows = json.loads((home / "data" / "results" / f"{BENCHMARK}.json").read_text())
    by_model = {(r["model"], r["trained"].startswith("no: seeded")): r for r in rows}
    assert set(by_model) == {("jist", False), ("jist", True), ("seqnet", True)}
    for (model, _), row in by_model.items():
        backbone = "ResNet-18 + GeM (CosPlace) 512-D" if model == "jist" else "VGG16 + NetVLAD + WPCA 4096-D"
        assert row["features"] == f"{backbone}, the published backbone (random-init-0)"
        assert row["descriptor_dim"] == (512 if model == "jist" else 4096)
    assert by_model[("seqnet", True)]["parameters"] == 4096 * 4096 * 5 + 4096  # Conv1d 4096 -> 4096, width 5
    checkpoint = torch.load(home / "data" / "models" / BENCHMARK / "jist.pt", weights_only=False)
    assert checkpoint["meta"]["frame_descriptors"] == {"backbone": "resnet18_gem", "weights": "random-init-0"}

    # under pooled CCT features that checkpoint is left out, and JIST reads pooled tokens again
    config = {"ops": {f"{BENCHMARK}_results": {"config": {"models": ["jist"], "lengths": [5]}}}}
    assert materialize(_assets("results"), resources=_resources(home, baseline_features="pooled_cct"), run_config=config).success
    (row,) = json.loads((home / "data" / "results" / f"{BENCHMARK}.json").read_text())
    assert row["trained"].startswith("no: seeded") and row["descriptor_dim"] == POOLED_DIM
    assert row["features"].startswith(f"CCT384 final tokens, frozen, 2 x 2 grid means whitened to {POOLED_DIM}-D on the "
                                      "training split (published: ResNet-18 + GeM")


def test_results_show_a_checkpoint_its_start_and_the_untrained_model(home):
    """A checkpoint that beat its k-means start has three rows: trained, training's start (the start
    weights saved in the checkpoint, here the seeded init, so it scores as the untrained row), untrained."""
    from seqvpr.evaluate import START, UNTRAINED, training_note
    from seqvpr.train import build_sequence_model, save_checkpoint

    start = build_sequence_model("seqvlad", 5).state_dict()
    generator = torch.Generator().manual_seed(1)
    trained = {k: torch.randn(v.shape, generator=generator) if v.is_floating_point() else v for k, v in start.items()}
    meta = {"name": "seqvlad", "seq_len": 5, "model_kwargs": {}, "tail_blocks": 0, "encoder_model_id": FrameEncoder().model_id(),
            "frame_descriptors": None, "kmeans_layers": 1, "best_epoch": 1, "epochs_run": 1, "benchmark": BENCHMARK,
            "val_split": "test", "initial_val_recall": {"5": 0.1}, "best_val_recall5": 0.2}
    save_checkpoint(home / "data" / "models" / BENCHMARK / "seqvlad.pt", "seqvlad", trained, meta, start)
    config = {"ops": {f"{BENCHMARK}_results": {"config": {"models": ["seqvlad"], "lengths": [5]}}}}
    result = materialize(_assets("results"), resources=_resources(home, baseline_features="pooled_cct"), run_config=config)
    assert result.success
    rows = json.loads((home / "data" / "results" / f"{BENCHMARK}.json").read_text())
    assert [(r["model"], r["trained"]) for r in rows] == [("seqvlad", training_note(meta)), ("seqvlad", START), ("seqvlad", UNTRAINED)]
    assert rows[1]["recall"] == rows[2]["recall"]
    gain = result.asset_materializations_for_node(f"{BENCHMARK}_results")[0].metadata["trained_vs_untrained_R@5_L5"].value
    assert gain["seqvlad"]["start"] == gain["seqvlad"]["untrained"] == rows[2]["recall"]["5"]


def test_a_checkpoint_that_keeps_its_start_saves_its_best_trained_epoch(home):
    """At a learning rate too small to move the weights no epoch beats the start, which the authors'
    rule keeps (best_epoch 0); the checkpoint also holds epoch 1's weights and the asset says so."""
    from seqvpr.train import load_checkpoint

    config = {"ops": {f"{BENCHMARK}_checkpoint": {"config": {"epochs": 1, "queries_per_epoch": 4, "lr": 1e-30}}}}
    result = materialize(_assets("frame_descriptors", "checkpoint"), resources=_resources(home, baseline_features="pooled_cct"),
                         run_config=config, partition_key="jist")
    assert result.success
    metadata = result.asset_materializations_for_node(f"{BENCHMARK}_checkpoint")[0].metadata
    assert (metadata["best_epoch"].value, metadata["best_trained_epoch"].value) == (0, 1)
    path = home / "data" / "models" / BENCHMARK / "jist.pt"
    kept, meta = load_checkpoint(path)
    trained, _ = load_checkpoint(path, weights="trained")
    assert meta["best_trained_epoch"] == 1 and trained is not None
    assert all(torch.allclose(v, kept.state_dict()[k]) for k, v in trained.state_dict().items())  # lr 1e-30


def test_results_show_the_best_trained_epoch_beside_a_kept_start(home):
    """A checkpoint whose training never beat its start keeps the start (the authors' rule) and saves
    its best trained epoch: the table shows that epoch's row first, then the kept start, then the
    untrained model, and the gain is measured on the trained row with the kept one as its start."""
    from seqvpr.evaluate import UNTRAINED, training_note
    from seqvpr.train import build_sequence_model, save_checkpoint

    start = build_sequence_model("seqvlad", 5).state_dict()
    generator = torch.Generator().manual_seed(1)
    trained = {k: torch.randn(v.shape, generator=generator) if v.is_floating_point() else v for k, v in start.items()}
    meta = {"name": "seqvlad", "seq_len": 5, "model_kwargs": {}, "tail_blocks": 0, "encoder_model_id": FrameEncoder().model_id(),
            "frame_descriptors": None, "kmeans_layers": 1, "best_epoch": 0, "epochs_run": 3, "benchmark": BENCHMARK,
            "val_split": "test", "initial_val_recall": {"5": 0.3}, "best_val_recall5": 0.3, "best_trained_epoch": 2,
            "best_trained_val_recall5": 0.2, "history": [{"epoch": e, "loss": 0.5 / e} for e in (1, 2, 3)]}
    save_checkpoint(home / "data" / "models" / BENCHMARK / "seqvlad.pt", "seqvlad", start, meta, start, trained)
    config = {"ops": {f"{BENCHMARK}_results": {"config": {"models": ["seqvlad"], "lengths": [5]}}}}
    result = materialize(_assets("results"), resources=_resources(home, baseline_features="pooled_cct"), run_config=config)
    assert result.success
    rows = json.loads((home / "data" / "results" / f"{BENCHMARK}.json").read_text())
    assert [(r["weights"], r["trained"]) for r in rows] == [
        ("trained", training_note({**meta, "weights": "trained"})), ("kept", training_note(meta)), ("untrained", UNTRAINED)]
    assert rows[1]["recall"] == rows[2]["recall"]  # the kept start is the seeded init here
    assert rows[0]["recall"] != rows[1]["recall"]
    gain = result.asset_materializations_for_node(f"{BENCHMARK}_results")[0].metadata["trained_vs_untrained_R@5_L5"].value
    assert (gain["seqvlad"]["trained"], gain["seqvlad"]["start"]) == (rows[0]["recall"]["5"], rows[1]["recall"]["5"])
    table = (home / "data" / "results" / f"{BENCHMARK}.md").read_text()
    trained, start, random = rows[0]["recall"]["5"], rows[1]["recall"]["5"], gain["seqvlad"]["random"]
    margin = trained - max(start, random)  # the kept start is also the untrained row here
    assert (f"| seqvlad | 5 | {trained:.3f} | {start:.3f} | {start:.3f} | {random:.3f} | {margin:+.3f} "
            f"| {'yes' if margin >= 0.10 else 'no'} | 0.5000 -> 0.2500 (epoch 2) |") in table.splitlines()


def test_other_weights_invalidate_the_descriptors(home):
    """A new seed recomputes them (and the old ones are refused for it); the same seed again reuses them."""
    from seqvpr.embed.frame_descriptors import load_frame_descriptors, split_frames, write_frame_descriptors
    from seqvpr.layout import Layout

    layout = Layout.from_home(home)
    folder = layout.frame_descriptors(BENCHMARK, "resnet18_gem")
    splits = {"test": split_frames(layout.shards(BENCHMARK, "test"), layout.data_root)}
    ids = splits["test"].frame_ids
    assert write_frame_descriptors(folder, splits, "resnet18_gem", seed=0)["splits"]["test"]["computed"] is True
    assert write_frame_descriptors(folder, splits, "resnet18_gem", seed=0)["splits"]["test"]["computed"] is False
    before = load_frame_descriptors(folder, "test", "resnet18_gem", "random-init-0", ids)
    with pytest.raises(DataError, match="not resnet18_gem with random-init-1"):
        load_frame_descriptors(folder, "test", "resnet18_gem", "random-init-1", ids)
    second = write_frame_descriptors(folder, splits, "resnet18_gem", seed=1)
    assert second["weights"] == "random-init-1" and second["splits"]["test"]["computed"] is True
    after = load_frame_descriptors(folder, "test", "resnet18_gem", "random-init-1", ids)
    assert not np.allclose(before, after)
    expected, _ = _independent_descriptors(home, "resnet18_gem", seed=1)
    assert np.allclose(after, expected, atol=2e-5)
    assert write_frame_descriptors(folder, splits, "resnet18_gem", seed=1)["splits"]["test"]["computed"] is False
    with pytest.raises(DataError, match="val.json: no resnet18_gem frame descriptors: materialise"):
        load_frame_descriptors(folder, "val", "resnet18_gem", "random-init-1", ids)
    with pytest.raises(DataError, match="other frames"):
        load_frame_descriptors(folder, "test", "resnet18_gem", "random-init-1", ids[::-1])
    # a checkpoint's identity is its SHA-256: another file is other weights
    weights = home / "resnet18_gem.pth"
    torch.save(build_backbone("resnet18_gem", seed=2)[0].state_dict(), weights)
    third = write_frame_descriptors(folder, splits, "resnet18_gem", checkpoint=str(weights))
    assert third["splits"]["test"]["computed"] is True and len(third["weights"]) == 64


def test_pooled_cct_writes_nothing(tmp_path):
    """pooled_cct (and "auto" on a CPU): the asset is a no-op, so the results assets may always depend on it."""
    assert BaselineBackbones(device="cpu").published() is False and BaselineBackbones(device="cuda").published() is True
    result = materialize(_assets("frame_descriptors"), resources=_resources(tmp_path, baseline_features="pooled_cct"))
    assert result.success
    assert result.asset_materializations_for_node(f"{BENCHMARK}_frame_descriptors")[0].metadata["baseline_features"].value == "pooled_cct"
    assert not (tmp_path / "data").exists()

"""NetVLAD k-means initialisation, reference mining (negCache, margin-violating negatives, batches of
4 tuples) and the embedding cut's trainable CCT tail."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seqvpr.models.layers import NetVLAD


def test_netvlad_init_puts_centroids_on_the_kmeans_centres():
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:4] + np.eye(8)[[1, 2, 3, 0]] * 0.5  # four well separated directions
    labels = np.repeat(np.arange(4), 50)
    descriptors = centres[labels] * rng.uniform(0.5, 3.0, size=(200, 1)) + rng.normal(scale=0.02, size=(200, 8))
    unit = descriptors / np.linalg.norm(descriptors, axis=1, keepdims=True)
    expected = np.stack([unit[labels == c].mean(0) for c in range(4)])  # k-means centres of the normalised descriptors

    vlad = NetVLAD(dim=8, clusters=4)
    vlad.init_from_descriptors(descriptors)
    centroids = vlad.centroids.detach().numpy()
    match = np.argmin(((centroids[:, None] - expected[None]) ** 2).sum(-1), axis=1)
    assert sorted(match.tolist()) == [0, 1, 2, 3]
    assert centroids == pytest.approx(expected[match], abs=1e-4)

    # alpha as the authors' init_params: -log(0.01) / mean gap of the two best normalised-centroid dots
    dots = np.sort(unit @ (expected / np.linalg.norm(expected, axis=1, keepdims=True)).T, axis=1)[:, ::-1]
    alpha = -math.log(0.01) / np.mean(dots[:, 0] - dots[:, 1])
    assert vlad.alpha == pytest.approx(alpha, rel=1e-3)
    weight = vlad.assign.weight.detach().numpy()
    assert weight == pytest.approx(alpha * expected[match] / np.linalg.norm(expected[match], axis=1, keepdims=True), rel=1e-3)
    assert vlad.assign.bias is None  # the authors' Conv1d(dim, clusters, 1, bias=False)
    assert sum(p.numel() for p in vlad.parameters()) == 2 * 4 * 8
    soft = F.softmax(vlad.assign(F.normalize(torch.tensor(descriptors, dtype=torch.float32), dim=-1)), dim=-1)
    assert (soft.argmax(-1).numpy() == np.argsort(match)[labels]).all()


def test_netvlad_init_needs_enough_descriptors():
    with pytest.raises(ValueError, match="at least as many descriptors"):
        NetVLAD(dim=8, clusters=16).init_from_descriptors(np.ones((10, 8)))


def _mine(db, cache=(), candidates=(2, 3, 4, -1, -1), nontrivial=(0, 1), negatives=5, margin=0.04):
    from seqvpr.train import mine_tuple

    return mine_tuple(np.zeros(1), np.array(db, dtype=float)[:, None], np.array(nontrivial, dtype=np.int64),
                      np.array(candidates, dtype=np.int64), np.array(cache, dtype=np.int64), negatives, 50, margin,
                      np.random.default_rng(0))


def test_mining_keeps_only_margin_violating_negatives_and_the_cached_ones():
    """Query at 0; non-trivial positives 0 (0.1) and 1 (0.5): the nearest, 0, is the positive.
    Violating: closer than d(q, p) + sqrt(margin) = 0.1 + 0.2. Candidate 2 (0.2) violates, 3 (0.35)
    and 4 (2.0) do not; cached negative 5 (0.25) is not a candidate but is kept from the negCache."""
    db = [0.1, 0.5, 0.2, 0.35, 2.0, 0.25]
    positive, negatives = _mine(db, cache=[5])
    assert positive == 0 and negatives.tolist() == [2, 5]
    assert _mine(db, cache=[5], negatives=1)[1].tolist() == [2]  # at most nNeg, nearest first
    assert _mine(db)[1].tolist() == [2]
    assert _mine(db, candidates=[3, 4]) is None  # no negative violates the margin: the query is skipped
    assert _mine(db, nontrivial=[]) is None


def test_results_say_when_a_checkpoint_never_beat_its_start():
    from seqvpr.evaluate import START, UNTRAINED, training_gain, training_note

    meta = {"initial_val_recall": {"5": 0.5}, "best_val_recall5": 0.5, "benchmark": "toy", "val_split": "test",
            "best_epoch": 0, "epochs_run": 3, "best_trained_epoch": 2, "best_trained_val_recall5": 0.4}
    assert training_note(meta) == "no: 3 epochs on toy (test R@5 0.500 -> 0.500) never beat the start, seeded init kept"
    assert training_note({**meta, "kmeans_layers": 1}).endswith("never beat the start, k-means init kept")
    improved = training_note({**meta, "best_val_recall5": 0.7, "best_epoch": 2})
    assert improved == "yes: epoch 2 of 3 on toy (test R@5 0.500 -> 0.700)"
    rows = [{"model": "m", "length": 5, "weights": "kept", "trained": improved, "recall": {"5": 0.7}},
            {"model": "m", "length": 5, "weights": "untrained", "trained": UNTRAINED, "recall": {"5": 0.5}},
            {"model": "m", "length": 3, "weights": "untrained", "trained": UNTRAINED, "recall": {"5": 0.9}}]
    assert training_gain(rows, 5) == {"m": {"length": 5, "trained": 0.7, "untrained": 0.5, "start": None, "note": improved,
                                            "training_loss": None}}
    assert training_gain(rows, 5, chance=0.55)["m"]["beats_untrained_and_random_by_0.10"] is True
    assert training_gain(rows, 5, chance=0.65)["m"]["beats_untrained_and_random_by_0.10"] is False
    assert training_note({**meta, "weights": "start"}) == START
    rows.append({"model": "m", "length": 5, "weights": "start", "trained": START, "recall": {"5": 0.6}})
    assert training_gain(rows, 5)["m"]["start"] == 0.6
    # the start kept: the gain is the best trained epoch's, and the kept row is the start
    best_trained = training_note({**meta, "weights": "trained"})
    assert best_trained == ("yes: epoch 2 of 3 on toy (test R@5 0.500 -> 0.400), its best trained epoch; "
                            "not kept, as its start scored higher")
    kept_start = [{"model": "m", "length": 5, "weights": "trained", "trained": best_trained, "recall": {"5": 0.45}},
                  {"model": "m", "length": 5, "weights": "kept", "trained": training_note(meta), "recall": {"5": 0.8}},
                  {"model": "m", "length": 5, "weights": "untrained", "trained": UNTRAINED, "recall": {"5": 0.3}}]
    gain = training_gain(kept_start, 5, chance=0.2)["m"]
    assert (gain["trained"], gain["start"], gain["untrained"], gain["note"]) == (0.45, 0.8, 0.3, best_trained)
    assert gain["beats_untrained_and_random_by_0.10"] is True
    assert training_gain(kept_start, 5, chance=0.4)["m"]["beats_untrained_and_random_by_0.10"] is False


def test_a_checkpoint_row_carries_the_training_loss_of_the_epoch_it_shows():
    from seqvpr.evaluate import training_loss

    history = [{"epoch": 1, "loss": 0.3}, {"epoch": 2, "loss": 0.2}, {"epoch": 3, "loss": float("nan")}]
    meta = {"best_epoch": 2, "best_trained_epoch": 2, "history": history}
    assert training_loss(meta) == {"first": 0.3, "shown": 0.2, "epoch": 2}
    assert training_loss({**meta, "best_epoch": 0, "best_trained_epoch": 1, "weights": "trained"}) == {
        "first": 0.3, "shown": 0.3, "epoch": 1}
    assert training_loss({**meta, "best_epoch": 0}) is None  # a kept start: no trained epoch shown
    assert training_loss({**meta, "weights": "start"}) is None
    assert training_loss({**meta, "best_epoch": 3}) is None  # an epoch without a tuple: no loss to show


def test_checkpoint_with_a_trained_tail_round_trips(tmp_path):
    """The CCT blocks after the cut train with the head and are saved and restored with it."""
    from seqvpr.embed.cct import CCTTail
    from seqvpr.train import build_sequence_model, load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = build_sequence_model("seqvlad", 3, {"clusters": 4}, tail=CCTTail(1))
    tokens = torch.randn(2, 3, 16, 384)
    with torch.no_grad():
        per_frame = model.head(model.tail(tokens.flatten(0, 1)).unflatten(0, (2, 3)))
        assert torch.allclose(model(tokens), per_frame)
    assert any(p.requires_grad for p in model.tail.parameters())
    meta = {"seq_len": 3, "model_kwargs": {"clusters": 4}, "tail_blocks": 1}
    save_checkpoint(tmp_path / "m.pt", "seqvlad", model.state_dict(), meta)
    restored, _ = load_checkpoint(tmp_path / "m.pt")
    with torch.no_grad():
        assert torch.allclose(restored(tokens), model(tokens))
    assert load_checkpoint(tmp_path / "m.pt", weights="start")[0] is None  # saved without its start
    start = {k: torch.zeros_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_checkpoint(tmp_path / "m.pt", "seqvlad", model.state_dict(), meta, start)
    restored_start, _ = load_checkpoint(tmp_path / "m.pt", weights="start")
    assert all(torch.equal(v, start[k]) for k, v in restored_start.state_dict().items())
    assert torch.allclose(load_checkpoint(tmp_path / "m.pt")[0](tokens), model(tokens))
    assert load_checkpoint(tmp_path / "m.pt", weights="trained")[0] is None  # only where the start was kept
    save_checkpoint(tmp_path / "m.pt", "seqvlad", start, meta, start, trained_state_dict=model.state_dict())
    with torch.no_grad():
        assert torch.allclose(load_checkpoint(tmp_path / "m.pt", weights="trained")[0](tokens), model(tokens))
        assert not torch.allclose(load_checkpoint(tmp_path / "m.pt")[0](tokens), model(tokens))
    with pytest.raises(ValueError, match="'best'"):
        load_checkpoint(tmp_path / "m.pt", weights="best")



def _toy_split():
    """24 places of 4 tokens x 8 dims and their noisy queries, one positive each, one training run."""
    from seqvpr.train import SplitData

    rng = np.random.default_rng(0)
    places = rng.normal(size=(24, 4, 8)).astype(np.float16)
    queries = (places + 0.3 * rng.normal(size=places.shape)).astype(np.float16)
    bounds = np.array([[0, 24]] * 24)
    positives = [np.array([i]) for i in range(24)]
    negatives = np.array([[j for j in range(24) if abs(j - i) > 1][:20] for i in range(24)])
    return SplitData(places, queries, bounds, bounds, positives, positives, negatives)


def test_training_steps_are_batches_of_four_mined_tuples():
    from seqvpr.train import TrainConfig, train

    data = _toy_split()
    cfg = TrainConfig(model="jist", model_kwargs={"dim": 8}, seq_len=3, epochs=2, lr=1e-3, queries_per_epoch=10, patience=5)
    result = train(cfg, data, data, log=lambda *_: None)
    steps = 0
    for epoch in result.history:
        assert epoch["tuples"] + epoch["skipped"] == 10 and np.isfinite(epoch["loss"])
        steps += math.ceil(10 / 4)  # batches of 4 queries; a batch whose queries all lack violators is skipped
    assert 0 < len(result.losses) <= steps


def test_opticornet_batch_loss_is_its_quadruplet_loss_on_the_two_nearest_negatives():
    """Per tuple, Eqs. 7-9 with the first two mined negatives (nearest first), averaged over the batch;
    the head reads pooled tokens and is built for their width."""
    from seqvpr.models.opticornet import quadruplet_loss
    from seqvpr.data import sequence_windows
    from seqvpr.train import SplitData, TrainConfig, batch_loss, build_sequence_model, fit_pooling

    rng = np.random.default_rng(1)
    tokens = rng.normal(size=(12, 4, 8)).astype(np.float16)
    bounds = np.array([[0, 12]] * 12)
    data = SplitData(tokens, tokens, bounds, bounds, [], [], np.zeros((12, 0)))
    model = build_sequence_model("opticornet", 5, {"dim": 8, "channels": 6, "hidden": 6})
    assert model.pooled and model.head.spatial.in_channels == 8
    assert fit_pooling(model, data) == 24  # the whitened 2 x 2 grid descriptor, fitted on the split's frames
    windows = sequence_windows(bounds, 5)
    tuples = [(0, 9, np.array([1, 2, 5])), (3, 11, np.array([4, 2]))]  # far positives: the margin is violated
    loss = batch_loss(model, TrainConfig.for_model("opticornet", on_gpu=False, margin=0.3), data, tuples, windows, windows)
    with torch.no_grad():
        describe = lambda rows: model(torch.from_numpy(tokens[windows[rows]].astype(np.float32)))
        expected = quadruplet_loss(describe([0, 3]), describe([9, 11]), describe([1, 4]), describe([2, 2]), margin=0.3)
    assert loss.item() > 0 and loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_registry_holds_each_models_authors_recipe_and_its_cpu_budget():
    """One entry per model: the GPU recipe is its authors' (Adapt-STformer paper Sec. IV; oravus/seqNet
    main.py defaults; OptiCorNet's implementation details), the CPU one keeps the loss and batches."""
    from seqvpr.models import REGISTRY, TABLE_MODELS
    from seqvpr.train import TrainConfig

    assert TABLE_MODELS == ["adapt_stformer", "seqvlad", "stformer", "seqnet", "jist", "opticornet"]
    adapt = REGISTRY["adapt_stformer"].gpu
    assert (adapt.optimizer, adapt.lr, adapt.batch_size, adapt.negatives, adapt.margin, adapt.patience) == ("adam", 1e-5, 4, 5, 0.1, 5)
    seqnet = REGISTRY["seqnet"].gpu
    assert (seqnet.optimizer, seqnet.lr, seqnet.momentum, seqnet.weight_decay, seqnet.lr_step, seqnet.lr_gamma,
            seqnet.batch_size, seqnet.epochs, seqnet.patience) == ("sgd", 1e-4, 0.9, 1e-3, 50, 0.5, 16, 200, 0)
    assert (seqnet.negatives, seqnet.sqrt_margin_in_loss, seqnet.start_is_candidate) == (10, True, False)
    opti = REGISTRY["opticornet"].gpu
    assert (opti.optimizer, opti.lr, opti.batch_size, opti.loss) == ("sgd", 1e-4, 32, "quadruplet")
    assert (opti.negatives, opti.start_is_candidate) == (10, False)  # tuples of 12 images, seqNet's rule
    # the paper states no margin: seqNet's 0.1 on a GPU, 2.0 on the CPU budget (chosen on training folds, README)
    assert (opti.margin, REGISTRY["opticornet"].cpu.margin, REGISTRY["opticornet"].cpu.epochs) == (0.1, 2.0, 20)
    assert adapt.start_is_candidate and REGISTRY["seqvlad"].gpu.epochs == 100
    for spec in REGISTRY.values():
        assert (spec.cpu.loss, spec.cpu.batch_size, spec.cpu.optimizer) == (spec.gpu.loss, spec.gpu.batch_size, spec.gpu.optimizer)
        assert spec.cpu_note and spec.recipe_source
    cfg = TrainConfig.for_model("seqnet", on_gpu=True, lr=0.5, epochs=None)
    assert (cfg.model, cfg.lr, cfg.epochs, cfg.optimizer) == ("seqnet", 0.5, 200, "sgd")  # None keeps the recipe


def test_sgd_recipe_halves_the_learning_rate_every_lr_step_epochs():
    from seqvpr.train import TrainConfig, make_optimiser

    cfg = TrainConfig.for_model("seqnet", on_gpu=True, lr_step=2)
    optimiser, scheduler = make_optimiser(cfg, torch.nn.Linear(1, 1))
    assert isinstance(optimiser, torch.optim.SGD) and optimiser.defaults["momentum"] == 0.9
    assert optimiser.defaults["weight_decay"] == 1e-3
    rates = []
    for _ in range(5):
        rates.append(optimiser.param_groups[0]["lr"])
        optimiser.step()
        scheduler.step()
    assert rates == pytest.approx([1e-4, 1e-4, 5e-5, 5e-5, 2.5e-5])
    assert make_optimiser(TrainConfig(), torch.nn.Linear(1, 1))[1] is None  # Adam: constant



def test_early_stop_after_patience_plus_one_epochs_without_a_better_recall():
    """svpr_main.py and seqNet's main.py stop when `not_improved > patience`: with lr 0 no epoch
    improves on the start, so patience 2 runs 3 epochs and keeps the start (best epoch 0)."""
    from seqvpr.train import TrainConfig, train

    data = _toy_split()
    cfg = TrainConfig(model="jist", model_kwargs={"dim": 8}, seq_len=3, epochs=10, lr=0.0, queries_per_epoch=8,
                      patience=2)
    result = train(cfg, data, data, log=lambda *_: None)
    assert len(result.history) == 3 and result.best_epoch == 0
    # the start is kept; the first of the (equal) trained epochs is kept beside it for the results
    assert result.best_trained_epoch == 1 and result.best_trained_recall5 == result.history[0]["recall"][5]
    assert all(torch.equal(v, result.state_dict[k]) for k, v in result.trained_state_dict.items())  # lr 0
    # seqNet's main.py evaluates only after training: its first epoch is kept even when no better
    # than the start, and the count of epochs without a better one starts there (1 + 3 epochs)
    seqnet_rule = train(replace(cfg, start_is_candidate=False), data, data, log=lambda *_: None)
    assert seqnet_rule.best_epoch == 1 and len(seqnet_rule.history) == 4
    assert seqnet_rule.best_recall5 == seqnet_rule.history[0]["recall"][5]
    assert seqnet_rule.trained_state_dict is None  # the kept weights are the best trained epoch's

def test_stformer_recipe_gives_its_parts_the_authors_learning_rates():
    """ai4ce/Adapt-STFormer get_models.py, arch "stformer": Adam over three groups, the spatial
    branch and the aggregation at 1e-4 and the temporal branch at 1e-3 (`--lr` unused); every
    trainable parameter in exactly one group; a name the head lacks is refused."""
    from seqvpr.train import TrainConfig, build_sequence_model, make_optimiser

    cfg = TrainConfig.for_model("stformer", on_gpu=True, model_kwargs={"blocks": 1, "token_pool": 4})
    model = build_sequence_model("stformer", 5, cfg.model_kwargs)
    optimiser, scheduler = make_optimiser(cfg, model)
    assert isinstance(optimiser, torch.optim.Adam) and scheduler is None
    by_lr = {}
    for group in optimiser.param_groups:
        assert group["weight_decay"] == 0
        by_lr.setdefault(group["lr"], set()).update(map(id, group["params"]))
    head = model.head
    assert by_lr[1e-3] == set(map(id, head.temporal.parameters()))
    assert by_lr[1e-4] == set(map(id, [*head.spatial.parameters(), *head.aggregation.parameters()]))
    grouped = [id(p) for group in optimiser.param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="'decoder'"):
        make_optimiser(TrainConfig(model="stformer", group_lrs={"decoder": 1e-3}), model)


def test_seqnet_triplet_loss_compares_with_the_square_root_of_the_margin():
    """oravus/seqNet main.py: nn.TripletMarginLoss(margin=opt.margin**0.5); the Adapt-STformer
    code's other models use opt.margin. Hand-made descriptors: d(q, p) = 0.2, d(q, n) = 0.4."""
    from seqvpr.train import SequenceModel, TrainConfig, batch_loss

    class Fixed(torch.nn.Module):  # sequence "descriptor" = the first frame's first token
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))  # where the loss finds its device

        def forward(self, frames):
            return frames[:, 0, 0]

    q = np.zeros((1, 1, 1, 2), np.float32)
    db = np.array([[[0.2, 0.0]], [[0.0, 0.4]]], np.float32)[:, None]  # (2 frames, 1 token, 2) -> positive, negative
    data = type("Split", (), {"q_tokens": q[:, 0], "db_tokens": db[:, 0]})()
    windows = np.array([[0], [1]])
    tuples = [(0, 0, np.array([1]))]
    seqnet = TrainConfig.for_model("seqnet", on_gpu=True)
    assert seqnet.sqrt_margin_in_loss and not TrainConfig.for_model("adapt_stformer", on_gpu=True).sqrt_margin_in_loss
    model = SequenceModel(Fixed(), None, None)
    loss_seqnet = batch_loss(model, seqnet, data, tuples, windows[:1], windows)
    loss_adam = batch_loss(model, TrainConfig.for_model("seqvlad", on_gpu=True), data, tuples, windows[:1], windows)
    assert loss_seqnet.item() == pytest.approx(0.1 ** 0.5 + 0.2 - 0.4, abs=1e-5)  # 0.116
    assert loss_adam.item() == pytest.approx(0.0, abs=1e-6)  # 0.1 + 0.2 - 0.4 < 0


def test_jist_on_fixed_features_trains_cosplaces_last_layer_started_at_identity():
    """Pooled-CCT JIST gets CosPlace's Linear(dim, dim) per frame, at the identity: untrained it is
    plain SeqGeM over the (L2-normalised) frame features."""
    from seqvpr.models.sequence import JIST
    from seqvpr.train import build_sequence_model

    model = build_sequence_model("jist", 5)
    assert model.pooled and model.head.spatial.weight.shape == (16, 16)  # the whitened grid descriptor's width
    frames = F.normalize(torch.randn(2, 5, 16), dim=-1)
    torch.manual_seed(0)
    plain = JIST(dim=16)
    with torch.no_grad():
        assert torch.allclose(model.head(frames), plain(frames), atol=1e-6)
    assert sum(p.numel() for p in plain.parameters()) == 1  # published: SeqGeM's exponent alone


def test_checkpoints_are_partitioned_by_model():
    from assets.training import model_partitions

    assert model_partitions.get_partition_keys() == ["adapt_stformer", "seqvlad", "stformer", "seqnet", "jist", "opticornet"]


def test_pooled_heads_read_grid_means_whitened_on_the_training_frames():
    """GridWhitening: means over a 2 x 2 grid of the token map, centred and whitened on the training
    frames (their projections have identity scatter), L2-normalised; its buffers survive a
    checkpoint's state dict into a freshly built model."""
    from seqvpr.train import SplitData, build_sequence_model, fit_pooling

    rng = np.random.default_rng(2)
    tokens = rng.normal(size=(30, 16, 8)).astype(np.float16)  # a 4 x 4 map of 8-D tokens
    bounds = np.array([[0, 15]] * 15)
    data = SplitData(tokens[:15], tokens[15:], bounds, bounds, [], [], np.zeros((15, 0)))
    model = build_sequence_model("seqnet", 5, {"dim": 6})
    assert fit_pooling(model, data) == 30
    x = tokens.astype(np.float64).reshape(30, 2, 2, 2, 2, 8).mean((2, 4)).reshape(30, 32)  # cells by hand
    z = (x - x.mean(0)) @ model.pooling.projection.double().numpy()
    np.testing.assert_allclose(z.T @ z, np.eye(6), atol=1e-4)
    frames = model.frames(torch.from_numpy(tokens.astype(np.float32)))
    np.testing.assert_allclose(frames.numpy(), z / np.linalg.norm(z, axis=1, keepdims=True), atol=1e-5)
    loaded = build_sequence_model("seqnet", 5, {"dim": 6})
    loaded.load_state_dict(model.state_dict())
    assert torch.equal(loaded.frames(torch.from_numpy(tokens.astype(np.float32))), frames)


def test_grid_whitening_fit_streams_batches_and_fixes_signs():
    """The whitening is fitted from a stream of batches (memory flat in the split's size): any
    batching gives the same projection, which equals the centred frames' SVD (right singular
    vectors over singular values) with each column's largest entry made positive."""
    from seqvpr.train import GridWhitening

    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 12)) * np.linspace(3, 0.5, 12) + 40.0  # far from the origin: the shift matters
    whole, streamed = GridWhitening(dim=5), GridWhitening(dim=5)
    assert whole.fit([x]) == 200
    assert streamed.fit(x[i:i + 7] for i in range(0, 200, 7)) == 200
    np.testing.assert_allclose(streamed.projection.numpy(), whole.projection.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(streamed.mean.numpy(), x.mean(0), rtol=1e-6)
    _, singular, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    expected = vt[:5].T / singular[:5]
    expected *= np.sign(expected[np.abs(expected).argmax(0), np.arange(5)])
    np.testing.assert_allclose(whole.projection.numpy(), expected, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="no training frames"):
        GridWhitening(dim=5).fit(iter([]))

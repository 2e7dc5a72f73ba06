"""Recall@K on hand-made descriptors and positions with known answers, PCA, sequence windows, and a
short training run that improves Recall@5 over the untrained model."""
import numpy as np
import pytest

from seqvpr.data import sequence_windows
from seqvpr.metrics import apply_pca, chance_recall, fit_pca, nearest, queries_without_positives, recall_at_k
from seqvpr.pairs import PairRules, compute_pairs
from seqvpr.train import SplitData, TrainConfig, train


def test_recall_at_k_by_hand_leaves_out_queries_without_positives():
    """getRecallAtN (seqNet, Adapt-STformer): a query without positives is not in the denominator."""
    db = np.array([[0.0, 0], [1, 0], [2, 0], [3, 0]])
    queries = np.array([[0.1, 0], [2.9, 0], [1.6, 0], [0.9, 0]])
    ranked = nearest(db, queries, 4)
    assert ranked.tolist() == [[0, 1, 2, 3], [3, 2, 1, 0], [2, 1, 3, 0], [1, 0, 2, 3]]
    # query 0: hit at rank 1; query 1: first positive at rank 3; query 2: none; query 3: hit at rank 4
    positives = [np.array([0]), np.array([1, 0]), np.array([], dtype=int), np.array([3])]
    assert recall_at_k(ranked, positives, (1, 2, 3, 4)) == {1: pytest.approx(1 / 3), 2: pytest.approx(1 / 3),
                                                          3: pytest.approx(2 / 3), 4: pytest.approx(1.0)}
    assert queries_without_positives(positives) == 1
    only_without = recall_at_k(ranked[2:3], positives[2:3], (1,))
    assert np.isnan(only_without[1])


def test_recall_with_radius_and_heading_rule():
    """Positives come from the pair rules: 10 m and 30 degrees; a place seen the other way is no hit."""
    db_xy = np.array([[0.0, 0.0], [0.0, 5.0], [100.0, 0.0]])
    db_heading = np.array([0.0, 180.0, 0.0])
    q_xy, q_heading = np.array([[0.0, 4.0]]), np.array([350.0])
    pairs = compute_pairs(db_xy, q_xy, PairRules(radius=10, nontrivial_radius=5, negative_radius=10, max_heading_deg=30),
                          db_heading=db_heading, query_heading=q_heading)
    assert [list(p) for p in pairs.positives] == [[0]]
    descriptors = np.array([[1.0, 0], [0.0, 1], [0.5, 0.5]])
    ranked = nearest(descriptors, np.array([[0.1, 0.9]]), 3)  # closest descriptor: db 1 (opposite heading)
    assert recall_at_k(ranked, pairs.positives, (1, 3)) == {1: 0.0, 3: 1.0}


def test_pca_is_fitted_on_training_descriptors_and_not_renormalised():
    rng = np.random.default_rng(0)
    train = np.outer(rng.normal(size=100), [3.0, 4.0, 0.0]) + rng.normal(scale=0.01, size=(100, 3))
    pca = fit_pca(train, 1)
    axis = pca[1][:, 0] * np.sign(pca[1][0, 0])
    assert axis == pytest.approx([0.6, 0.8, 0.0], abs=1e-3)
    test = np.array([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0], [0.0, 0.0, 7.0]])
    projected = apply_pca(test, pca)[:, 0] * np.sign(pca[1][0, 0])
    centre = train.mean(0) @ np.array([0.6, 0.8, 0.0])
    assert projected == pytest.approx([-centre, 5.0 - centre, -centre], abs=1e-2)  # sklearn's transform: no re-normalising
    with pytest.raises(ValueError, match="PCA to 4 dimensions"):
        fit_pca(train, 4)


def test_sequence_windows_stay_in_their_run():
    bounds = np.array([[0, 4]] * 4 + [[4, 6]] * 2)
    windows = sequence_windows(bounds, 3)
    assert windows.tolist() == [[0, 1, 2], [0, 1, 2], [1, 2, 3], [1, 2, 3], [4, 4, 5], [4, 5, 5]]


def _synthetic_split(n, rng, noise):
    """Frame descriptors (as a published backbone's: L2-normalised, read by the head directly), each
    the mean of 16 noisy tokens: places live in 4 of 32 feature dimensions; db and query frames add
    strong noise in the other 28, so an untrained projection confuses places and a trained one can
    learn to ignore the noise."""
    signal = np.zeros((n, 16, 32))
    signal[:, :, :4] = rng.normal(size=(n, 1, 4))
    clutter = np.zeros((1, 1, 32))
    clutter[..., 4:] = noise

    def frames():
        tokens = (signal + clutter * rng.normal(size=signal.shape)).astype(np.float16).astype(np.float32).mean(1)
        return tokens / np.linalg.norm(tokens, axis=1, keepdims=True)

    places, q = frames(), frames()
    bounds = np.array([[0, n]] * n)
    positives = [np.array([i]) for i in range(n)]
    negatives = np.array([[j for j in range(n) if abs(j - i) > 2][:20] for i in range(n)])
    return SplitData(places, q, bounds, bounds, positives, positives, negatives)


def test_training_improves_recall_over_untrained():
    """SeqNet on 32-D frame descriptors (its head built for that width) learns to ignore the clutter."""
    rng = np.random.default_rng(0)
    train_data, val_data = _synthetic_split(40, rng, 3.0), _synthetic_split(40, rng, 3.0)
    cfg = TrainConfig(model="seqnet", model_kwargs={"dim": 32, "out_dim": 32}, seq_len=5, epochs=6, lr=3e-3,
                      queries_per_epoch=40, patience=6)
    result = train(cfg, train_data, val_data, log=lambda *_: None, published_features=True)
    assert result.best_recall5 >= result.initial_recall[5] + 0.1
    assert len(result.history) >= 1 and all(np.isfinite(h["loss"]) for h in result.history)


def _toy_split(frames, tokens, seed=3):
    rng = np.random.default_rng(seed)
    places = rng.normal(size=(frames, tokens, 384)).astype(np.float16)
    bounds = np.array([[0, frames]] * frames)
    positives = [np.array([i]) for i in range(frames - 1)] + [np.array([], dtype=np.int64)]
    return SplitData(places, places, bounds, bounds, positives, positives, np.full((frames, 5), -1))


def test_evaluation_table_marks_untrained_models_and_counts_queries():
    """Every default CPU model has its rows at the lengths it can read (OptiCorNet at its length 5
    only, SeqNet from its width 5), OptiCorNet also re-ranked, each saying which features it read."""
    from seqvpr.evaluate import UNTRAINED, evaluate_models, results_markdown

    data = _toy_split(6, 576)
    names = ["adapt_stformer", "seqvlad", "seqnet", "jist", "opticornet"]
    with pytest.raises(ValueError, match="training split"):  # the pooled heads' whitening is fitted on it
        evaluate_models(data, ["seqnet"], {}, [5], log=lambda *_: None)
    rows = evaluate_models(data, names, {}, [3, 5], log=lambda *_: None, train_data=_toy_split(24, 576, seed=4))
    labels = [(r["model"], r["length"]) for r in rows]
    assert labels == [("adapt_stformer", 3), ("adapt_stformer", 5), ("seqvlad", 3), ("seqvlad", 5), ("seqnet", 5),
                      ("jist", 3), ("jist", 5), ("opticornet", 5), ("opticornet + SeqSLAM re-rank", 5)]
    assert all(r["trained"] == UNTRAINED for r in rows)
    features = {r["model"]: r["features"] for r in rows}
    assert features["seqvlad"] == features["adapt_stformer"] == "CCT384 final tokens, frozen"
    assert "2 x 2 grid means whitened to 16-D on the training split (published: ResNet-18 + GeM" in features["jist"]
    assert "2 x 2 grid means whitened to 16-D on the training split (published: VGG16 + NetVLAD" in features["seqnet"]
    assert features["opticornet"] == features["seqnet"]
    assert {r["model"]: r["descriptor_dim"] for r in rows if r["length"] == 5} == {
        "adapt_stformer": 64 * 384, "seqvlad": 64 * 384, "seqnet": 16, "jist": 16, "opticornet": 512,
        "opticornet + SeqSLAM re-rank": 512}
    table = results_markdown("toy", rows, data)
    assert table.count("\n| ") == len(rows) + 1 and "R@20" in table
    assert "6 queries, 6 database frames; 1 queries without a positive are left out" in table
    assert table.count(f"| {UNTRAINED} |") == len(rows)


def test_fixed_length_checkpoint_is_evaluated_at_its_length_only():
    """A (small) trained STformer: one row at its sequence length, marked trained, saying that it
    read final CCT tokens where the paper feeds it the tokenizer output."""
    from seqvpr.evaluate import evaluate_models
    from seqvpr.train import build_sequence_model

    model = build_sequence_model("stformer", 5, {"tokens": 36, "blocks": 1, "clusters": 4}).eval()
    meta = {"name": "stformer", "seq_len": 5, "tail_blocks": 0, "benchmark": "toy", "val_split": "val",
            "initial_val_recall": {"5": 0.5}, "best_val_recall5": 0.6, "best_epoch": 1, "epochs_run": 2}
    rows = evaluate_models(_toy_split(6, 36), [], {"stformer": (model, meta)}, [1, 3, 5], log=lambda *_: None)
    assert [(r["model"], r["length"], r["trained"]) for r in rows] == [
        ("stformer", 5, "yes: epoch 1 of 2 on toy (val R@5 0.500 -> 0.600)")]
    assert rows[0]["features"] == "CCT384 final tokens, frozen (published: tokenizer output, before any CCT block)"


def test_chance_recall_is_the_random_ranking_floor():
    """Hand-computed: 4 database items; query 0 has 1 positive, query 1 has 2, query 2 none (left
    out, as getRecallAtN). K = 1: (1/4 + 2/4) / 2; K = 2: (1 - C(3,2)/C(4,2) + 1 - C(2,2)/C(4,2)) / 2;
    K beyond the database finds every positive."""
    positives = [np.array([0]), np.array([0, 1]), np.array([], dtype=np.int64)]
    chance = chance_recall(positives, 4, ks=(1, 2, 5))
    assert chance[1] == pytest.approx(0.375)
    assert chance[2] == pytest.approx((0.5 + 5 / 6) / 2)
    assert chance[5] == 1.0
    rng = np.random.default_rng(0)  # and a random ranking does score it
    ranked = np.array([rng.permutation(4) for _ in range(20000)])
    simulated = recall_at_k(ranked, [positives[i % 2] for i in range(20000)], ks=(1, 2))
    assert simulated[1] == pytest.approx(chance[1], abs=0.01) and simulated[2] == pytest.approx(chance[2], abs=0.01)

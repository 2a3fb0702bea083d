"""The idf-weighted linear path: the graph module against the fitting's design matrix, the
fitter against scikit-learn's objective, and the blend weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scorer.nn.ngrams import hashed_pairs, positions
from scorer.train.blend import fit_weights, linear_path
from scorer.train.checkpoint import load_model
from scorer.train.ngram_fit import design, expand, fit_idf, fit_logistic, products

VOCAB, BUCKETS, CLASSES = 12, 16, 3


def _random_ids(rng: np.random.Generator, n: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    ids = rng.integers(2, VOCAB, size=(n, steps))
    lengths = rng.integers(0, steps + 1, size=n)
    ids[np.arange(steps)[None, :] >= lengths[:, None]] = 0
    return ids, lengths


def _word() -> np.ndarray:
    word = np.ones(VOCAB, dtype=bool)
    word[[0, 1, 5]] = False  # <pad>, <unk>, and one whitespace token
    return word


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.integers(1, 9))
def test_graph_path_computes_the_design_matrix_product(seed: int, steps: int) -> None:
    rng = np.random.default_rng(seed)
    ids, lengths = _random_ids(rng, 7, steps)
    word = _word()
    train = positions(ids, lengths, word, BUCKETS)
    idf = fit_idf(train, VOCAB, BUCKETS)
    weight = torch.from_numpy(rng.normal(size=(VOCAB + BUCKETS, CLASSES)))
    expected = torch.sparse.mm(design(train, idf), weight) * 0.7
    path = linear_path(VOCAB, BUCKETS, idf, word, weight, 0.7).double()
    clamped = torch.from_numpy(np.clip(lengths, 1, steps))
    with torch.no_grad():
        got = path(torch.from_numpy(ids), clamped)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("ids", "feature_count"),
    [
        ([[3, 4, 0]], 3),  # two words and their bigram (length 2)
        ([[3, 5, 4]], 2),  # whitespace between: no unigram for it, no bigram across it
        ([[1, 3, 0]], 3),  # <unk> is a position (its idf is zero), and so is its bigram
    ],
)
def test_positions_leave_out_non_words(ids: list[list[int]], feature_count: int) -> None:
    array = np.array(ids)
    lengths = np.array([int((array[0] != 0).sum())])
    word = _word()
    word[1] = True  # <unk> counts as a word here; fit_idf gives it no weight
    assert len(positions(array, lengths, word, BUCKETS).columns) == feature_count


def test_idf_zero_below_min_df_and_for_pad_and_unk() -> None:
    ids = np.array([[3, 4], [3, 6], [3, 1]])
    word = _word()
    idf = fit_idf(positions(ids, np.array([2, 2, 2]), word, BUCKETS), VOCAB, BUCKETS)
    assert idf[3] == pytest.approx(np.log(4 / 4) + 1.0)  # in all three reviews
    assert idf[4] == 0.0 and idf[6] == 0.0  # in one review only
    assert idf[1] == 0.0 and idf[0] == 0.0


def test_fit_logistic_reaches_the_penalized_optimum() -> None:
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    ids, lengths = _random_ids(rng, 200, 8)
    lengths = np.maximum(lengths, 1)
    target = (ids[:, 0] % CLASSES).astype(np.int64)
    pos = positions(ids, lengths, _word(), BUCKETS)
    x = design(pos, fit_idf(pos, VOCAB, BUCKETS))
    weight, bias = fit_logistic(*products(x), torch.from_numpy(target), CLASSES, c=2.0)
    dense = x.to_dense().numpy()
    reference = sklearn.LogisticRegression(C=2.0, tol=1e-10, max_iter=10_000).fit(dense, target)
    ours = (dense @ weight.numpy()) + bias.numpy()
    theirs = reference.decision_function(dense)

    # Both are defined up to a constant per row; compare the softmax.
    def softmax(z: np.ndarray) -> np.ndarray:
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    np.testing.assert_allclose(softmax(ours), softmax(theirs), atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fitting_the_nonzero_idf_features_only_reaches_the_same_model(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids, lengths = _random_ids(rng, 60, 6)
    target = torch.from_numpy((ids[:, 0] % CLASSES).astype(np.int64))
    pos = positions(ids, np.maximum(lengths, 1), _word(), BUCKETS)
    idf = fit_idf(pos, VOCAB, BUCKETS)
    full, compact = design(pos, idf), design(pos, idf, compact=True)
    assert compact.shape == (60, int((idf > 0).sum())) and compact.shape[1] < full.shape[1]
    weight, bias = fit_logistic(*products(full), target, CLASSES, c=4.0)
    small, small_bias = fit_logistic(*products(compact), target, CLASSES, c=4.0)
    assert torch.all(weight[torch.from_numpy(idf == 0)] == 0)
    torch.testing.assert_close(expand(small, idf), weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(small_bias, bias, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.sparse.mm(compact, small), torch.sparse.mm(full, weight))


def test_fit_weights_finds_the_blend_that_generated_the_labels() -> None:
    rng = np.random.default_rng(1)
    model = torch.from_numpy(rng.normal(size=(4000, CLASSES)))
    linear = torch.from_numpy(rng.normal(size=(4000, CLASSES)))
    truth = 0.6 * model + 1.5 * linear
    torch.manual_seed(0)
    target = torch.distributions.Categorical(logits=truth).sample()
    a, b = fit_weights(model, linear, lambda z: torch.nn.functional.cross_entropy(z, target))
    assert a == pytest.approx(0.6, abs=0.1) and b == pytest.approx(1.5, abs=0.1)


def test_the_blend_chosen_on_validation_folds_into_the_model() -> None:
    from scorer.nn.model import ReviewLSTM
    from scorer.runtime.config import ModelConfig
    from scorer.train.blend import choose_blend, fold
    from scorer.train.fit import Objective, logits
    from tests.helpers import word_sets

    vocab, sets, values, _ = word_sets(80, 40)
    torch.manual_seed(0)
    config = ModelConfig(
        variant="packed", vocab_size=len(vocab), num_labels=3, packed=True, wide_buckets=8
    )
    model = ReviewLSTM(config)
    with torch.no_grad():
        model.wide.unigram.weight.normal_()
    judge = Objective(config, torch.tensor(values), expected_weight=0.5)
    before = logits(model, sets["val"])
    blend, record = choose_blend(model, sets, vocab.tokens, judge, buckets=32)
    assert (blend.a, blend.b, blend.c) == (record["a"], record["b"], record["c"])
    fold(model, blend)
    after = logits(model, sets["val"])
    assert model.config.linear_buckets == 32 and model.linear is not None
    linear = after - record["a"] * before
    # What the model adds is b times the fitted linear model: its logits, recomputed from
    # the same rows, match the folded path's output.
    assert record["val_loss"]["blend"] <= record["val_loss"]["model"] + 1e-9
    assert float(judge(after.float(), sets["val"].target)) == pytest.approx(
        record["val_loss"]["blend"], abs=1e-5
    )
    assert linear.abs().max() > 0 or record["b"] == 0


@pytest.mark.parametrize(("variant", "blended"), [("packed", True), ("regression", False)])
def test_training_with_blend_writes_a_model_that_loads_and_exports_exactly(
    tmp_path, variant: str, blended: bool
) -> None:
    import json
    from dataclasses import replace

    from scorer.export.onnx_export import export_model
    from scorer.runtime.model_dir import ModelDir
    from scorer.train.job import TrainJob, train_model
    from scorer.train.ngram_fit import BUCKETS
    from scorer.train.presets import resolve
    from tests.helpers import write_reviews

    data = write_reviews(tmp_path / "reviews.parquet", n=600)
    options = {"search_budget": 0, "teacher_hidden_dim": 0, "embedding_dim": 16, "hidden_dim": 16}
    options |= {"max_len": 24, "epochs": 3}
    options |= {"batch_size": 32, "lr": 1e-2, "threads": 1, "variant": variant, "blend": True}
    model_cfg, tok, train = resolve(options)
    job = TrainJob(data, tmp_path / "model", model_cfg, tok, train, ("Title", "Review Text"))
    result = train_model(job)
    metrics = json.loads((result.model_dir.path / "metrics.json").read_text())
    model = load_model(ModelDir.open(result.model_dir.path))
    if not blended:  # regression has no logits to blend
        assert metrics["blend"] is None and model.linear is None
        return
    record = metrics["blend"]
    assert record["val_loss"]["blend"] <= record["val_loss"]["model"]
    spent = record["seconds"]
    assert 0 < spent["features"] + spent["fit"] <= spent["total"]
    assert model.config.linear_buckets == BUCKETS and model.linear is not None
    assert model.linear.unigram.weight.abs().sum() > 0
    for graph in export_model(result.model_dir.path).graphs:
        report = graph.report  # 1e-4 on the CPU provider, 1e-3 on CUDA (validated without TF32)
        assert report.worst_diff <= report.tolerance and report.argmax_mismatches == 0
    # A fixed seed stays deterministic with the blend: the same weights on a second run.
    again = train_model(replace(job, out=tmp_path / "again"))
    first = torch.load(result.model_dir.path / "model.pt", weights_only=True)
    second = torch.load(again.model_dir.path / "model.pt", weights_only=True)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("informative", ["model", "linear"])
def test_the_linear_path_is_kept_only_where_it_pays_for_its_weight_on_validation(
    monkeypatch, informative
) -> None:
    from scorer.nn.model import ReviewLSTM
    from scorer.runtime.config import ModelConfig
    from scorer.train import blend as blend_module
    from scorer.train.blend import LinearFit, choose_blend, fold
    from scorer.train.fit import Objective
    from tests.helpers import word_sets

    vocab, sets, values, _ = word_sets(80, 400)
    rows, classes, buckets = len(sets["val"]), len(values), 16
    rng = np.random.default_rng(0)
    truth = torch.from_numpy(rng.normal(size=(rows, classes)) * 3)
    noise = torch.from_numpy(rng.normal(size=(rows, classes)))
    torch.manual_seed(0)
    target = torch.distributions.Categorical(logits=truth).sample()
    val = sets["val"]
    sets = {**sets, "val": dataclasses.replace(val, target=torch.stack(
        [target.float(), torch.tensor(values)[target]], dim=1))}  # fmt: skip
    # Where the model knows it all, the linear model says the same thing (its logits are
    # the model's, halved): it can only rescale what a alone rescales.
    deep, linear = (truth, truth / 2) if informative == "model" else (noise, truth)
    width = len(vocab) + buckets
    fitted = LinearFit(
        [(0.0, 4.0, torch.zeros(width, classes, dtype=torch.float64),
          torch.zeros(classes, dtype=torch.float64), linear)],
        np.ones(width), np.ones(len(vocab), dtype=bool), 0.0, 0.0,
    )  # fmt: skip
    monkeypatch.setattr(blend_module, "linear_fits", lambda *a, **k: fitted)
    monkeypatch.setattr(blend_module, "logits", lambda model, data: deep)
    config = ModelConfig("packed", len(vocab), classes, packed=True, wide_buckets=8)
    model = ReviewLSTM(config)
    judge = Objective(config, torch.tensor(values))
    blend, record = choose_blend(model, sets, vocab.tokens, judge, buckets=buckets)
    losses = record["val_loss"]
    kept = informative == "linear"
    assert blend.linear is kept and record["linear_kept"] is kept
    # Kept: its loss beats the scale alone by more than one weight's price per row.
    assert (losses["with_linear"] + 1 / rows < losses["scaled"]) is kept
    assert losses["blend"] == (losses["with_linear"] if kept else losses["scaled"])
    head = model.head.weight.detach().clone()
    fold(model, blend)
    assert (model.linear is not None) is kept
    assert (model.config.linear_buckets == buckets) is kept
    torch.testing.assert_close(model.head.weight, head * blend.a)


@settings(max_examples=60)
@given(
    st.lists(st.lists(st.integers(0, 49), min_size=1, max_size=9), min_size=1, max_size=6),
    st.sampled_from([1, 7, 1024, 262_144]),
)
def test_the_fit_and_the_graph_hash_the_same_pairs(rows, buckets) -> None:
    """The linear path's fit (numpy positions) and its graph (torch) read one n-gram
    definition: every real pair of words lands in the same bucket."""
    steps = max(len(r) for r in rows)
    ids = np.zeros((len(rows), steps), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    lengths = np.array([len(r) for r in rows])
    word = np.ones(50, dtype=bool)
    word[[0, 1, 7]] = False  # <pad>, <unk>, a whitespace token
    pos = positions(ids, lengths, word, buckets)
    graph = hashed_pairs(torch.from_numpy(ids), buckets).numpy()
    want = set()
    for i, row in enumerate(rows):
        for t in range(len(row) - 1):
            if word[row[t]] and word[row[t + 1]]:
                want.add((i, 50 + int(graph[i, t])))
        want.update((i, v) for v in row if word[v])
    assert set(zip(pos.rows.tolist(), pos.columns.tolist(), strict=True)) == want

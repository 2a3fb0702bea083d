"""The paired bootstrap of model against baseline over the test rows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.significance import RowScores, markdown, paired_bootstrap, resampled_rows

LABELS = (1.0, 2.0, 3.0, 4.0, 5.0)


def scores(correct, squared) -> RowScores:
    return RowScores(np.atleast_2d(np.asarray(correct, bool)), np.atleast_2d(squared) * 1.0)


# model correct / squared error per seed and row, baseline's, then the expected differences
# (accuracy: seed mean minus baseline; RMSE: mean of the seeds' RMSEs minus baseline's).
CASES = [
    pytest.param(
        [[1, 1, 0, 0], [1, 0, 0, 0]],
        [[0, 1, 4, 0], [1, 1, 1, 1]],
        [1, 0, 1, 0],
        [0, 0, 0, 4],
        (0.375 - 0.5, (np.sqrt(5 / 4) + 1) / 2 - 1),
        id="two seeds, worse on both",
    ),
    pytest.param(
        [[1, 1, 1, 1]], [[0, 0, 0, 0]], [0, 0, 0, 0], [1, 1, 1, 1], (1.0, -1.0), id="always right"
    ),
    pytest.param(
        [[1, 0, 1, 0]], [[0, 4, 0, 1]], [1, 0, 1, 0], [0, 4, 0, 1], (0.0, 0.0), id="the same"
    ),
]


@pytest.mark.parametrize(("m_correct", "m_sq", "b_correct", "b_sq", "want"), CASES)
def test_differences_on_all_rows_are_the_seed_mean_against_the_baseline(
    m_correct, m_sq, b_correct, b_sq, want
) -> None:
    out = paired_bootstrap(scores(m_correct, m_sq), scores(b_correct, b_sq), resamples=200)
    assert out["accuracy"]["delta"] == pytest.approx(want[0])
    assert out["rmse_expected"]["delta"] == pytest.approx(want[1])
    assert out["rows"] == 4 and out["resamples"] == 200


def test_identical_predictions_have_a_zero_interval_and_count_as_at_least_as_good() -> None:
    same = scores([[1, 0, 1, 1, 0]], [[0, 1, 0, 0, 9]])
    out = paired_bootstrap(same, same)
    for metric in ("accuracy", "rmse_expected"):
        assert (out[metric]["low"], out[metric]["high"]) == (0.0, 0.0)
        assert out[metric]["model_at_least_as_good"] == 1.0


def test_a_two_point_lead_is_surely_better_on_many_rows_and_not_on_a_hundred() -> None:
    # The model turns 3% of the baseline's wrong rows right and 1% of its right rows wrong.
    rng = np.random.default_rng(1)
    for rows, straddles in ((100, True), (100_000, False)):
        base = np.arange(rows) % 10 < 7
        model = base.copy()
        model[np.flatnonzero(~base)[: rows * 3 // 100]] = True
        model[np.flatnonzero(base)[: rows // 100]] = False
        sq = rng.random(rows)
        out = paired_bootstrap(scores(model, sq), scores(base, sq), resamples=300)["accuracy"]
        assert out["delta"] == pytest.approx(0.02)
        assert out["low"] <= out["delta"] <= out["high"]
        assert (out["low"] < 0.0 < out["high"]) is straddles


def test_ties_of_a_three_seed_mean_count_as_at_least_as_good() -> None:
    # A mean of k/3 over rows carries rounding: compare with exact counts per resample.
    rng = np.random.default_rng(3)
    model_ok, base_ok = rng.random((3, 12)) < 0.5, rng.random(12) < 0.5
    sq = np.zeros((3, 12))
    out = paired_bootstrap(scores(model_ok, sq), scores(base_ok, sq[:1]), resamples=2000)
    exact = [
        3 * base_ok[r].sum(axis=-1) <= model_ok[:, r].sum(axis=(0, -1))
        for r in resampled_rows(12, 2000, 0)
    ]
    ties = [
        3 * base_ok[r].sum(axis=-1) == model_ok[:, r].sum(axis=(0, -1))
        for r in resampled_rows(12, 2000, 0)
    ]
    assert np.concatenate(ties).sum() > 50  # the case has ties to get right
    assert out["accuracy"]["model_at_least_as_good"] == np.concatenate(exact).mean()
    # The interval: the 2.5th and 97.5th percentiles of the resampled differences.
    delta = np.concatenate(
        [model_ok[:, r].mean(axis=-1).mean(axis=0) - base_ok[r].mean(axis=-1)
         for r in resampled_rows(12, 2000, 0)]
    )  # fmt: skip
    low, high = np.percentile(delta, [2.5, 97.5])
    got = out["accuracy"]
    assert (got["low"], got["high"]) == pytest.approx((low, high))


def test_same_seed_same_interval_and_another_seed_another() -> None:
    rng = np.random.default_rng(0)
    model = scores(rng.random((3, 200)) < 0.7, rng.random((3, 200)))
    base = scores(rng.random(200) < 0.7, rng.random(200))
    first, again = paired_bootstrap(model, base), paired_bootstrap(model, base)
    other = paired_bootstrap(model, base, seed=1)
    assert first == again and first["accuracy"]["low"] != other["accuracy"]["low"]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.booleans(), st.floats(0, 16), st.floats(0, 16)),
             min_size=1, max_size=30)
)  # fmt: skip
def test_swapping_model_and_baseline_mirrors_every_interval(rows) -> None:
    a_ok, b_ok, a_sq, b_sq = (np.array(column) for column in zip(*rows, strict=True))
    a, b = scores(a_ok, a_sq), scores(b_ok, b_sq)
    forward, backward = paired_bootstrap(a, b, resamples=50), paired_bootstrap(b, a, resamples=50)
    for metric in ("accuracy", "rmse_expected"):
        f, r = forward[metric], backward[metric]
        assert r["delta"] == pytest.approx(-f["delta"], abs=1e-12)
        assert r["low"] == pytest.approx(-f["high"], abs=1e-9)
        assert r["high"] == pytest.approx(-f["low"], abs=1e-9)


def test_row_scores_from_predictions() -> None:
    got = RowScores.of(np.array([4, 0, 2]), [np.array([4, 1, 2])], [[5.0, 1.5, 2.0]], LABELS)
    assert got.correct.tolist() == [[True, False, True]]
    assert got.squared.tolist() == [[0.0, 0.25, 1.0]]
    with pytest.raises(ValueError, match="rows"):
        RowScores.of(np.array([4, 0]), [np.array([4, 1, 2])], [[5.0, 1.5, 2.0]], LABELS)


def test_markdown_row() -> None:
    out = paired_bootstrap(
        scores([[1, 1, 0, 1]], [[0, 0, 1, 0]]), scores([1, 0, 0, 1], [0, 1, 1, 0]), resamples=20
    )
    table = markdown([{"name": "mine", **out}])
    assert table.splitlines()[2].startswith("| mine | 4 | +0.250 (")

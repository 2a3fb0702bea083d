from __future__ import annotations

import numpy as np
import pytest

from scorer.runtime.metrics import macro_f1, nearest_label, rating_metrics
from scorer.train.batching import bucket_batches, padding_fraction, random_batches

LABELS = (1.0, 2.0, 3.0, 4.0, 5.0)


@pytest.mark.parametrize(
    ("true", "pred", "expected", "want"),
    [
        # perfect
        ([0, 1, 4], [0, 1, 4], [1.0, 2.0, 5.0], dict(accuracy=1, rmse=0, mae=0, rmse_expected=0)),
        # one off by 4 stars out of 4 rows: RMSE sqrt(16/4)=2, MAE 1
        (
            [4, 4, 4, 4],
            [4, 4, 4, 0],
            [5, 5, 5, 1],
            dict(accuracy=0.75, rmse=2, mae=1, rmse_expected=2),
        ),
        # 4.5 for a 5 and 2.5 for a 2: expected-rating RMSE 0.5
        ([4, 1], [4, 1], [4.5, 2.5], dict(accuracy=1, rmse=0, mae=0, rmse_expected=0.5)),
    ],
)
def test_rating_metrics_table(true, pred, expected, want) -> None:
    m = rating_metrics(np.array(true), np.array(pred), np.array(expected, float), LABELS)
    for key, value in want.items():
        assert getattr(m, key) == pytest.approx(value)
    assert np.asarray(m.confusion).sum() == len(true)


def test_macro_f1_by_hand() -> None:
    # class 0: tp 1, fp 1, fn 0 -> f1 2/3; class 1: tp 1, fp 0, fn 1 -> 2/3; absent classes skipped
    confusion = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]])
    assert macro_f1(confusion) == pytest.approx(2 / 3)


def test_nearest_label_decodes_regression() -> None:
    assert nearest_label(np.array([0.2, 2.49, 2.51, 9.0]), LABELS).tolist() == [0, 1, 2, 4]


def test_bucket_batches_cover_each_row_once_and_cut_padding() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, size=5000)
    batches = bucket_batches(lengths, 64, np.random.default_rng(1))
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(5000))
    assert all(len(b) <= 64 for b in batches)
    bucketed = padding_fraction(batches, lengths)
    random = padding_fraction(random_batches(5000, 64, np.random.default_rng(1)), lengths)
    assert bucketed < 0.05 < 0.3 < random
    again = bucket_batches(lengths, 64, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))

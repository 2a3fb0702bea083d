"""The drift profile: counts, shares, quantiles, PSI, thresholds (hand-computed tables)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scorer.errors import UserError
from scorer.runtime.profile import DriftThresholds, Profile, compare, length_edges, psi

LABELS = (1.0, 2.0, 3.0, 4.0, 5.0)


def small() -> Profile:
    # Token counts 0, 3, 5, 5, 12 (capped at max_len 10); 2 unknown tokens; predicted
    # labels 5, 5, 4, 1, 5; expected ratings summing to 19.
    return Profile.of(
        LABELS, 10, np.array([0, 3, 5, 5, 12]), 2, np.array([4, 4, 3, 0, 4]),
        np.array([4.5, 4.0, 3.5, 2.0, 5.0]),
    )  # fmt: skip


def test_shares_and_quantiles_match_a_hand_count() -> None:
    p = small()
    assert p.rows == 5 and p.empty == 1 and p.tokens == 0 + 3 + 5 + 5 + 10
    assert p.empty_share == pytest.approx(1 / 5)
    assert p.unknown_share == pytest.approx(2 / 23)
    assert p.mean_expected == pytest.approx(19 / 5)
    assert p.predicted.tolist() == [1, 0, 0, 1, 3]
    assert p.predicted_shares().tolist() == pytest.approx([0.2, 0, 0, 0.2, 0.6])
    # Sorted counts 0 3 5 5 10: p10 -> 0 (0.5 rows), p25 -> 3, p50 -> 5, p75 -> 5, p90 -> 10.
    assert p.length_quantiles() == [0, 3, 5, 5, 10]
    # Bins [0, 3], (3, 5], (5, 10]: 2, 2 and 1 rows.
    assert p.length_shares([3, 5]).tolist() == pytest.approx([0.4, 0.4, 0.2])


def test_psi_matches_a_hand_computation() -> None:
    e, a = [0.5, 0.3, 0.2], [0.4, 0.4, 0.2]
    want = (0.4 - 0.5) * math.log(0.4 / 0.5) + (0.4 - 0.3) * math.log(0.4 / 0.3)
    assert psi(e, a) == pytest.approx(want) == pytest.approx(0.0510826, abs=1e-6)
    assert psi(e, e) == 0.0
    # An empty bin is floored (1e-4), not infinite.
    assert psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2]) == pytest.approx(
        2 * 0.1 * math.log(0.5 / 0.4) + (0.2 - 1e-4) * math.log(0.2 / 1e-4)
    )


def test_the_model_profile_deciles_bin_the_lengths() -> None:
    reference = Profile.of(LABELS, 10, np.arange(10), 0, np.zeros(10, int), np.ones(10))
    assert length_edges(reference) == [0, 1, 2, 3, 4, 5, 6, 7, 8]


def _profile(lengths, unknown, preds) -> Profile:
    lengths, preds = np.asarray(lengths), np.asarray(preds)
    return Profile.of(LABELS, 10, lengths, unknown, preds, np.asarray(LABELS)[preds])


@pytest.mark.parametrize(
    ("current", "drifted", "phrase"),
    [
        # Same shape as the reference: no drift.
        (dict(lengths=[2, 4, 6, 8] * 200, unknown=80, preds=[0, 2, 4, 4] * 200), [], None),
        # Unknown share doubled (80 -> 160 of 4,000 tokens).
        (
            dict(lengths=[2, 4, 6, 8] * 200, unknown=160, preds=[0, 2, 4, 4] * 200),
            ["unknown-token share"],
            "(2.0x >= 2x)",
        ),
        # Everyone predicted 1: PSI of predicted ratings far above 0.2.
        (
            dict(lengths=[2, 4, 6, 8] * 200, unknown=80, preds=[0] * 800),
            ["predicted ratings"],
            "PSI of predicted ratings",
        ),
        # All texts long: PSI of token counts above 0.2.
        (
            dict(lengths=[8, 9, 10, 10] * 200, unknown=80, preds=[0, 2, 4, 4] * 200),
            ["token counts"],
            "PSI of token counts",
        ),
        # A quarter of the texts empty.
        (
            dict(lengths=[0, 4, 6, 8] * 200, unknown=60, preds=[0, 2, 4, 4] * 200),
            ["empty-text share"],
            "empty-text share 0.250 vs 0.000",
        ),
    ],
)
def test_drift_measures_and_line(current, drifted, phrase) -> None:
    reference = _profile([2, 4, 6, 8] * 100, 40, [0, 2, 4, 4] * 100)
    drift = compare(reference, _profile(**current), DriftThresholds())
    assert [m.name for m in drift.measures if m.drifted] == drifted
    assert drift.drifted == bool(drifted)
    if phrase:
        assert phrase in drift.line() and drift.line().startswith("input drifted")
    else:
        assert drift.line().startswith("no drift")


def test_too_few_rows_are_not_judged() -> None:
    reference = _profile([2, 4, 6, 8] * 100, 40, [0, 2, 4, 4] * 100)
    drift = compare(reference, _profile([9] * 499, 400, [0] * 499), DriftThresholds())
    assert not drift.judged and not drift.drifted and "not judged" in drift.line()
    lower = DriftThresholds().with_settings(["min_rows=100"])
    assert compare(reference, _profile([9] * 499, 400, [0] * 499), lower).drifted


@pytest.mark.parametrize(
    ("settings", "want"),
    [
        (["psi=0.3"], DriftThresholds(psi=0.3)),
        (["unknown-ratio=3", "min_rows=10"], DriftThresholds(unknown_ratio=3.0, min_rows=10)),
        (["empty_delta=0"], DriftThresholds(empty_delta=0.0)),
    ],
)
def test_thresholds_are_set_by_name(settings, want) -> None:
    assert DriftThresholds().with_settings(settings) == want


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("psi", "expected KEY=VALUE"),
        ("speed=2", "expected KEY=VALUE"),
        ("psi=high", "is not a number"),
        ("psi=-1", "must be a number >= 0"),
        ("min_rows=1.5", "is not a number"),
    ],
)
def test_bad_thresholds_are_one_line(setting, message) -> None:
    with pytest.raises(UserError, match=message):
        DriftThresholds().with_settings([setting])


@given(
    st.lists(st.tuples(st.integers(0, 14), st.integers(0, 4), st.integers(0, 3)), max_size=60),
    st.lists(st.integers(0, 60), max_size=4),
)
def test_chunks_merge_to_the_whole_in_any_cut(rows, cuts) -> None:
    lengths = np.array([r[0] for r in rows], dtype=np.int64)
    preds = np.array([r[1] for r in rows], dtype=np.int64)
    unknown = np.array([min(r[2], r[0]) for r in rows], dtype=np.int64)
    expected = preds.astype(np.float64) + 1.0
    whole = Profile.of(LABELS, 12, lengths, int(unknown.sum()), preds, expected)
    merged = Profile(LABELS, 12)
    bounds = [0, *sorted(min(c, len(rows)) for c in cuts), len(rows)]
    for lo, hi in itertools.pairwise(bounds):
        merged.add(
            Profile.of(LABELS, 12, lengths[lo:hi], int(unknown[lo:hi].sum()), preds[lo:hi],
                       expected[lo:hi])
        )  # fmt: skip
    assert merged.to_dict() == whole.to_dict()
    assert Profile.from_dict(whole.to_dict()).to_dict() == whole.to_dict()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 9}, "version 9"),
        ({"lengths": [1, 2]}, "do not fit"),
        ({"rows": 6}, "do not add up"),
        ({"labels": None}, "not a scorer profile"),
    ],
)
def test_a_damaged_profile_is_refused(change, message) -> None:
    data = {**small().to_dict(), **change}
    with pytest.raises(ValueError, match=message):
        Profile.from_dict(data)

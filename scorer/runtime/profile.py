"""What a set of scored rows looks like, and whether it drifted from what the model learned on.

A ``Profile`` is built from what scoring already has in hand: each row's token count (capped
at the model's ``max_len``, as the tokenizer returns it), its unknown tokens, its predicted
rating and its expected rating. It is a set of counts, so chunks scored in parallel merge
exactly and the same rows give the same profile in any order. Training saves one for its
validation rows beside the weights (``profile.json``); every ``scorer run`` writes one into
its manifest and ``compare`` says how far it moved.

Drift measures (thresholds in ``DriftThresholds``, changeable with ``--drift KEY=VALUE``):
- unknown-token share, as a ratio to the model's (``unknown_ratio``, default 2: doubled);
- empty-text share (no tokens), as a difference (``empty_delta``, default 0.05);
- population stability index (PSI) of the predicted ratings (one bin per label) and of the
  token counts (bins at the model profile's deciles): sum over bins of
  ``(a - e) * ln(a / e)`` with shares floored at ``PSI_FLOOR`` (``psi``, default 0.2, the
  usual "significant shift" mark);
- nothing is judged on fewer than ``min_rows`` rows (default 500): PSI is noise there.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scorer.errors import UserError

PROFILE_FILE = "profile.json"
PROFILE_VERSION = 1
PSI_FLOOR = 1e-4
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
DECILES = tuple(k / 10 for k in range(1, 10))


@dataclass
class Profile:
    """Counts over scored rows; ``lengths[k]`` rows had k tokens, ``predicted[i]`` rows were
    given ``labels[i]``."""

    labels: tuple[float, ...]
    max_len: int
    rows: int = 0
    empty: int = 0
    tokens: int = 0
    unknown: int = 0
    expected_sum: float = 0.0
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    predicted: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        if len(self.lengths) == 0:
            self.lengths = np.zeros(self.max_len + 1, np.int64)
        if len(self.predicted) == 0:
            self.predicted = np.zeros(len(self.labels), np.int64)

    @classmethod
    def of(
        cls,
        labels: Sequence[float],
        max_len: int,
        lengths: np.ndarray,
        unknown: int,
        pred_index: np.ndarray,
        expected: np.ndarray,
    ) -> Profile:
        """The profile of one batch of rows (``unknown``: their unknown tokens in all)."""
        lengths = np.minimum(np.asarray(lengths, dtype=np.int64), max_len)
        return cls(
            labels=tuple(float(v) for v in labels),
            max_len=max_len,
            rows=len(lengths),
            empty=int((lengths == 0).sum()),
            tokens=int(lengths.sum()),
            unknown=int(unknown),
            expected_sum=float(np.asarray(expected, dtype=np.float64).sum()),
            lengths=np.bincount(lengths, minlength=max_len + 1).astype(np.int64),
            predicted=np.bincount(
                np.asarray(pred_index, dtype=np.int64), minlength=len(labels)
            ).astype(np.int64),
        )

    def add(self, other: Profile) -> None:
        if (other.labels, other.max_len) != (self.labels, self.max_len):
            raise ValueError("profiles of different models cannot be merged")
        self.rows += other.rows
        self.empty += other.empty
        self.tokens += other.tokens
        self.unknown += other.unknown
        self.expected_sum += other.expected_sum
        self.lengths += other.lengths
        self.predicted += other.predicted

    @property
    def empty_share(self) -> float:
        return self.empty / self.rows if self.rows else 0.0

    @property
    def unknown_share(self) -> float:
        return self.unknown / self.tokens if self.tokens else 0.0

    @property
    def mean_expected(self) -> float:
        return self.expected_sum / self.rows if self.rows else 0.0

    def predicted_shares(self) -> np.ndarray:
        return self.predicted / max(self.rows, 1)

    def length_quantiles(self, qs: Sequence[float] = QUANTILES) -> list[int]:
        """The smallest token count at or below which each fraction of the rows lies."""
        if not self.rows:
            return [0 for _ in qs]
        cumulative = np.cumsum(self.lengths)
        return [int(np.searchsorted(cumulative, q * self.rows, side="left")) for q in qs]

    def length_shares(self, edges: Sequence[int]) -> np.ndarray:
        """Shares of rows in the bins ``[0, e1], (e1, e2], ..., (e_last, max_len]``."""
        cumulative = np.concatenate([[0], np.cumsum(self.lengths)])
        ends = [*[min(int(e), self.max_len) + 1 for e in edges], self.max_len + 1]
        counts = np.diff(np.concatenate([[0], cumulative[ends]]))
        return counts / max(self.rows, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PROFILE_VERSION,
            "labels": list(self.labels),
            "max_len": self.max_len,
            "rows": self.rows,
            "empty": self.empty,
            "tokens": self.tokens,
            "unknown": self.unknown,
            "expected_sum": self.expected_sum,
            "lengths": self.lengths.tolist(),
            "predicted": self.predicted.tolist(),
            # Derived, for people reading the file: never read back.
            "summary": {
                "empty_share": round(self.empty_share, 6),
                "unknown_share": round(self.unknown_share, 6),
                "length_quantiles": dict(
                    zip(
                        [f"p{round(q * 100)}" for q in QUANTILES],
                        self.length_quantiles(),
                        strict=True,
                    )
                ),
                "predicted_shares": {
                    f"{v:g}": round(float(s), 6)
                    for v, s in zip(self.labels, self.predicted_shares(), strict=True)
                },
                "mean_expected_rating": round(self.mean_expected, 6),
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        try:
            if data["version"] != PROFILE_VERSION:
                raise ValueError(
                    f"version {data['version']!r}, this scorer reads {PROFILE_VERSION}"
                )
            profile = cls(
                labels=tuple(float(v) for v in data["labels"]),
                max_len=int(data["max_len"]),
                rows=int(data["rows"]),
                empty=int(data["empty"]),
                tokens=int(data["tokens"]),
                unknown=int(data["unknown"]),
                expected_sum=float(data["expected_sum"]),
                lengths=np.asarray(data["lengths"], dtype=np.int64),
                predicted=np.asarray(data["predicted"], dtype=np.int64),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a scorer profile: {exc}") from None
        if len(profile.lengths) != profile.max_len + 1 or len(profile.predicted) != len(
            profile.labels
        ):
            raise ValueError("not a scorer profile: its counts do not fit its labels and max_len")
        if profile.lengths.sum() != profile.rows or profile.predicted.sum() != profile.rows:
            raise ValueError("not a scorer profile: its counts do not add up to its rows")
        return profile


def psi(expected: np.ndarray, actual: np.ndarray, floor: float = PSI_FLOOR) -> float:
    """Population stability index of ``actual`` shares against ``expected`` shares."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), floor)
    a = np.maximum(np.asarray(actual, dtype=np.float64), floor)
    return float(np.sum((a - e) * np.log(a / e)))


def length_edges(reference: Profile) -> list[int]:
    """The reference's token-count deciles, distinct: the bins of the length PSI."""
    return sorted(set(reference.length_quantiles(DECILES)))


@dataclass(frozen=True)
class DriftThresholds:
    unknown_ratio: float = 2.0
    empty_delta: float = 0.05
    psi: float = 0.2
    min_rows: int = 500

    def with_settings(self, settings: Sequence[str]) -> DriftThresholds:
        """These thresholds with ``KEY=VALUE`` settings (``--drift``) applied."""
        known = {f.name: f.type for f in dataclasses.fields(self)}
        changes: dict[str, float | int] = {}
        for setting in settings:
            key, sep, value = setting.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in known:
                raise UserError(
                    f"--drift {setting!r}: expected KEY=VALUE with KEY one of {', '.join(known)}"
                )
            try:
                number = int(value) if key == "min_rows" else float(value)
            except ValueError:
                raise UserError(f"--drift {setting!r}: {value!r} is not a number") from None
            if number < 0 or not math.isfinite(number):
                raise UserError(f"--drift {setting!r}: the value must be a number >= 0")
            changes[key] = number
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Measure:
    name: str
    model: float
    input: float
    statistic: float
    threshold: float
    drifted: bool

    def phrase(self) -> str:
        if self.name in ("predicted ratings", "token counts"):
            return f"PSI of {self.name} {self.statistic:.3f} > {self.threshold:g}"
        if self.name == "unknown-token share":
            return (
                f"{self.name} {self.input:.3f} vs {self.model:.3f} "
                f"({self.statistic:.1f}x >= {self.threshold:g}x)"
            )
        return f"{self.name} {self.input:.3f} vs {self.model:.3f} (+{self.statistic:.3f})"


@dataclass(frozen=True)
class Drift:
    measures: tuple[Measure, ...]
    rows: int
    judged: bool  # False: fewer rows than min_rows, nothing is judged

    @property
    def drifted(self) -> bool:
        return self.judged and any(m.drifted for m in self.measures)

    def line(self) -> str:
        if not self.judged:
            return f"drift not judged: {self.rows:,} rows scored, fewer than the minimum"
        found = [m.phrase() for m in self.measures if m.drifted]
        if not found:
            return f"no drift from the model's validation rows ({self.rows:,} rows)"
        return f"input drifted from the model's validation rows: {'; '.join(found)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "judged": self.judged,
            "drifted": self.drifted,
            "rows": self.rows,
            "measures": [dataclasses.asdict(m) for m in self.measures],
        }


def compare(reference: Profile, current: Profile, thresholds: DriftThresholds) -> Drift:
    """How ``current`` stands against the model's ``reference`` profile."""
    if (reference.labels, reference.max_len) != (current.labels, current.max_len):
        raise ValueError("the profiles are of different models")
    ref_unknown = max(reference.unknown_share, PSI_FLOOR)
    ratio = current.unknown_share / ref_unknown
    empty = current.empty_share - reference.empty_share
    edges = length_edges(reference)
    pred_psi = psi(reference.predicted_shares(), current.predicted_shares())
    len_psi = psi(reference.length_shares(edges), current.length_shares(edges))
    measures = (
        Measure(
            "unknown-token share",
            reference.unknown_share,
            current.unknown_share,
            ratio,
            thresholds.unknown_ratio,
            ratio >= thresholds.unknown_ratio,
        ),
        Measure(
            "empty-text share",
            reference.empty_share,
            current.empty_share,
            empty,
            thresholds.empty_delta,
            empty >= thresholds.empty_delta,
        ),
        Measure("predicted ratings", 0.0, 0.0, pred_psi, thresholds.psi, pred_psi > thresholds.psi),
        Measure("token counts", 0.0, 0.0, len_psi, thresholds.psi, len_psi > thresholds.psi),
    )
    return Drift(measures, current.rows, current.rows >= thresholds.min_rows)

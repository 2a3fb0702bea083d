"""Classification and ordinal-regression metrics for ratings (numpy only: no torch needed)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Metrics:
    """Quality of predicted ratings against true ones.

    ``rmse``/``mae`` score the predicted label (the argmax); ``rmse_expected`` scores the
    expected rating ``sum_k p_k * label_k``, which credits a model that says 4.4 for a 5.
    """

    n: int
    accuracy: float
    macro_f1: float
    rmse: float
    mae: float
    rmse_expected: float
    confusion: list[list[int]]
    labels: list[float]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def line(self) -> str:
        return (
            f"accuracy {self.accuracy:.4f}  macro-F1 {self.macro_f1:.4f}  RMSE {self.rmse:.4f}  "
            f"MAE {self.mae:.4f}  RMSE(expected) {self.rmse_expected:.4f}  (n={self.n:,})"
        )


def confusion_matrix(true: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """``[true, pred]`` counts over class indices ``0..k-1``."""
    return np.bincount(true * k + pred, minlength=k * k).reshape(k, k)


def macro_f1(confusion: np.ndarray) -> float:
    tp = np.diag(confusion).astype(float)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    denom = predicted + actual
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    present = actual > 0
    return float(f1[present].mean()) if present.any() else 0.0


def rating_metrics(
    true_index: np.ndarray,
    pred_index: np.ndarray,
    expected: np.ndarray,
    labels: tuple[float, ...] | list[float],
) -> Metrics:
    """Metrics from class indices (into ``labels``) and expected ratings."""
    values = np.asarray(labels, dtype=np.float64)
    true_index = np.asarray(true_index, dtype=np.int64)
    pred_index = np.asarray(pred_index, dtype=np.int64)
    n = len(true_index)
    if n == 0:
        raise ValueError("no rows to score")
    confusion = confusion_matrix(true_index, pred_index, len(values))
    error = values[pred_index] - values[true_index]
    expected_error = np.asarray(expected, dtype=np.float64) - values[true_index]
    return Metrics(
        n=n,
        accuracy=float(np.mean(pred_index == true_index)),
        macro_f1=macro_f1(confusion),
        rmse=float(np.sqrt(np.mean(error**2))),
        mae=float(np.mean(np.abs(error))),
        rmse_expected=float(np.sqrt(np.mean(expected_error**2))),
        confusion=confusion.tolist(),
        labels=[float(v) for v in values],
    )


def nearest_label(values: np.ndarray, labels: tuple[float, ...] | list[float]) -> np.ndarray:
    """Index of the label closest to each value (decoding a regression output)."""
    grid = np.asarray(labels, dtype=np.float64)
    return np.abs(np.asarray(values, dtype=np.float64)[:, None] - grid[None, :]).argmin(axis=1)

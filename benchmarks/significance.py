"""How sure a model-against-baseline comparison on one test split is: a paired bootstrap over
the test rows.

The seeds show how much training varies; the test rows are a sample too. On a few hundred
rows one confidently wrong review moves the expected-rating RMSE by a hundredth, so a gap of
that size says little on its own. Resampling the test rows (the same rows for the model and
the baseline, since both score the same reviews) gives an interval for the difference of the
model's seed-mean metric and the baseline's.

    python -m benchmarks.significance --data FILE... --name NAME... --split-file F...
        [--text-col COL] [--label-col COL] [--seeds 0 1 2]

reads the models `benchmarks.quality --data` trained (``runs/bench/NAME-seedN``), checks that
each still scores its recorded test metrics, refits the baseline and saves the intervals.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from scorer.train.checkpoint import load_model

if TYPE_CHECKING:
    from scorer.io.labelled import Labels

RESAMPLES = 2000
LEVEL = 0.95
CHUNK = 100  # resamples drawn at once: [CHUNK, rows] indices stay small at 50k test rows
# A seed mean of k/3 correct rows leaves about 1e-17 where model and baseline tie.
TIE = 1e-12


@dataclass(frozen=True)
class RowScores:
    """Per-row outcomes on the test rows: ``[S, N]`` for S models (seeds), N rows."""

    correct: np.ndarray  # bool: the argmax rating is the true one
    squared: np.ndarray  # squared error of the expected rating

    @classmethod
    def of(
        cls,
        true_index: np.ndarray,
        pred_index: Sequence[np.ndarray],
        expected: Sequence[np.ndarray],
        labels: Sequence[float],
    ) -> RowScores:
        values = np.asarray(labels, dtype=np.float64)
        truth = values[np.asarray(true_index, dtype=np.int64)]
        pred = np.atleast_2d(np.asarray(pred_index, dtype=np.int64))
        exp = np.atleast_2d(np.asarray(expected, dtype=np.float64))
        if pred.shape != exp.shape or pred.shape[1] != len(truth):
            raise ValueError(f"{pred.shape} predictions, {exp.shape} expected, {len(truth)} rows")
        return cls(pred == np.asarray(true_index)[None, :], (exp - truth[None, :]) ** 2)

    def accuracy(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Mean over models of each resample's accuracy (``rows``: [B, N] indices)."""
        return self.correct.mean(axis=0)[rows].mean(axis=-1)

    def rmse_expected(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Mean over models of each resample's expected-rating RMSE (the seeds' mean RMSE,
        as the results report it, not the RMSE of the mean prediction)."""
        per_model = [np.sqrt(squared[rows].mean(axis=-1)) for squared in self.squared]
        return np.mean(per_model, axis=0)


def resampled_rows(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """The bootstrap's row indices, ``[CHUNK, n]`` at a time, the same for a given seed."""
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, CHUNK):
        yield rng.integers(0, n, size=(min(CHUNK, resamples - start), n))


def paired_bootstrap(
    model: RowScores,
    baseline: RowScores,
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> dict[str, object]:
    """Model minus baseline, for accuracy (higher is better) and expected-rating RMSE (lower
    is better): the difference on all rows, its percentile interval over ``resamples``
    resamples of the rows, and the share of resamples where the model is at least as good."""
    n = model.correct.shape[1]
    if baseline.correct.shape[1] != n or n == 0:
        raise ValueError(f"model has {n} rows, baseline {baseline.correct.shape[1]}")
    metrics = ("accuracy", "rmse_expected")
    deltas: dict[str, list[np.ndarray]] = {metric: [] for metric in metrics}
    for rows in resampled_rows(n, resamples, seed):
        for metric in metrics:
            deltas[metric].append(getattr(model, metric)(rows) - getattr(baseline, metric)(rows))
    tail = (1.0 - level) / 2 * 100
    out: dict[str, object] = {"rows": n, "resamples": resamples, "level": level}
    for metric, higher_better in zip(metrics, (True, False), strict=True):
        m, b = float(getattr(model, metric)()), float(getattr(baseline, metric)())
        delta = np.concatenate(deltas[metric])
        low, high = np.percentile(delta, [tail, 100 - tail])
        better = delta >= -TIE if higher_better else delta <= TIE
        out[metric] = {
            "model": m,
            "baseline": b,
            "delta": m - b,
            "low": float(low),
            "high": float(high),
            "model_at_least_as_good": float(better.mean()),
        }
    return out


def model_row_scores(
    model_dirs: Sequence[Path], texts: pl.Series, true_index: np.ndarray, labels: Sequence[float]
) -> RowScores:
    """Each saved model's argmax and expected rating on ``texts``, with PyTorch in fp32 on
    the CPU: what `scorer train` scored its test rows with on a CPU (on a GPU, in its
    precision, near-ties may come out otherwise)."""
    import torch

    from scorer.nn.device import choose_runtime
    from scorer.runtime.model_dir import ModelDir
    from scorer.train.data import to_dataset
    from scorer.train.fit import Objective, predict

    runtime = choose_runtime("cpu")
    preds, expected = [], []
    for path in model_dirs:
        directory = ModelDir.open(Path(path))
        card = directory.card
        if tuple(card.labels) != tuple(labels):
            raise SystemExit(f"{path}: labels {card.labels}, the data's are {list(labels)}")
        data = to_dataset(directory.vocab(), texts, true_index, labels, card.tokenizer, runtime)
        values = torch.tensor(labels, dtype=torch.float32)
        model = load_model(directory)
        prediction = predict(model, data, labels, runtime, Objective(card.model, values))
        preds.append(prediction.pred_index)
        expected.append(prediction.expected)
    return RowScores.of(true_index, preds, expected, labels)


def dataset_significance(
    name: str,
    data: Path,
    text_columns: tuple[str, ...],
    label_column: str,
    split_file: Path,
    model_dirs: Sequence[Path],
) -> dict[str, object]:
    """The paired bootstrap of one dataset's trained models against the baseline (refitted)
    on its test rows; each model must still score the test metrics it recorded."""
    from scorer.io.labelled import read_labels, read_split_file, read_table, read_texts

    frame = read_table(data)
    texts = read_texts(frame, text_columns, data)
    split = read_split_file(split_file, len(texts))
    labels = read_labels(frame, label_column, data)
    return {
        "name": name,
        "seeds": len(model_dirs),
        **on_test_rows(texts, labels, split, model_dirs),
    }


def on_test_rows(
    texts: pl.Series,
    labels: Labels,
    split: np.ndarray,
    model_dirs: Sequence[Path],
    baseline_rows: dict | None = None,
    *,
    strict: bool = True,
) -> dict[str, object]:
    """The paired bootstrap on the test rows of ``split``. Each model must still score the
    test metrics its metrics.json recorded (the same model, data and split), or, not
    ``strict``, a warning says it does not (a model trained and scored on a GPU, reloaded
    here on the CPU); ``baseline_rows``: the baseline's test predictions, if already fitted."""
    from benchmarks.baseline import tfidf_logistic_regression

    test = np.flatnonzero(split == "test")
    truth = labels.index[test]
    model = model_row_scores(model_dirs, texts.gather(test), truth, labels.values)
    for i, path in enumerate(model_dirs):
        recorded = json.loads((Path(path) / "metrics.json").read_text())["test"]
        now = (float(model.correct[i].mean()), float(np.sqrt(model.squared[i].mean())))
        # Another thread count may flip a near-tie's argmax; another model, data or split
        # moves far more than one row.
        if (
            abs(now[0] - recorded["accuracy"]) > 1.0 / len(test)
            or abs(now[1] - recorded["rmse_expected"]) > 1e-3
        ):
            message = (
                f"{path}: test accuracy {now[0]:.4f}, expected-rating RMSE {now[1]:.4f} now; "
                f"recorded {recorded['accuracy']:.4f}, {recorded['rmse_expected']:.4f} "
                "(another model, data file or split?)"
            )
            if strict:
                raise SystemExit(message)
            print(f"warning: {message}", file=sys.stderr, flush=True)
    if baseline_rows is None:
        ratings = np.asarray(labels.values)[labels.index]
        fitted = tfidf_logistic_regression(
            texts.to_list(), ratings, split, labels.values, keep_test_rows=True
        )
        # The baseline refitted on training + validation rows, as the models are.
        baseline_rows = fitted["refit"]["test_rows"]
    base = RowScores.of(
        truth, [baseline_rows["pred_index"]], [baseline_rows["expected"]], labels.values
    )
    return paired_bootstrap(model, base)


def markdown(results: Sequence[dict]) -> str:
    lines = [
        "| dataset | test rows | accuracy: model − baseline (95% interval) | model ≥ baseline "
        "| expected-rating RMSE: model − baseline (95% interval) | model ≤ baseline |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        a, e = r["accuracy"], r["rmse_expected"]
        lines.append(
            f"| {r['name']} | {r['rows']:,} | {a['delta']:+.3f} ({a['low']:+.3f} to "
            f"{a['high']:+.3f}) | {a['model_at_least_as_good']:.0%} | {e['delta']:+.3f} "
            f"({e['low']:+.3f} to {e['high']:+.3f}) | {e['model_at_least_as_good']:.0%} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, object]:
    from benchmarks.common import machine, save
    from benchmarks.quality import WORK, dataset_options

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--name", nargs="+", required=True)
    parser.add_argument("--split-file", type=Path, nargs="*", default=None)
    parser.add_argument("--text-col", action="append", default=None)
    parser.add_argument("--label-col", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--save-as", default="quality-significance")
    args = parser.parse_args(argv)
    if len(args.name) != len(args.data):
        parser.error("one --name per --data file")
    results = []
    for i, data in enumerate(args.data):
        name, split, text, label = dataset_options(args, i, data)
        # No split file: the one benchmarks.quality drew for these models.
        split = split or WORK / "splits" / f"{name}.csv"
        dirs = [WORK / f"{name}-seed{seed}" for seed in args.seeds]
        results.append(dataset_significance(name, data, text, label, split, dirs))
        print(markdown(results[-1:]).splitlines()[-1], flush=True)
    table = markdown(results)
    print(table)
    path = save(args.save_as, {"machine": machine(), "seeds": args.seeds, "datasets": results})
    path.with_suffix(".md").write_text(table)
    print(f"saved {path}")
    return {"datasets": results}


if __name__ == "__main__":
    main()

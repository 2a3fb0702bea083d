"""fastText as a peer of the default model: the same rows, tuning and refit.

Supervised fastText with word bigrams: epoch and learning rate chosen on the validation rows
(by accuracy, as the TF-IDF baseline chooses its C), then trained again with them on the
training and validation rows together, as the default model is refitted; test rows scored
once. One thread and a fixed seed, so the same data gives the same model.

    python -m benchmarks.fasttext_peer score MODEL.bin INPUT.parquet OUT.parquet
        [--text-col Title --text-col "Review Text"]

scores a Parquet file end to end as a nightly job would (read, lowercase and split
punctuation, all five probabilities, the expected and predicted rating, write Parquet): the
speed benchmark (``benchmarks.students speed``) runs it pinned to one core.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from scorer.runtime.metrics import rating_metrics

EPOCHS = (5, 10, 20, 40)
RATES = (0.05, 0.1, 0.25, 0.5)
SEED = 0
PUNCTUATION = r"([!-/:-@\[-`{-~])"


def prepare(texts: pl.Series) -> pl.Series:
    """fastText's usual preprocessing: lowercase, punctuation split off as tokens, one line."""
    return (
        texts.fill_null("")
        .str.to_lowercase()
        .str.replace_all(PUNCTUATION, " $1 ")
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
    )


def _write(path: Path, texts: Sequence[str], index: np.ndarray) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for text, label in zip(texts, index, strict=True):
            handle.write(f"__label__{int(label)} {text}\n")
    return path


def _train(path: Path, epoch: int, lr: float):
    import fasttext

    return fasttext.train_supervised(
        input=str(path), epoch=epoch, lr=lr, wordNgrams=2, thread=1, seed=SEED, verbose=0
    )


def probabilities(model, texts: Sequence[str], classes: int) -> np.ndarray:
    """[n, classes] probabilities in class order (fastText returns each row's sorted; a class
    no training row had stays 0)."""
    labels, probs = model.predict(list(texts), k=len(model.labels))
    names = np.asarray(labels)
    index = np.char.replace(names.astype(str), "__label__", "").astype(np.int64)
    out = np.zeros((len(texts), classes), dtype=np.float32)
    np.put_along_axis(out, index, np.asarray(probs, dtype=np.float32), axis=1)
    return out


def fasttext_quality(
    texts: Sequence[str], label_index: np.ndarray, split: np.ndarray, labels: Sequence[float]
) -> dict[str, object]:
    """Tune on validation, refit on training + validation, score test once."""
    began = time.perf_counter()
    prepared = prepare(pl.Series(list(texts), dtype=pl.String)).to_list()
    rows = {name: np.flatnonzero(split == name) for name in ("train", "val", "test")}
    values = np.asarray(labels, dtype=np.float64)
    classes = len(values)

    def texts_of(part: np.ndarray) -> list[str]:
        return [prepared[i] for i in part]

    with tempfile.TemporaryDirectory() as tmp:
        train_file = _write(
            Path(tmp) / "train.txt", texts_of(rows["train"]), label_index[rows["train"]]
        )
        grid: dict[str, float | None] = {}
        val: dict[str, dict] = {}
        for epoch in EPOCHS:
            for lr in RATES:
                try:
                    model = _train(train_file, epoch, lr)
                except RuntimeError:  # fastText stops on a diverged (NaN) loss
                    grid[f"epoch={epoch},lr={lr}"] = None
                    continue
                probs = probabilities(model, texts_of(rows["val"]), classes)
                truth = label_index[rows["val"]]
                grid[f"epoch={epoch},lr={lr}"] = float((probs.argmax(1) == truth).mean())
                val[f"epoch={epoch},lr={lr}"] = rating_metrics(
                    truth, probs.argmax(1), probs @ values, values
                ).to_dict()
        # The best validation accuracy; a tie keeps the first (fewer epochs, lower rate).
        chosen = max((k for k, v in grid.items() if v is not None), key=lambda k: grid[k])
        epoch, lr = (float(v.split("=")[1]) for v in chosen.split(","))
        both = np.concatenate([rows["train"], rows["val"]])
        refit_file = _write(Path(tmp) / "refit.txt", texts_of(both), label_index[both])
        refit_lr = lr
        while True:
            try:
                model = _train(refit_file, int(epoch), refit_lr)
                break
            except RuntimeError:  # diverged on these rows: the next lower rate of the grid
                lower = [r for r in RATES if r < refit_lr]
                if not lower:
                    raise
                refit_lr = lower[-1]
        probs = probabilities(model, texts_of(rows["test"]), classes)
    test = rating_metrics(label_index[rows["test"]], probs.argmax(1), probs @ values, values)
    return {
        "chosen": {"epoch": int(epoch), "lr": lr, "val_accuracy": grid[chosen]},
        "refit_lr": refit_lr,
        "grid": grid,
        "val": val[chosen],  # the chosen setting trained on the training rows alone
        "test": test.to_dict(),
        "test_rows": {"pred_index": probs.argmax(1), "expected": probs @ values},
        "train_seconds": time.perf_counter() - began,
    }


def fasttext_quality_isolated(
    texts: Sequence[str], label_index: np.ndarray, split: np.ndarray, labels: Sequence[float]
) -> dict[str, object]:
    """``fasttext_quality`` in a fresh process: fastText's sums depend on the calling
    thread's floating-point mode, which libraries loaded before it (PyTorch, onnxruntime) may
    have changed, so the same data gave another model (and, at lr 0.5, NaN) after a training
    in the same process."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        args = (list(texts), np.asarray(label_index), np.asarray(split), list(labels))
        return pool.submit(fasttext_quality, *args).result()


def train_for_speed(
    texts: Sequence[str], label_index: np.ndarray, rows: np.ndarray, epoch: int, lr: float
):
    """A fastText model trained on ``rows`` (for the speed benchmark: its size matters, not
    its quality)."""
    prepared = prepare(pl.Series([texts[i] for i in rows], dtype=pl.String)).to_list()
    with tempfile.TemporaryDirectory() as tmp:
        return _train(_write(Path(tmp) / "train.txt", prepared, label_index[rows]), epoch, lr)


def score_file(
    model_path: Path, source: Path, out: Path, text_columns: Sequence[str], labels: Sequence[float]
) -> dict[str, float]:
    """Score a Parquet file end to end; returns the stage seconds."""
    import fasttext

    seconds = {}
    began = time.perf_counter()
    model = fasttext.load_model(str(model_path))
    frame = pl.read_parquet(source, columns=list(text_columns))
    seconds["read"] = time.perf_counter() - began
    mark = time.perf_counter()
    joined = frame.select(
        pl.concat_str([pl.col(c).fill_null("") for c in text_columns], separator=" ")
    ).to_series()
    lines = prepare(joined).to_list()
    seconds["prepare"] = time.perf_counter() - mark
    mark = time.perf_counter()
    values = np.asarray(labels, dtype=np.float32)
    probs = probabilities(model, lines, len(values))
    seconds["infer"] = time.perf_counter() - mark
    mark = time.perf_counter()
    table = pl.DataFrame(
        {
            "row": np.arange(len(lines), dtype=np.int64),
            "predicted_rating": values[probs.argmax(1)].astype(np.int64),
            "expected_rating": probs @ values,
            **{f"prob_{v:g}": probs[:, i] for i, v in enumerate(values)},
        }
    )
    table.write_parquet(out)
    seconds["write"] = time.perf_counter() - mark
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    score = sub.add_parser("score", help="score a Parquet file end to end")
    score.add_argument("model", type=Path)
    score.add_argument("input", type=Path)
    score.add_argument("out", type=Path)
    score.add_argument("--text-col", action="append", default=None)
    score.add_argument("--labels", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0, 5.0])
    args = parser.parse_args(argv)
    columns = args.text_col or ["Title", "Review Text"]
    seconds = score_file(args.model, args.input, args.out, columns, args.labels)
    print(json.dumps({"stage_seconds": seconds}))


if __name__ == "__main__":
    main()

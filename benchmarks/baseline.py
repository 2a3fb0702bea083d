"""The linear baseline every model is compared with: TF-IDF (word 1-2 grams) + logistic
regression, its regularization chosen on the validation rows (scikit-learn, `dev` extra).

It reads the raw text with scikit-learn's own tokenizer (lowercase, words of 2+ characters),
as a user writing the ten-line baseline would. The expected rating of its probabilities is
scored like the models' (``scorer.runtime.metrics``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scorer.runtime.metrics import rating_metrics

C_GRID = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def tfidf_logistic_regression(
    texts: Sequence[str],
    ratings: np.ndarray,
    split: np.ndarray,
    labels: Sequence[float],
    *,
    keep_test_rows: bool = False,
) -> dict[str, object]:
    """Fit on the train rows, choose C by validation accuracy (ties: the smaller C), and
    score the test rows once; then, as the default model is refitted, fit the vectorizer and
    the model again at that C on the training and validation rows (``refit``: its test
    metrics). ``keep_test_rows``: also return each test row's argmax and expected rating of
    both (arrays, under ``test_rows`` and ``refit["test_rows"]``) for paired comparisons."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    began = time.perf_counter()
    texts = np.asarray(texts, dtype=object)
    values = np.asarray(labels, dtype=np.float64)
    index = np.searchsorted(values, np.asarray(ratings, dtype=np.float64))
    rows = {name: np.flatnonzero(split == name) for name in ("train", "val", "test")}
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    features = {"train": vectorizer.fit_transform(texts[rows["train"]])}
    for name in ("val", "test"):
        features[name] = vectorizer.transform(texts[rows[name]])
    best = None
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=3000)
        model.fit(features["train"], index[rows["train"]])
        accuracy = float((model.predict(features["val"]) == index[rows["val"]]).mean())
        if best is None or accuracy > best[0]:
            best = (accuracy, c, model)
    assert best is not None
    _, c, model = best
    scored: dict[str, object] = {}
    for name in ("val", "test"):
        probs = np.zeros((len(rows[name]), len(values)))
        probs[:, model.classes_] = model.predict_proba(features[name])
        scored[name] = rating_metrics(
            index[rows[name]], probs.argmax(axis=1), probs @ values, values
        ).to_dict()
        if name == "test" and keep_test_rows:
            scored["test_rows"] = {"pred_index": probs.argmax(axis=1), "expected": probs @ values}
    both = np.concatenate([rows["train"], rows["val"]])
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    model = LogisticRegression(C=c, max_iter=3000).fit(
        vectorizer.fit_transform(texts[both]), index[both]
    )
    probs = np.zeros((len(rows["test"]), len(values)))
    probs[:, model.classes_] = model.predict_proba(vectorizer.transform(texts[rows["test"]]))
    refit: dict[str, object] = {
        "rows": len(both),
        "test": rating_metrics(
            index[rows["test"]], probs.argmax(axis=1), probs @ values, values
        ).to_dict(),
    }
    if keep_test_rows:
        refit["test_rows"] = {"pred_index": probs.argmax(axis=1), "expected": probs @ values}
    return {"C": c, **scored, "refit": refit, "train_seconds": time.perf_counter() - began}


def fit_pipeline(texts: Sequence[str], labels, split: np.ndarray, out: Path) -> Path:
    """The baseline at the C its tuning on validation chose, fitted on the training rows and
    pickled (vectorizer and model) for ``score``: the speed benchmark's TF-IDF + LR."""
    import pickle

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    values = np.asarray(labels.values, dtype=np.float64)
    ratings = values[labels.index]
    c = tfidf_logistic_regression(texts, ratings, split, labels.values)["C"]
    rows = np.flatnonzero(split == "train")
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    features = vectorizer.fit_transform(np.asarray(texts, dtype=object)[rows])
    model = LogisticRegression(C=c, max_iter=3000).fit(features, labels.index[rows])
    out.write_bytes(pickle.dumps({"vectorizer": vectorizer, "model": model, "labels": values}))
    return out


def score_file(pipeline: Path, source: Path, out: Path, text_columns: Sequence[str]) -> dict:
    """Score a Parquet file end to end with a pickled baseline (read, TF-IDF, all five
    probabilities, the expected and predicted rating, write Parquet); the stage seconds."""
    import pickle

    import polars as pl

    seconds = {}
    began = time.perf_counter()
    fitted = pickle.loads(pipeline.read_bytes())
    frame = pl.read_parquet(source, columns=list(text_columns))
    texts = frame.select(
        pl.concat_str([pl.col(c).fill_null("") for c in text_columns], separator=" ")
    ).to_series()
    seconds["read"] = time.perf_counter() - began
    mark = time.perf_counter()
    values = fitted["labels"]
    probs = np.zeros((len(texts), len(values)), dtype=np.float32)
    model = fitted["model"]
    probs[:, model.classes_] = model.predict_proba(fitted["vectorizer"].transform(texts))
    seconds["infer"] = time.perf_counter() - mark
    mark = time.perf_counter()
    pl.DataFrame(
        {
            "row": np.arange(len(texts), dtype=np.int64),
            "predicted_rating": values[probs.argmax(1)].astype(np.int64),
            "expected_rating": (probs @ values).astype(np.float32),
            **{f"prob_{v:g}": probs[:, i] for i, v in enumerate(values)},
        }
    ).write_parquet(out)
    seconds["write"] = time.perf_counter() - mark
    return seconds


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(description="score a Parquet file with a pickled baseline")
    sub = parser.add_subparsers(dest="command", required=True)
    score = sub.add_parser("score")
    score.add_argument("pipeline", type=Path)
    score.add_argument("input", type=Path)
    score.add_argument("out", type=Path)
    score.add_argument("--text-col", action="append", default=None)
    args = parser.parse_args(argv)
    columns = args.text_col or ["Title", "Review Text"]
    print(json.dumps({"stage_seconds": score_file(args.pipeline, args.input, args.out, columns)}))


if __name__ == "__main__":
    main()

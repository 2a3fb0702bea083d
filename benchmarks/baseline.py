"""The linear baseline every model is compared with: TF-IDF (word 1-2 grams) + logistic
regression, its regularization chosen on the validation rows (scikit-learn, `dev` extra).

It reads the raw text with scikit-learn's own tokenizer (lowercase, words of 2+ characters),
as a user writing the ten-line baseline would. The expected rating of its probabilities is
scored like the models' (``scorer.metrics``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from scorer.metrics import rating_metrics

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
    score the test rows once. ``keep_test_rows``: also return each test row's argmax and
    expected rating (arrays, under ``test_rows``) for a paired comparison."""
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
    return {"C": c, **scored, "train_seconds": time.perf_counter() - began}

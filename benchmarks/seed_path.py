"""The seed-style scoring path the product replaces (a baseline, not a product path).

pandas read, clean + spaCy tokenizer per review, encode to 70 with dict lookups, torch eager
in batches of 5000, pandas write. Prints a JSON line with its stage timings.

    python -m benchmarks.seed_path CORPUS MODEL_DIR OUT
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from scorer.train.checkpoint import load_model

BATCH = 5000


def main(argv: list[str] | None = None) -> None:
    corpus, model_dir, out = (Path(a) for a in (argv or sys.argv[1:]))
    import pandas as pd
    import spacy
    import torch

    from scorer.runtime.model_dir import ModelDir
    from scorer.text.encode import clean

    torch.set_num_threads(2)
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    directory = ModelDir.open(model_dir)
    model = load_model(directory)
    index = directory.vocab().index
    max_len = directory.card.tokenizer.max_len
    tokenizer = spacy.blank("en").tokenizer
    labels = torch.tensor(directory.card.labels)

    t = time.perf_counter()
    frame = pd.read_parquet(corpus)
    seconds["read"] = time.perf_counter() - t
    t = time.perf_counter()
    texts = (frame["Title"].fillna("") + " " + frame["Review Text"].fillna("")).tolist()
    ids = np.zeros((len(texts), max_len), dtype=np.int64)
    lengths = np.zeros(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        encoded = [index.get(tok.text, 1) for tok in tokenizer(clean(text))][:max_len]
        ids[i, : len(encoded)] = encoded
        lengths[i] = len(encoded)
    seconds["tokenize"] = time.perf_counter() - t
    t = time.perf_counter()
    expected = np.empty(len(texts), dtype=np.float32)
    predicted = np.empty(len(texts), dtype=np.int64)
    with torch.inference_mode():
        for start in range(0, len(texts), BATCH):
            logits = model(
                torch.from_numpy(ids[start : start + BATCH]),
                torch.from_numpy(lengths[start : start + BATCH]),
            )
            probs = torch.softmax(logits, dim=1)
            expected[start : start + BATCH] = (probs @ labels).numpy()
            predicted[start : start + BATCH] = labels[probs.argmax(1)].numpy()
    seconds["infer"] = time.perf_counter() - t
    t = time.perf_counter()
    pd.DataFrame(
        {
            "review_id": frame["review_id"],
            "predicted_rating": predicted,
            "expected_rating": expected,
        }
    ).to_parquet(out)
    seconds["write"] = time.perf_counter() - t
    total = time.perf_counter() - began
    print(json.dumps({"rows": len(texts), "seconds": total, "stage_seconds": seconds}))


if __name__ == "__main__":
    main()

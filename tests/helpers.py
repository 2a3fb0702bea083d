"""Small deterministic review data for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from scorer.train.checkpoint import write_model_dir

WORDS = {
    1: ["awful", "terrible", "returned", "cheap", "ripped"],
    2: ["disappointing", "poor", "itchy", "tight", "meh"],
    3: ["okay", "average", "fine", "decent", "alright"],
    4: ["nice", "good", "comfy", "pretty", "soft"],
    5: ["love", "perfect", "amazing", "gorgeous", "favorite"],
}
FILLER = ["the", "dress", "fabric", "fit", "color", "size", "it", "is", "and", "this", "top"]


def make_reviews(n: int = 400, seed: int = 0) -> pl.DataFrame:
    """Reviews whose words carry their rating, with filler, punctuation and nulls."""
    rng = np.random.default_rng(seed)
    ratings = rng.choice([1, 2, 3, 4, 5], size=n, p=[0.1, 0.15, 0.2, 0.25, 0.3])
    titles, bodies = [], []
    for r in ratings:
        words = list(rng.choice(FILLER, size=rng.integers(3, 12)))
        for _ in range(rng.integers(1, 4)):
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(WORDS[int(r)])))
        bodies.append(" ".join(words) + ("!" if rng.random() < 0.5 else "."))
        titles.append(None if rng.random() < 0.2 else str(rng.choice(WORDS[int(r)])).title())
    return pl.DataFrame(
        {"id": np.arange(n), "Title": titles, "Review Text": bodies, "Rating": ratings}
    )


def write_reviews(path: Path, n: int = 400, seed: int = 0) -> Path:
    frame = make_reviews(n, seed)
    {".csv": frame.write_csv, ".parquet": frame.write_parquet, ".ndjson": frame.write_ndjson}[
        path.suffix
    ](path)
    return path


def write_vectors(path: Path, dim: int = 8, seed: int = 0) -> Path:
    """A GloVe-format file covering some (not all) of the test vocabulary."""
    rng = np.random.default_rng(seed)
    words = [w for ws in WORDS.values() for w in ws] + FILLER[:6]
    lines = [f"{w} " + " ".join(f"{x:.5f}" for x in rng.normal(size=dim)) for w in words]
    path.write_text("\n".join(lines) + "\n")
    return path


def make_model_dir(path: Path, *, variant: str = "packed", seed: int = 0, **model_options):
    """A model directory with random weights (no training): for export and scoring tests."""
    import torch

    from scorer.nn.model import ReviewLSTM
    from scorer.runtime.config import ModelConfig, TokenizerConfig, TrainConfig
    from scorer.text.vocab import Vocab

    frame = make_reviews(200, seed)
    texts = frame["Title"].fill_null("") + " " + frame["Review Text"]
    marks = model_options.pop("marks", "")
    vocab = Vocab.build(texts, min_count=1, marks=marks)
    max_len = model_options.pop("max_len", 24)
    tail = model_options.pop("tail", 0)
    options = {"embedding_dim": 8, "hidden_dim": 8, **model_options}
    options.setdefault("packed", variant == "packed")
    config = ModelConfig(variant=variant, vocab_size=len(vocab), num_labels=5, **options)
    torch.manual_seed(seed)
    model = ReviewLSTM(config)
    with torch.no_grad():
        # Larger-than-init weights so outputs differ clearly across inputs.
        for parameter in model.parameters():
            parameter.mul_(3.0)
        model.embedding.weight[0] = 0.0
    history = [
        {
            "epoch": 1,
            "train_loss": 1.0,
            "val_loss": 1.0,
            "val_accuracy": 0.5,
            "val_rmse": 1.0,
            "val_rmse_expected": 1.0,
        }
    ]
    confusion = {
        "confusion": [[1] * 5] * 5,
        "labels": [1.0, 2.0, 3.0, 4.0, 5.0],
        "accuracy": 0.2,
        "rmse": 1.0,
        "rmse_expected": 1.0,
    }
    return write_model_dir(
        path,
        model=model.eval(),
        vocab=vocab,
        tokenizer=TokenizerConfig(max_len=max_len, tail=tail, marks=marks),
        train=TrainConfig(),
        labels=(1.0, 2.0, 3.0, 4.0, 5.0),
        text_columns=("Title", "Review Text"),
        metrics={"history": history, "best_epoch": 1, "val": confusion, "test": confusion},
        overwrite=False,
    )


def word_sets(train: int, val: int, *, max_len: int = 8, seed: int = 3):
    """Short made-up reviews of a few words, rated 1-3 by their length, encoded on the CPU:
    (vocabulary, {"train", "val"} datasets, rating values, runtime)."""
    from scorer.nn.device import choose_runtime
    from scorer.runtime.config import TokenizerConfig
    from scorer.text.vocab import Vocab
    from scorer.train.data import to_dataset

    rng = np.random.default_rng(seed)
    words = ["good", "bad", "fine", "great", "awful", "ok", "love", "hate"]
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 7))) for _ in range(train + val)]
    label_index = np.array([len(t) % 3 for t in texts])
    values = (1.0, 2.0, 3.0)
    vocab = Vocab.build(texts, min_count=1)
    runtime = choose_runtime("cpu", "fp32")
    tok = TokenizerConfig(max_len=max_len)
    sets = {
        name: to_dataset(vocab, texts[part], label_index[part], values, tok, runtime)
        for name, part in (("train", slice(0, train)), ("val", slice(train, train + val)))
    }
    return vocab, sets, values, runtime

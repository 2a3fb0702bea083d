"""The tokenizer settled on the training rows: lengths fitted, punctuation marks chosen on
validation, vocabulary built, rows encoded.

Keeping ``!`` and ``?`` as words (``TokenizerConfig.marks``) helps some review sets and hurts
others (README, *Model quality*: the reference reviews and ``yelp_10k`` gained on validation,
the short reviews of ``flipkart_reviews`` and ``amazon_alexa`` lost). Training the LSTM with
each tokenization would double the training time, so with ``marks_choice`` the blend's linear
model (``scorer.train.blend``) is fitted with each one at a single C on the training rows and judged
on the validation rows by the training objective: seconds where the LSTM takes minutes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import polars as pl

from scorer.io.labelled import Labels
from scorer.nn.device import Runtime
from scorer.runtime.config import TokenizerConfig
from scorer.text.vocab import Vocab
from scorer.train.blend import linear_fits
from scorer.train.data import Dataset, to_dataset
from scorer.train.fit import Objective
from scorer.train.presets import fit_lengths

# The C the blend chose with either tokenization on all five datasets of README "Model
# quality": one fit per tokenization, not the blend's grid of three.
MARKS_C = 4.0


@dataclass(frozen=True)
class Tokenized:
    tokenizer: TokenizerConfig
    vocab: Vocab
    sets: dict[str, Dataset]


def tokenized(
    tokenizer: TokenizerConfig,
    texts: pl.Series,
    rows: Mapping[str, np.ndarray],
    labels: Labels,
    runtime: Runtime,
) -> Tokenized:
    """``tokenizer`` fitted to the training rows' lengths, the vocabulary of those rows, and
    each split of ``rows`` that has rows, encoded."""
    train_texts = texts.gather(rows["train"])
    tok = fit_lengths(tokenizer, train_texts)
    vocab = Vocab.build(
        train_texts, min_count=tok.min_count, keep_whitespace=tok.keep_whitespace, marks=tok.marks
    )
    return Tokenized(tok, vocab, _encoded(vocab, tok, texts, rows, labels, runtime))


def _encoded(
    vocab: Vocab,
    tok: TokenizerConfig,
    texts: pl.Series,
    rows: Mapping[str, np.ndarray],
    labels: Labels,
    runtime: Runtime,
) -> dict[str, Dataset]:
    """Each split of ``rows`` that has rows, encoded."""
    return {
        name: to_dataset(vocab, texts.gather(r), labels.index[r], labels.values, tok, runtime)
        for name, r in rows.items()
        if len(r)
    }


def settle_tokenizer(
    tokenizer: TokenizerConfig,
    texts: pl.Series,
    rows: Mapping[str, np.ndarray],
    labels: Labels,
    runtime: Runtime,
    judge: Objective,
) -> tuple[Tokenized, dict[str, Any] | None]:
    """The tokenizer, vocabulary and encoded splits training uses, and what metrics.json
    records of the marks' choice (None: no choice made).

    With ``marks_choice`` (classification only: the linear model is a classifier), the
    tokenizer's ``marks`` and ``marks_choice`` each tokenize the rows, the linear model is
    fitted on the training rows with each, and the lower validation loss under ``judge``
    keeps its marks (on a tie, ``marks``). The config saved holds the marks kept.
    """
    if not tokenizer.marks_choice or judge.config.regression:
        return tokenized(replace(tokenizer, marks_choice=""), texts, rows, labels, runtime), None
    began = time.perf_counter()
    fit_rows = {name: rows[name] for name in ("train", "val")}
    trials = []
    for marks in (tokenizer.marks, tokenizer.marks_choice):
        candidate = replace(tokenizer, marks=marks, marks_choice="")
        encoded = tokenized(candidate, texts, fit_rows, labels, runtime)
        loss = linear_fits(encoded.sets, encoded.vocab.tokens, judge, grid=(MARKS_C,)).best()[0]
        trials.append((loss, marks, encoded))
    loss, marks, kept = min(trials, key=lambda t: t[0])
    rest = {name: r for name, r in rows.items() if name not in fit_rows}
    sets = {**kept.sets, **_encoded(kept.vocab, kept.tokenizer, texts, rest, labels, runtime)}
    record = {
        "tried": {m: trial_loss for trial_loss, m, _ in trials},
        "kept": marks,
        "c": MARKS_C,
        "seconds": time.perf_counter() - began,
    }
    print(
        f"marks on validation (linear model, C {MARKS_C:g}): "
        + ", ".join(f"{_name(m)} loss {trial_loss:.4f}" for trial_loss, m, _ in trials)
        + f"; kept {_name(marks)}",
        file=sys.stderr,
        flush=True,
    )
    return Tokenized(kept.tokenizer, kept.vocab, sets), record


def _name(marks: str) -> str:
    return repr(marks) if marks else "none"

"""The punctuation marks chosen on validation before training (scorer.train.marks_choice)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from scorer.io.labelled import Labels
from scorer.nn.device import choose_runtime
from scorer.runtime.config import ModelConfig, TokenizerConfig
from scorer.train.fit import Objective
from scorer.train.job import TrainJob, train_model
from scorer.train.marks_choice import settle_tokenizer
from scorer.train.presets import resolve
from tests.helpers import write_reviews

WORDS = {0: ["poor", "torn", "awful"], 1: ["lovely", "great", "soft"]}
FILLER = ["the", "dress", "fits", "with", "a", "color", "it", "was"]


def _reviews(kind: str, n: int = 400, seed: int = 0) -> tuple[pl.Series, Labels]:
    """Two-class reviews. ``signal``: the same words either way, the label in the final mark
    alone; ``noise``: the label in the words, the mark drawn at random; ``absent``: the label
    in the words, no marks at all."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, size=n)
    texts = []
    for y in label:
        words = list(rng.choice(FILLER, size=rng.integers(3, 8)))
        if kind == "signal":
            texts.append(" ".join(words) + ("!" if y else "?"))
            continue
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(WORDS[int(y)])))
        mark = "" if kind == "absent" else str(rng.choice(["!", "?", "."]))
        texts.append(" ".join(words) + mark)
    return pl.Series("text", texts), Labels(label.astype(np.int64), (1.0, 5.0))


def _rows(n: int) -> dict[str, np.ndarray]:
    return {
        "train": np.arange(0, n - 100),
        "val": np.arange(n - 100, n - 50),
        "test": np.arange(n - 50, n),
    }


def _judge(regression: bool = False) -> Objective:
    config = ModelConfig("regression" if regression else "packed", vocab_size=1, num_labels=2)
    return Objective(config, torch.tensor([1.0, 5.0]), expected_weight=1.0)


def _settle(kind: str, tokenizer: TokenizerConfig, regression: bool = False):
    texts, labels = _reviews(kind)
    runtime = choose_runtime("cpu", "fp32")
    return settle_tokenizer(
        tokenizer, texts, _rows(len(texts)), labels, runtime, _judge(regression)
    )


@pytest.mark.parametrize(
    ("kind", "marks", "choice", "kept"),
    [
        ("signal", "", "!?", "!?"),  # only the marks tell the classes apart
        # "!" alone tells them apart too; "?" as a second feature lets the regularized fit
        # reach a lower loss
        ("signal", "!", "!?", "!?"),
        ("noise", "", "!?", ""),  # marks at random: extra features only fit noise
        ("absent", "", "!?", ""),  # no marks: the same tokens, a tie keeps the tokenizer's own
    ],
)
def test_the_marks_the_linear_model_prefers_on_validation_are_kept(kind, marks, choice, kept):
    prepared, record = _settle(
        kind, TokenizerConfig(max_len=16, min_count=1, marks=marks, marks_choice=choice)
    )
    assert record["kept"] == kept == prepared.tokenizer.marks
    assert sorted(record["tried"]) == sorted({marks, choice})
    assert record["kept"] == min(record["tried"], key=lambda m: (record["tried"][m], m != marks))
    assert prepared.tokenizer.marks_choice == ""  # the saved config holds the choice made
    if kind == "absent":
        assert record["tried"][marks] == record["tried"][choice]
    # Every split, test included, is encoded with the vocabulary of the marks kept.
    assert sorted(prepared.sets) == ["test", "train", "val"]
    assert ("!" in prepared.vocab.index) == ("!" in kept)
    test_ids = prepared.sets["test"].ids.numpy()
    assert (test_ids == prepared.vocab.index.get("!", -1)).any() == ("!" in kept)


def test_the_signal_case_separates_by_a_wide_margin():
    _, record = _settle("signal", TokenizerConfig(max_len=16, min_count=1, marks_choice="!?"))
    # Without marks the classes read the same: chance, cross-entropy ln 2 plus the expected
    # rating's squared error 2 ** 2 (3 for a 1 or a 5); with them, nearly separable.
    assert record["tried"][""] == pytest.approx(np.log(2) + 4.0, abs=0.3)
    assert record["tried"]["!?"] < 0.2


@pytest.mark.parametrize(("choice", "regression"), [("", False), ("!?", True)])
def test_no_choice_without_a_candidate_or_for_regression(choice, regression):
    tokenizer = TokenizerConfig(max_len=16, min_count=1, marks="?", marks_choice=choice)
    prepared, record = _settle("signal", tokenizer, regression=regression)
    assert record is None
    assert prepared.tokenizer == TokenizerConfig(max_len=16, min_count=1, marks="?")
    assert "?" in prepared.vocab.index and "!" not in prepared.vocab.index


@pytest.mark.parametrize(
    ("options", "config_file", "reference", "marks", "choice"),
    [
        ({}, None, False, "", "!?"),  # the default: chosen on validation
        ({"marks": "!?"}, None, False, "!?", ""),  # set by the user: used as set
        ({"marks": ""}, None, False, "", ""),  # '' set: none, no choice either
        ({"marks": "", "marks_choice": "?"}, None, False, "", "?"),
        ({}, {"marks": "!"}, False, "!", ""),  # set in --config
        ({"marks_choice": ""}, None, False, "", ""),
        ({}, None, True, "", ""),  # the reference recipe cleans punctuation away
    ],
)
def test_marks_given_by_the_user_turn_the_choice_off(
    tmp_path, options, config_file, reference, marks, choice
):
    path = None
    if config_file is not None:
        path = tmp_path / "config.json"
        path.write_text(json.dumps(config_file))
    _, tokenizer, _ = resolve(options, reference=reference, config_file=path)
    assert (tokenizer.marks, tokenizer.marks_choice) == (marks, choice)


def test_training_records_the_choice_and_saves_the_marks_kept(tmp_path):
    data = write_reviews(tmp_path / "reviews.parquet", n=300)
    model, tok, train = resolve(
        {"device": "cpu", "search_budget": 0, "embedding_dim": 8, "hidden_dim": 8, "max_len": 24,
         "epochs": 1, "batch_size": 32, "threads": 1, "blend": False, "teacher_hidden_dim": 0}
    )  # fmt: skip
    assert tok.marks_choice == "!?"
    job = TrainJob(data, tmp_path / "model", model, tok, train, ("Title", "Review Text"))
    result = train_model(job)
    metrics = json.loads((result.model_dir.path / "metrics.json").read_text())
    record = metrics["marks"]
    assert sorted(record["tried"]) == ["", "!?"]
    kept = min(record["tried"], key=lambda m: (record["tried"][m], m != ""))
    assert record["kept"] == kept == result.model_dir.card.tokenizer.marks
    assert result.model_dir.card.tokenizer.marks_choice == ""
    assert ("!" in result.model_dir.vocab().index) == (kept == "!?")

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scorer.errors import UserError
from scorer.text.encode import tokenize
from scorer.text.vocab import PAD, UNK, Vocab

TEXTS = ["Great dress, great fit!", "great  price", "Don't buy. Bad fit", "", None, "fit fit fit"]


def reference_encode(vocab: Vocab, text: str | None, max_len: int) -> tuple[list[int], int]:
    """The recipe's encode_sentence, one token at a time (the slow definition)."""
    ids = [vocab.index.get(t, 1) for t in tokenize([text])[0]]
    length = min(len(ids), max_len)
    return (ids[:length] + [0] * (max_len - length)), length


def test_build_orders_by_count_then_text_and_respects_min_count() -> None:
    vocab = Vocab.build(TEXTS, min_count=2)
    assert vocab.tokens[:2] == (PAD, UNK)
    # fit x5, then " " and great x3 each (ties broken by text).
    assert vocab.tokens[2:] == ("fit", " ", "great")
    assert Vocab.build(TEXTS, min_count=1).tokens[2:6] == ("fit", " ", "great", "bad")
    assert Vocab.build(list(reversed(TEXTS)), min_count=2) == vocab


def test_drop_whitespace_vocab_has_no_space_tokens() -> None:
    assert " " not in Vocab.build(TEXTS, min_count=2, keep_whitespace=False).tokens


@pytest.mark.parametrize("max_len", [1, 3, 4, 70])
@pytest.mark.parametrize("keep_whitespace", [True, False])
def test_encode_matches_the_per_token_definition(max_len: int, keep_whitespace: bool) -> None:
    vocab = Vocab.build(TEXTS, min_count=1, keep_whitespace=keep_whitespace)
    texts = [*TEXTS, "unseen words here great", "dont cannot"]
    enc = vocab.encode(texts, max_len=max_len, keep_whitespace=True)
    assert enc.ids.shape == (len(texts), max_len) and enc.ids.dtype == np.int32
    for i, text in enumerate(texts):
        ids, length = reference_encode(vocab, text, max_len)
        assert enc.ids[i].tolist() == ids
        assert enc.lengths[i] == length


def test_save_load_roundtrip_and_tamper_detection(tmp_path) -> None:
    vocab = Vocab.build(TEXTS, min_count=1)
    path = tmp_path / "vocab.json"
    vocab.save(path)
    assert Vocab.load(path, expected_sha256=vocab.sha256) == vocab
    with pytest.raises(UserError, match="does not match the model's sha256"):
        Vocab.load(path, expected_sha256="0" * 64)
    doc = json.loads(path.read_text())
    doc["tokens"][2], doc["tokens"][3] = doc["tokens"][3], doc["tokens"][2]
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="does not match its own sha256"):
        Vocab.load(path)


@pytest.mark.parametrize("bad", [(), ("a", "b"), (PAD, UNK, "x", "x")])
def test_malformed_vocabularies_are_refused(bad: tuple[str, ...]) -> None:
    with pytest.raises(UserError):
        Vocab(bad)


def test_text_and_vocab_import_neither_torch_nor_spacy() -> None:
    code = (
        "import sys, scorer.text.encode, scorer.text.vocab, scorer.io.labelled, scorer.cli;"
        "bad = {'torch', 'spacy'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("max_len", [1, 3, 5, 70])
@pytest.mark.parametrize("tail", [0, 1, 2, 3])
def test_head_and_tail_keep_the_first_and_last_tokens(max_len: int, tail: int) -> None:
    vocab = Vocab.build(TEXTS, min_count=1)
    texts = [*TEXTS, "unseen words here great " * 9, "dont cannot fit great bad fit"]
    if tail > max_len:  # a tail longer than the whole is a caller's bug, refused
        with pytest.raises(ValueError, match="tail must be in"):
            vocab.encode(texts, max_len=max_len, keep_whitespace=True, tail=tail)
        return
    enc = vocab.encode(texts, max_len=max_len, keep_whitespace=True, tail=tail)
    for i, text in enumerate(texts):
        ids = [vocab.index.get(t, 1) for t in tokenize([text])[0]]
        if len(ids) > max_len:
            ids = ids[: max_len - tail] + (ids[len(ids) - tail :] if tail else [])
        assert enc.ids[i, : len(ids)].tolist() == ids and enc.lengths[i] == len(ids)
        assert not enc.ids[i, len(ids) :].any()


@settings(max_examples=200)
@given(
    st.lists(st.text(alphabet="ab cd\x0b!?", max_size=60), min_size=1, max_size=20),
    st.integers(1, 12),
    st.sampled_from(["", "!", "!?"]),
    st.data(),
)
def test_head_and_tail_on_generated_texts(texts, max_len, marks, data) -> None:
    tail = data.draw(st.integers(0, max_len))
    vocab = Vocab.build(["a b cd c d ab", " a", "a  b", "a! b?"], min_count=1, marks=marks)
    for keep_whitespace in (True, False):
        enc = vocab.encode(
            texts, max_len=max_len, keep_whitespace=keep_whitespace, tail=tail, marks=marks
        )
        tokenized = tokenize(texts, keep_whitespace=keep_whitespace, marks=marks)
        for i, tokens in enumerate(tokenized):
            ids = [vocab.index.get(t, 1) for t in tokens]
            if len(ids) > max_len:
                ids = ids[: max_len - tail] + (ids[len(ids) - tail :] if tail else [])
            assert enc.ids[i, : enc.lengths[i]].tolist() == ids

from __future__ import annotations

import os
import re
import string
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scorer.io.labelled import read_table, read_texts
from scorer.text.encode import clean, tokenize
from scorer.text.specials import load_specials, specials_from_spacy

# The dev extra has spaCy, the reference these tests hold the tokenizer to; a host without
# it (the CUDA device check's) skips them rather than failing to collect.
spacy = pytest.importorskip("spacy", reason="spaCy (the dev extra) is the tokenizer's reference")
SPACY = spacy.blank("en").tokenizer


def spacy_tokens(text: str | None) -> list[str]:
    return [t.text for t in SPACY(clean(text or ""))]


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("Hello, World!", "hello  world "),
        ("caf\u00e9\u00e9 ok", "caf  ok"),
        ("emoji \U0001f600\U0001f600 x", "emoji   x"),
        ("a\r\nb\tc", "a  b c"),
        ("size 12-14", "size      "),
        ("", ""),
        ("\x0bkeep\x1c", "\x0bkeep\x1c"),
    ],
)
def test_clean_table(raw: str, cleaned: str) -> None:
    assert clean(raw) == cleaned


@pytest.mark.parametrize(
    ("raw", "tokens"),
    [
        ("a  b", ["a", " ", "b"]),
        ("  a", ["  ", "a"]),
        ("a ", ["a"]),
        ("a   ", ["a", "  "]),
        (" ", [" "]),
        ("", []),
        (None, []),
        ("I don't know, I cannot!", ["i", "don", "t", "know", " ", "i", "can", "not"]),
        ("dont cant", ["do", "nt", "ca", "nt"]),
        ("Gonna LOVE it", ["gon", "na", "love", "it"]),
        ("a\x0b b", ["a", "\x0b ", "b"]),
        ("a \x0c\x1f b", ["a", "\x0c\x1f ", "b"]),
        ("x\x01y", ["x\x01y"]),
        ("\U0001f600", [" "]),
    ],
)
def test_tokenize_table(raw: str | None, tokens: list[str]) -> None:
    assert tokenize([raw]) == [tokens]
    assert spacy_tokens(raw) == tokens


@pytest.mark.parametrize(
    ("raw", "marks", "tokens"),
    [
        ("Great!! ok", "!?", ["great", "!", "!", "ok"]),
        ("what?!", "!?", ["what", "?", "!"]),
        ("!start", "!", ["!", "start"]),
        ("a!b", "!", ["a", "!", "b"]),  # spaCy keeps "a!b" whole; a mark always stands alone
        ("love it! ", "!", ["love", "it", "!"]),  # a mark absorbs one space, as a word does
        ("x  ! y", "!", ["x", " ", "!", "y"]),
        ("Dont! do it", "!", ["do", "nt", "!", "do", "it"]),
        ("5 stars!", "!?", ["  ", "stars", "!"]),
        ("is it?\n!", "?", ["is", "it", "?", " "]),  # "!" is not kept here: a space
        ("is it?\n!", "!?", ["is", "it", "?", "!"]),  # "\n" cleans to " ", which "?" absorbs
        ("caf\u00e9!", "!", ["caf", "!"]),  # the non-ASCII run: one space, absorbed
        ("Hello, World!", "", ["hello", " ", "world"]),  # no marks: the reference cleaning
    ],
)
def test_kept_marks_are_tokens_of_their_own(raw: str, marks: str, tokens: list[str]) -> None:
    assert tokenize([raw], marks=marks) == [tokens]
    assert tokenize([raw], marks=marks, keep_whitespace=False) == [
        [t for t in tokens if not t.isspace()]
    ]


def test_drop_whitespace_keeps_only_words() -> None:
    texts = ["a  b", "  dont ", "\x0b\x0c", "", None]
    assert tokenize(texts, keep_whitespace=False) == [["a", "b"], ["do", "nt"], [], [], []]


# Every kind of character cleaning and spaCy treat specially, plus letters and specials.
_CHARS = st.sampled_from(
    list(string.ascii_letters[:8] + "XYZ")
    + list(string.punctuation[:12] + string.digits[:3])
    + [" ", " ", " ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x00", "\x01", "\x7f"]
    + ["\u00e9", "\u00a0", "\u2014", "\U0001f600", "\u0085", "\u3000"]
)
_WORDS = st.sampled_from(["dont", "Cannot", "gonna", "im", "its", "cant've", "y'all", "lets"])
_TEXT = st.lists(st.one_of(_CHARS, _WORDS, _CHARS), max_size=25).map("".join)
_MARKS = st.sampled_from(["!", "?", "!!", "?!", "! ", " ?"])
_TEXT_WITH_MARKS = st.lists(st.one_of(_CHARS, _WORDS, _MARKS), max_size=25).map("".join)


def spacy_tokens_with_marks(text: str | None, marks: str) -> list[str]:
    """spaCy splits a mark off a word's start or end; one between letters stays inside the
    word (``a!b``), which the kernel splits too: such words go through spaCy again in pieces."""
    out = []
    for token in (t.text for t in SPACY(clean(text or "", marks))):
        if len(token) == 1 or not any(m in token for m in marks):
            out.append(token)
            continue
        for piece in re.split(f"([{re.escape(marks)}])", token):
            out.extend([piece] if piece in marks else [t.text for t in SPACY(piece)])
    return [t for t in out if t]


@settings(max_examples=200)
@given(
    st.lists(st.one_of(_TEXT_WITH_MARKS, st.none()), min_size=10, max_size=30),
    st.sampled_from(["!", "?", "!?", "?!"]),
)
def test_kept_marks_match_spacy_split_at_every_mark(texts: list[str | None], marks: str) -> None:
    assert tokenize(texts, marks=marks) == [spacy_tokens_with_marks(t, marks) for t in texts]


@settings(max_examples=400)
@given(st.lists(st.one_of(_TEXT, st.none(), st.text(max_size=30)), min_size=25, max_size=40))
def test_tokenize_matches_spacy_on_generated_batches(texts: list[str | None]) -> None:
    # 400 batches of >= 25 strings: over 10,000 generated strings per run.
    assert tokenize(texts) == [spacy_tokens(t) for t in texts]


def test_huge_review_and_odd_input() -> None:
    big = ("Lovely dress, don't miss it! " * 180_000)[:5_000_000]
    odd = ["\U0001f600" * 10, "\x00\x01\x02", "\u200b\ufeff", "", None]
    tokens = tokenize([big, *odd])
    assert tokens[0][:5] == ["lovely", "dress", " ", "don", "t"]
    assert len(tokens[0]) > 1_000_000
    assert tokens[1:] == [spacy_tokens(t) for t in odd]
    assert tokens[-2:] == [[], []]


def test_shipped_special_cases_match_installed_spacy() -> None:
    table, _ = specials_from_spacy()
    assert {k: tuple(v) for k, v in table.items()} == load_specials()
    assert len(table) > 100


@pytest.mark.slow
def test_parity_on_every_reference_review(reference_data) -> None:
    reviews, _ = reference_data
    texts = read_texts(read_table(reviews), ["Title", "Review Text"], reviews).to_list()
    assert len(texts) == 23_486
    mismatched = [i for i, toks in enumerate(tokenize(texts)) if toks != spacy_tokens(texts[i])]
    assert mismatched == []


_BOUNDS = """
from scorer.text.encode import tokenize
from scorer.text.vocab import Vocab
texts = ["a \\x0b\\x0b", "dont\\x0c", "  ", "\\x0b", "x" * 300, "a b \\x1f \\x1c", "!", "a!?", "! "]
for marks in ("", "!?"):
    vocab = Vocab.build(texts, min_count=1, marks=marks)
    for keep in (True, False):
        tokenize(texts, keep_whitespace=keep, marks=marks)
        tokenize(texts[::-1], keep_whitespace=keep, marks=marks)
        for tail in (0, 1, 2):
            vocab.encode(texts, max_len=2, keep_whitespace=keep, tail=tail, marks=marks)
"""


def test_the_kernels_stay_within_their_arrays(tmp_path) -> None:
    """The compiled kernels with numba's bounds checks on (an out-of-bounds write raises
    instead of silently corrupting memory), on edge cases: trailing whitespace that is
    dropped, whitespace-only rows, a word longer than any key, ring-buffer tails."""
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", _BOUNDS], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

"""Text cleaning and a vectorized tokenizer that reproduces spaCy's English tokenizer.

The reference recipe cleans a review (``clean``) and tokenizes it with
``spacy.blank("en").tokenizer``. On cleaned text (lowercase ASCII letters, whitespace and
control characters only) spaCy's behaviour reduces to three rules, which this module applies
to a whole batch with polars string kernels and numpy, never a Python loop per token:

1. Text is cut into alternating runs of whitespace (``str.isspace``) and non-whitespace.
2. A single ``" "`` directly after a word is absorbed by that word; any other whitespace run
   becomes one token (so ``"a  b"`` -> ``a``, ``" "``, ``b``, and leading spaces are kept).
3. A word that is one of spaCy's special cases is split (``dont`` -> ``do``, ``nt``).

Texts whose only whitespace is ``" "`` (nearly all) take the fast path: ``str.split(" ")``,
where each empty piece stands for one space of a whitespace token. Texts holding rarer
whitespace (vertical tab, form feed, ``\\x1c``-``\\x1f``) take a regex path. Both feed the
same numpy assembly step, whose output is shared by ``tokenize`` and vocabulary encoding.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from scorer.specials import load_specials

STRIPPED_CHARS = string.punctuation + string.digits + "\r\t\n"
# Whitespace that survives cleaning: what str.isspace() accepts among ASCII, minus \r\t\n.
WHITESPACE = "".join(c for c in map(chr, range(128)) if c.isspace() and c not in "\r\t\n")
RARE_WHITESPACE = WHITESPACE.replace(" ", "")
# Never present in cleaned text (non-ASCII is removed), so safe as an internal marker.
_MARK = "\u00a7"

_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]+")
_STRIP_TABLE = str.maketrans({c: " " for c in STRIPPED_CHARS})


def _char_class(chars: str, *, negate: bool = False) -> str:
    """A regex character class with every member hex-escaped (valid for Python and Rust)."""
    body = "".join(f"\\x{{{ord(c):x}}}" for c in chars)
    return f"[{'^' if negate else ''}{body}]"


_STRIP_CLASS = _char_class(STRIPPED_CHARS)
_WS_CLASS = _char_class(WHITESPACE)
_RARE_WS_CLASS = _char_class(RARE_WHITESPACE)
_WORD_CLASS = _char_class(WHITESPACE + _MARK, negate=True)


def clean(text: str) -> str:
    """The reference cleaning of one review (the definition the vectorized form must match)."""
    return _NON_ASCII_RE.sub(" ", text).lower().translate(_STRIP_TABLE)


def clean_expr(expr: pl.Expr) -> pl.Expr:
    """``clean`` as a polars expression; nulls become ``""``."""
    return (
        expr.fill_null("")
        .str.replace_all(r"[^\x00-\x7f]+", " ")
        .str.to_lowercase()
        .str.replace_all(_STRIP_CLASS, " ")
    )


@dataclass(frozen=True)
class TokenStream:
    """Every token of a batch, flattened in row order: token ``t`` is in row ``rows[t]``.

    ``values[t]`` is the token's id (``token_ids``) or its position in a string array
    (``token_strings``); both come from the same assembly code, so the parity tests that
    check strings against spaCy also cover the ids the models see.
    """

    n_rows: int
    rows: np.ndarray
    values: np.ndarray

    @property
    def counts(self) -> np.ndarray:
        """Number of tokens per row."""
        return np.bincount(self.rows, minlength=self.n_rows).astype(np.int64)


def _pieces_fast(frame: pl.LazyFrame) -> pl.LazyFrame:
    # Removing one trailing space drops the empty last piece that split() would leave;
    # a text that is "" from the start must give no pieces at all, hence the null.
    text = pl.col("text")
    pieces = pl.when(text == "").then(None).otherwise(text.str.strip_suffix(" ")).str.split(" ")
    empty = pl.col("piece").str.len_bytes() == 0
    return (
        frame.select("row", piece=pieces)
        .explode("piece")
        .drop_nulls("piece")
        .with_columns(ws=empty, empty=empty)
    )


def _pieces_regex(frame: pl.LazyFrame) -> pl.LazyFrame:
    # Mark the one space each word absorbs, then take maximal word / whitespace runs.
    marked = pl.col("text").str.replace_all(f"({_WORD_CLASS}) ", "${1}" + _MARK)
    tokens = marked.str.extract_all(f"{_WORD_CLASS}+|{_WS_CLASS}+")
    return (
        frame.select("row", piece=tokens)
        .explode("piece")
        .drop_nulls("piece")
        .with_columns(ws=pl.col("piece").str.contains(f"^{_WS_CLASS}"), empty=pl.lit(False))
    )


def _pieces(texts: pl.Series, table: TokenTable) -> pl.DataFrame:
    """(row, piece, ws, empty, code) in row order; fast-path pieces may be empty.

    ``code`` is the piece's category in ``table`` (its ``codes`` turn that into a value).
    """
    frame = pl.LazyFrame(
        {"row": np.arange(len(texts), dtype=np.uint32), "text": texts.cast(pl.String)}
    ).select("row", text=clean_expr(pl.col("text")))
    code = table.category(pl.col("piece"))
    rare = pl.col("text").str.contains(_RARE_WS_CLASS)
    fast = _pieces_fast(frame.filter(~rare)).with_columns(code=code)
    if not texts.str.contains(_RARE_WS_CLASS).any():
        return fast.collect(engine="streaming")
    slow = _pieces_regex(frame.filter(rare)).with_columns(code=code)
    # Both halves keep row order; a stable sort on row interleaves them.
    merged = pl.concat([fast.collect(engine="streaming"), slow.collect(engine="streaming")])
    return merged.sort("row", maintain_order=True)


@dataclass(frozen=True)
class _SpecialTable:
    keys: dict[str, int]
    offsets: np.ndarray
    sizes: np.ndarray
    strings: list[str]


def _special_table() -> _SpecialTable:
    specials = load_specials()
    sizes = np.array([len(v) for v in specials.values()], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    strings = [piece for pieces in specials.values() for piece in pieces]
    return _SpecialTable({k: i for i, k in enumerate(specials)}, offsets, sizes, strings)


_SPECIALS = _special_table()


class TokenTable:
    """A ``token -> value`` table compiled for the vectorized pass.

    Pieces are cast to a polars ``Enum`` of the special-case keys then the table's tokens
    (a non-strict cast maps unknown pieces to null, much faster than a dict replace);
    ``codes[category]`` is then ``-(j + 1)`` for special case ``j``, else the token's value,
    and the last entry (unknown) is ``default``.
    """

    def __init__(self, table: Mapping[str, int], default: int) -> None:
        if default < 0:
            raise ValueError("default must be >= 0 (negative codes mark special cases)")
        # spaCy always splits a special-case key, so a table entry for one is never used.
        words = [t for t in table if t not in _SPECIALS.keys]
        self.table = table
        self.default = default
        self.dtype = pl.Enum([*_SPECIALS.keys, *words])
        special_codes = [-(j + 1) for j in range(len(_SPECIALS.keys))]
        self.codes = np.array([*special_codes, *(table[w] for w in words), default], np.int32)

    def category(self, expr: pl.Expr) -> pl.Expr:
        unknown = len(self.codes) - 1
        return expr.cast(self.dtype, strict=False).to_physical().cast(pl.UInt32).fill_null(unknown)

    def value(self, token: str) -> int:
        return self.table.get(token, self.default)


_SPECIALS_ONLY = TokenTable({}, 0)


@dataclass(frozen=True)
class _Segments:
    """Where each token starts among the pieces, and which are whitespace or special runs.

    ``codes`` holds each start's table value (negative: special case ``-(code + 1)``).
    """

    rows: np.ndarray
    starts: np.ndarray
    is_space: np.ndarray
    space_lengths: np.ndarray
    space_slot: np.ndarray
    codes: np.ndarray
    n_pieces: int


def _segments(frame: pl.DataFrame, table: TokenTable, keep_whitespace: bool) -> _Segments:
    rows = frame["row"].to_numpy()
    empty = frame["empty"].to_numpy()
    n = len(frame)
    # A run of empty pieces in one row is one whitespace token of that many spaces.
    continues_run = np.zeros(n, dtype=bool)
    np.logical_and(empty[1:], empty[:-1], out=continues_run[1:])
    continues_run[1:] &= rows[1:] == rows[:-1]
    keep = ~continues_run
    if not keep_whitespace:
        keep &= ~frame["ws"].to_numpy()
    starts = np.flatnonzero(keep)
    is_space = empty[starts]
    # With whitespace kept, starts are exactly the run boundaries: gaps are run lengths.
    space_at = np.flatnonzero(is_space)
    lengths = np.append(starts, n)[space_at + 1] - starts[space_at]
    space_lengths, space_slot = np.unique(lengths, return_inverse=True)
    codes = table.codes[frame["code"].to_numpy()[starts]]
    return _Segments(rows, starts, is_space, space_lengths, space_slot, codes, n)


def _assemble(
    seg: _Segments,
    start_values: np.ndarray,
    special_values: np.ndarray,
    space_values: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-token (rows, values): each kept piece's value, whitespace runs and special cases
    replaced by their own values, special cases expanded in place into several tokens."""
    values = start_values
    rows = seg.rows[seg.starts]
    values[seg.is_space] = space_values[seg.space_slot]
    is_special = seg.codes < 0
    if not is_special.any():
        return rows, values
    at = np.flatnonzero(is_special)
    which = -seg.codes[at] - 1
    first = _SPECIALS.offsets[which]
    values[at] = special_values[first]
    extra = _SPECIALS.sizes[which] - 1
    insert_at = np.repeat(at + 1, extra)
    step = np.arange(int(extra.sum())) - np.repeat(np.cumsum(extra) - extra, extra) + 1
    source = np.repeat(first, extra) + step
    return np.insert(rows, insert_at, rows[insert_at - 1]), np.insert(
        values, insert_at, special_values[source]
    )


def _as_series(texts: Sequence[str | None] | pl.Series) -> pl.Series:
    return texts if isinstance(texts, pl.Series) else pl.Series("text", texts, dtype=pl.String)


def token_strings(
    texts: Sequence[str | None] | pl.Series, *, keep_whitespace: bool = True
) -> tuple[TokenStream, pl.Series]:
    """Clean and tokenize a batch exactly as the reference (clean + spaCy) does.

    Returns the stream (``values`` index the returned strings' source) and every token's text.
    """
    series = _as_series(texts)
    frame = _pieces(series, _SPECIALS_ONLY)
    seg = _segments(frame, _SPECIALS_ONLY, keep_whitespace)
    n, n_special = seg.n_pieces, len(_SPECIALS.strings)
    rows, values = _assemble(
        seg,
        seg.starts.astype(np.int64),
        n + np.arange(n_special, dtype=np.int64),
        n + n_special + np.arange(len(seg.space_lengths), dtype=np.int64),
    )
    extra = _SPECIALS.strings + [" " * int(k) for k in seg.space_lengths]
    source = pl.concat([frame["piece"], pl.Series(extra, dtype=pl.String)])
    return TokenStream(len(series), rows, values), source.gather(values)


def token_ids(
    texts: Sequence[str | None] | pl.Series, table: TokenTable, *, keep_whitespace: bool = True
) -> TokenStream:
    """Like ``token_strings`` but each token's value is ``table.value(token)``.

    The lookup runs inside the parallel polars pass; no token string is built.
    """
    series = _as_series(texts)
    frame = _pieces(series, table)
    seg = _segments(frame, table, keep_whitespace)
    special_values = np.array([table.value(t) for t in _SPECIALS.strings], dtype=np.int32)
    space_values = np.array([table.value(" " * int(k)) for k in seg.space_lengths], np.int32)
    start_values = np.where(seg.codes < 0, 0, seg.codes).astype(np.int32)
    rows, values = _assemble(seg, start_values, special_values, space_values)
    return TokenStream(len(series), rows, values)


def tokenize(texts: Sequence[str | None], *, keep_whitespace: bool = True) -> list[list[str]]:
    """Tokens of each text, equal to ``[t.text for t in spacy_tokenizer(clean(text))]``."""
    stream, strings = token_strings(texts, keep_whitespace=keep_whitespace)
    bounds = np.concatenate([[0], np.cumsum(stream.counts)])
    flat = strings.to_list()
    return [flat[bounds[i] : bounds[i + 1]] for i in range(stream.n_rows)]

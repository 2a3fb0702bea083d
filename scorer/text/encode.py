"""Text cleaning and a compiled tokenizer that reproduces spaCy's English tokenizer.

The reference recipe cleans a review (``clean``) and tokenizes it with
``spacy.blank("en").tokenizer``. On cleaned text (lowercase ASCII letters, whitespace and
control characters only) spaCy's behaviour reduces to three rules, which ``scorer.text.kernels``
applies in one compiled pass over the raw bytes of Arrow string columns:

1. Text is cut into alternating runs of whitespace (``str.isspace``) and non-whitespace.
2. A single ``" "`` directly after a word is absorbed by that word; any other whitespace run
   becomes one token (so ``"a  b"`` -> ``a``, ``" "``, ``b``, and leading spaces are kept).
3. A word that is one of spaCy's special cases is split (``dont`` -> ``do``, ``nt``).

A tokenizer may keep some punctuation (``TokenizerConfig.marks``, e.g. ``"!?"``): cleaning
leaves those characters, and each is a token of its own that absorbs one following ``" "`` as a
word does (``"great!! ok"`` -> ``great``, ``!``, ``!``, ``ok``): split off a word's start or
end as spaCy splits them, and off the letters around them too (spaCy keeps ``a!b`` whole).

A batch of texts is a ``TextColumns``: one or more Arrow string columns whose values are
joined by one space per row (nulls as ""), as the reviews' ``Title`` and ``Review Text`` are.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise

import numpy as np
import polars as pl
import pyarrow as pa

from scorer.text import kernels
from scorer.text.specials import load_specials

STRIPPED_CHARS = string.punctuation + string.digits + "\r\t\n"
_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]+")
_STRIP_TABLE = str.maketrans({c: " " for c in STRIPPED_CHARS})
# Below this many rows per task, handing rows to threads costs more than it saves.
MIN_TASK_ROWS = 2048
_NO_LIMIT = np.iinfo(np.int64).max


def clean(text: str, marks: str = "") -> str:
    """The reference cleaning of one review (the definition the kernel must match); with
    ``marks``, those punctuation characters are kept, each then a token of its own."""
    table = (
        _STRIP_TABLE
        if not marks
        else str.maketrans({c: " " for c in STRIPPED_CHARS if c not in marks})
    )
    return _NON_ASCII_RE.sub(" ", text).lower().translate(table)


Texts = Sequence[str | None] | pl.Series | pa.Array | pa.ChunkedArray


@dataclass(frozen=True)
class TextColumns:
    """Rows of text held as Arrow string (or binary) columns, joined by one space per row."""

    arrays: tuple[pa.Array, ...]

    def __post_init__(self) -> None:
        if not self.arrays:
            raise ValueError("at least one text column is needed")
        if len({len(a) for a in self.arrays}) != 1:
            raise ValueError("text columns differ in length")

    @classmethod
    def of(cls, texts: Texts | TextColumns) -> TextColumns:
        if isinstance(texts, TextColumns):
            return texts
        if isinstance(texts, pl.Series):
            return cls((_as_array(texts.cast(pl.String).to_arrow()),))
        if isinstance(texts, pa.Array | pa.ChunkedArray):
            return cls((_as_array(texts),))
        return cls((pa.array(list(texts), type=pa.large_string()),))

    def __len__(self) -> int:
        return len(self.arrays[0])

    @cached_property
    def buffers(self) -> tuple[tuple, tuple, tuple]:
        """(data, offsets, validity) per column, as the kernels take them (zero-copy data)."""
        datas, offsets, valids = [], [], []
        for array in self.arrays:
            data, offset, valid = _column_buffers(array)
            datas.append(data)
            offsets.append(offset)
            valids.append(valid)
        return tuple(datas), tuple(offsets), tuple(valids)

    def for_rows(self, fn: Callable[[int, int], object], threads: int | None = None) -> None:
        """Call ``fn(lo, hi)`` over row ranges covering every row, on ``threads`` threads
        (the kernels release the GIL)."""
        n = len(self)
        workers = max(1, threads or os.cpu_count() or 1)
        tasks = min(2 * workers, n // MIN_TASK_ROWS)
        if workers == 1 or tasks < 2:
            fn(0, n)
            return
        bounds = np.linspace(0, n, tasks + 1).astype(int)
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda r: fn(int(r[0]), int(r[1])), pairwise(bounds)))


def _as_array(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    kind = array.type
    if pa.types.is_null(kind):
        return pa.nulls(len(array), pa.large_string())
    if pa.types.is_string_view(kind) or pa.types.is_binary_view(kind):
        return array.cast(pa.large_string() if pa.types.is_string_view(kind) else pa.large_binary())
    if not (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
    ):
        raise TypeError(f"a text column must hold strings, not {kind}")
    return array


def _column_buffers(array: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    array = _as_array(array)
    n = len(array)
    wide = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
    _, offset_buffer, data_buffer = array.buffers()[:3]
    raw = np.frombuffer(offset_buffer, dtype=np.int64 if wide else np.int32)
    offsets = np.array(raw[array.offset : array.offset + n + 1], dtype=np.int64)
    data = np.frombuffer(data_buffer if data_buffer is not None else b"", dtype=np.uint8)
    if array.null_count:
        valid = np.asarray(array.is_valid()).view(np.uint8).copy()
    else:
        valid = np.ones(n, dtype=np.uint8)
    return data, offsets, valid


class TokenTable:
    """A ``token -> value`` table compiled for the kernels, spaCy's special cases included.

    A special-case key is always split, so a table entry for one is never used; each
    special case's pieces take their own table values (``default`` when absent).
    """

    def __init__(self, table: Mapping[str, int], default: int) -> None:
        if default < 0:
            raise ValueError("default must be >= 0 (negative values mark special cases)")
        specials = load_specials()
        words = [t for t in table if t not in specials]
        entries = [(k, -(j + 1)) for j, k in enumerate(specials)] + [(w, table[w]) for w in words]
        capacity = 8
        while capacity < 2 * len(entries):
            capacity *= 2
        encoded = [k.encode("utf-8") for k, _ in entries]
        self.keys = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
        starts = np.cumsum([0, *(len(k) for k in encoded)])[:-1]
        self.key_off = np.zeros(capacity, dtype=np.int64)
        self.key_len = np.full(capacity, -1, dtype=np.int64)
        self.slot_val = np.zeros(capacity, dtype=np.int64)
        mask = capacity - 1
        for key, start, (_, value) in zip(encoded, starts, entries, strict=True):
            slot = kernels.fnv1a_bytes(key) & mask
            while self.key_len[slot] >= 0:
                slot = (slot + 1) & mask
            self.key_off[slot], self.key_len[slot], self.slot_val[slot] = start, len(key), value
        self.max_key = max((len(k) for k in encoded), default=0)
        pieces = [p for key in specials for p in specials[key]]
        self.piece_off = np.cumsum([0, *(len(v) for v in specials.values())]).astype(np.int64)
        self.piece_len = np.array([len(p) for p in pieces], dtype=np.int64)
        self.piece_val = np.array([table.get(p, default) for p in pieces], dtype=np.int64)
        self.default = default
        self.table = table

    def args(self) -> tuple:
        return (
            self.keys,
            self.key_off,
            self.key_len,
            self.slot_val,
            self.default,
            self.max_key,
            self.piece_off,
            self.piece_len,
            self.piece_val,
        )


_SPECIALS_ONLY: TokenTable | None = None


def _specials_only() -> TokenTable:
    global _SPECIALS_ONLY
    if _SPECIALS_ONLY is None:
        _SPECIALS_ONLY = TokenTable({}, 0)
    return _SPECIALS_ONLY


_EMPTY_IDS = np.zeros((0, 0), dtype=np.int32)
_EMPTY_BYTES = np.zeros(0, dtype=np.uint8)
_EMPTY_INDEX = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Encoded:
    """Right-padded token ids ``[n, max_len]`` (int32, PAD=0), lengths (int32, <= max_len),
    and which rows held invalid UTF-8 (decoded lossily, as a replacement character would be)."""

    ids: np.ndarray
    lengths: np.ndarray
    invalid_utf8: np.ndarray


def encode_ids(
    texts: Texts | TextColumns,
    table: TokenTable,
    *,
    max_len: int,
    keep_whitespace: bool,
    tail: int = 0,
    marks: str = "",
    threads: int | None = None,
) -> Encoded:
    """At most ``max_len`` tokens of each row as table values: the first ``max_len - tail``
    and the last ``tail``. Without a tail nothing past ``max_len`` is tokenized (only checked
    for invalid UTF-8)."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if not 0 <= tail <= max_len:
        raise ValueError(f"tail must be in [0, max_len], got {tail}")
    columns = TextColumns.of(texts)
    n = len(columns)
    ids = np.zeros((n, max_len), dtype=np.int32)
    counts = np.zeros(n, dtype=np.int64)
    invalid = np.zeros(n, dtype=np.bool_)
    datas, offsets, valids = columns.buffers

    def run(lo: int, hi: int) -> None:
        kernels.tokenize_ids(
            datas, offsets, valids, lo, hi, keep_whitespace, max_len, tail,
            *kernels.tables(marks), *table.args(), ids, counts, _EMPTY_INDEX, invalid,
            _EMPTY_BYTES, _EMPTY_INDEX, _EMPTY_INDEX, _EMPTY_INDEX,
        )  # fmt: skip

    columns.for_rows(run, threads)
    return Encoded(ids, counts.astype(np.int32), invalid)


def token_strings(
    texts: Texts | TextColumns,
    *,
    keep_whitespace: bool = True,
    marks: str = "",
    threads: int | None = None,
) -> tuple[np.ndarray, pl.Series]:
    """Every token of a batch as text, flattened in row order, and the count per row."""
    columns = TextColumns.of(texts)
    n = len(columns)
    datas, offsets, valids = columns.buffers
    table = _specials_only()
    counts = np.zeros(n, dtype=np.int64)
    sizes = np.zeros(n, dtype=np.int64)
    invalid = np.zeros(n, dtype=np.bool_)

    def count(lo: int, hi: int) -> None:
        kernels.count_tokens(
            datas, offsets, valids, lo, hi, keep_whitespace, _NO_LIMIT, 0,
            *kernels.tables(marks), *table.args(), _EMPTY_IDS, counts, sizes, invalid,
            _EMPTY_BYTES, _EMPTY_INDEX, _EMPTY_INDEX, _EMPTY_INDEX,
        )  # fmt: skip

    columns.for_rows(count, threads)
    byte_start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    row_token = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    out = np.zeros(int(byte_start[-1]), dtype=np.uint8)
    token_byte = np.zeros(int(row_token[-1]) + 1, dtype=np.int64)
    token_byte[-1] = byte_start[-1]

    def fill(lo: int, hi: int) -> None:
        kernels.write_tokens(
            datas, offsets, valids, lo, hi, keep_whitespace, _NO_LIMIT, 0,
            *kernels.tables(marks), *table.args(), _EMPTY_IDS, counts, sizes, invalid,
            out, byte_start, row_token, token_byte,
        )  # fmt: skip

    columns.for_rows(fill, threads)
    strings = pa.LargeStringArray.from_buffers(
        len(token_byte) - 1, pa.py_buffer(token_byte), pa.py_buffer(out)
    )
    return counts, pl.Series("token", strings)


def tokenize(
    texts: Texts | TextColumns, *, keep_whitespace: bool = True, marks: str = ""
) -> list[list[str]]:
    """Tokens of each text, equal to ``[t.text for t in spacy_tokenizer(clean(text))]``;
    with ``marks``, ``clean(text, marks)`` with each mark a token of its own."""
    counts, strings = token_strings(texts, keep_whitespace=keep_whitespace, marks=marks)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    flat = strings.to_list()
    return [flat[bounds[i] : bounds[i + 1]] for i in range(len(counts))]


def row_hashes(texts: Texts | TextColumns, threads: int | None = None) -> np.ndarray:
    """A 64-bit hash of each row's joined raw text (uint64): the fingerprint of a row.
    ``threads``: as ``TextColumns.for_rows`` (1 where callers already run in parallel)."""
    columns = TextColumns.of(texts)
    out = np.zeros(len(columns), dtype=np.uint64)
    datas, offsets, valids = columns.buffers
    columns.for_rows(lambda lo, hi: kernels.hash_rows(datas, offsets, valids, lo, hi, out), threads)
    return out

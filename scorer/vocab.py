"""Vocabulary: built from training rows only, saved as JSON with its sha256, encodes batches."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

from scorer.errors import UserError
from scorer.io import atomic_write_text
from scorer.text import TokenStream, TokenTable, token_ids, token_strings

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
VOCAB_FORMAT = 1
# Below this many rows per chunk, thread hand-off costs more than it saves.
MIN_CHUNK_ROWS = 2048


@dataclass(frozen=True)
class Encoded:
    """Right-padded token ids ``[n, max_len]`` (int32, PAD=0) and lengths (int32, <= max_len)."""

    ids: np.ndarray
    lengths: np.ndarray


@dataclass(frozen=True)
class Vocab:
    tokens: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.tokens[:2] != (PAD, UNK):
            raise UserError(f"a vocabulary must start with {PAD!r}, {UNK!r}")
        if len(set(self.tokens)) != len(self.tokens):
            raise UserError("the vocabulary holds duplicate tokens")

    def __len__(self) -> int:
        return len(self.tokens)

    @cached_property
    def index(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.tokens)}

    @cached_property
    def table(self) -> TokenTable:
        return TokenTable(self.index, UNK_ID)

    @cached_property
    def sha256(self) -> str:
        return tokens_sha256(self.tokens)

    @classmethod
    def build(
        cls,
        texts: Sequence[str | None] | pl.Series,
        *,
        min_count: int = 2,
        keep_whitespace: bool = True,
    ) -> Vocab:
        """Tokens seen at least ``min_count`` times, most frequent first, ties by text."""
        if min_count < 1:
            raise UserError(f"--min-count must be >= 1, got {min_count}")
        _, strings = token_strings(texts, keep_whitespace=keep_whitespace)
        counts = (
            strings.rename("token")
            .value_counts(name="count")
            .filter(pl.col("count") >= min_count)
            .sort(["count", "token"], descending=[True, False])
        )
        return cls((PAD, UNK, *counts["token"].to_list()))

    def encode(
        self,
        texts: Sequence[str | None] | pl.Series,
        *,
        max_len: int,
        keep_whitespace: bool,
        threads: int | None = None,
    ) -> Encoded:
        """Clean, tokenize and map a batch to ids, keeping the first ``max_len`` tokens.

        Large batches are cut into chunks encoded on ``threads`` threads (default: all
        cores): polars' string kernels of one chunk overlap the numpy assembly of another.
        """
        series = texts if isinstance(texts, pl.Series) else pl.Series(texts, dtype=pl.String)
        workers = max(1, threads or os.cpu_count() or 1)
        n_chunks = min(2 * workers, len(series) // MIN_CHUNK_ROWS)
        if workers == 1 or n_chunks < 2:
            return self._encode_chunk(series, max_len, keep_whitespace)
        bounds = np.linspace(0, len(series), n_chunks + 1).astype(int)
        with ThreadPoolExecutor(workers) as pool:
            parts = list(
                pool.map(
                    lambda lo_hi: self._encode_chunk(
                        series.slice(lo_hi[0], lo_hi[1] - lo_hi[0]), max_len, keep_whitespace
                    ),
                    itertools.pairwise(bounds),
                )
            )
        return Encoded(
            np.concatenate([p.ids for p in parts]), np.concatenate([p.lengths for p in parts])
        )

    def _encode_chunk(self, texts: pl.Series, max_len: int, keep_whitespace: bool) -> Encoded:
        stream = token_ids(texts, self.table, keep_whitespace=keep_whitespace)
        return pad(stream, max_len)

    def save(self, path: Path) -> None:
        doc = {"format_version": VOCAB_FORMAT, "sha256": self.sha256, "tokens": list(self.tokens)}
        atomic_write_text(path, json.dumps(doc, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: Path, *, expected_sha256: str | None = None) -> Vocab:
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
            tokens = tuple(doc["tokens"])
            stored = doc["sha256"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"cannot read vocabulary {path}: {exc}") from None
        actual = tokens_sha256(tokens)
        for name, want in (("its own", stored), ("the model's", expected_sha256)):
            if want is not None and want != actual:
                raise UserError(
                    f"vocabulary {path} does not match {name} sha256 "
                    f"({actual[:12]} != {want[:12]}): the file was changed or belongs elsewhere"
                )
        return cls(tokens)


def tokens_sha256(tokens: Sequence[str]) -> str:
    canonical = json.dumps(list(tokens), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def pad(stream: TokenStream, max_len: int) -> Encoded:
    """Scatter a stream's per-token ids into a right-padded ``[rows, max_len]`` int32 matrix."""
    if max_len < 1:
        raise UserError(f"max_len must be >= 1, got {max_len}")
    counts = stream.counts
    first = np.cumsum(counts) - counts
    position = np.arange(len(stream.values), dtype=np.int64) - np.repeat(first, counts)
    # Tokens past max_len all land in one spare column that is then dropped: no masking.
    np.minimum(position, max_len, out=position)
    position += stream.rows.astype(np.int64) * (max_len + 1)
    wide = np.zeros(stream.n_rows * (max_len + 1), dtype=np.int32)
    wide[position] = stream.values
    ids = np.ascontiguousarray(wide.reshape(stream.n_rows, max_len + 1)[:, :max_len])
    return Encoded(ids, np.minimum(counts, max_len).astype(np.int32))

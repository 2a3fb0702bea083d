"""Vocabulary: built from training rows only, saved as JSON with its sha256, encodes batches."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import polars as pl

from scorer.errors import UserError
from scorer.io.files import atomic_write_text
from scorer.text.encode import Encoded, TextColumns, Texts, TokenTable, encode_ids, token_strings

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
VOCAB_FORMAT = 1
__all__ = ["PAD", "PAD_ID", "UNK", "UNK_ID", "Encoded", "Vocab", "tokens_sha256"]


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
        texts: Texts | TextColumns,
        *,
        min_count: int = 2,
        keep_whitespace: bool = True,
        marks: str = "",
    ) -> Vocab:
        """Tokens seen at least ``min_count`` times, most frequent first, ties by text."""
        if min_count < 1:
            raise UserError(f"--min-count must be >= 1, got {min_count}")
        _, strings = token_strings(texts, keep_whitespace=keep_whitespace, marks=marks)
        counts = (
            strings.value_counts(name="count")
            .filter(pl.col("count") >= min_count)
            .sort(["count", "token"], descending=[True, False])
        )
        return cls((PAD, UNK, *counts["token"].to_list()))

    def encode(
        self,
        texts: Texts | TextColumns,
        *,
        max_len: int,
        keep_whitespace: bool,
        tail: int = 0,
        marks: str = "",
        threads: int | None = None,
    ) -> Encoded:
        """Clean, tokenize and map a batch to ids, keeping at most ``max_len`` tokens (the
        first ``max_len - tail`` and the last ``tail``), on ``threads`` threads (default: all
        cores)."""
        if max_len < 1:
            raise UserError(f"max_len must be >= 1, got {max_len}")
        return encode_ids(
            texts,
            self.table,
            max_len=max_len,
            keep_whitespace=keep_whitespace,
            tail=tail,
            marks=marks,
            threads=threads,
        )

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

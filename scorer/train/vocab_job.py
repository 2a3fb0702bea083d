"""`scorer vocab`: clean + tokenize + build the vocabulary of a reviews file, with a summary."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scorer.io.labelled import DEFAULT_TEXT_COLUMNS, read_split_file, read_table, read_texts
from scorer.runtime.config import check_marks
from scorer.text.encode import token_strings
from scorer.text.vocab import Vocab

__all__ = ["DEFAULT_TEXT_COLUMNS", "VocabSummary", "build_vocab_file"]


@dataclass(frozen=True)
class VocabSummary:
    rows: int
    counted_rows: int
    tokens: int
    vocab_size: int
    unk_rate: float
    mean_length: float
    seconds: float
    sha256: str
    out: Path

    def line(self) -> str:
        return (
            f"vocab: {self.vocab_size:,} tokens from {self.counted_rows:,} of {self.rows:,} rows "
            f"({self.tokens:,} tokens, mean {self.mean_length:.1f}/review, "
            f"{self.unk_rate:.2%} unknown) in {self.seconds:.2f}s -> {self.out} "
            f"(sha256 {self.sha256[:12]})"
        )


def build_vocab_file(
    data: str | Path,
    out: Path,
    *,
    text_columns: Sequence[str] = DEFAULT_TEXT_COLUMNS,
    split_file: Path | None = None,
    min_count: int = 2,
    keep_whitespace: bool = True,
    marks: str = "",
) -> VocabSummary:
    check_marks(marks)
    start = time.perf_counter()
    frame = read_table(data, text=text_columns)
    texts = read_texts(frame, text_columns, data)
    if split_file is not None:
        texts = texts.filter(read_split_file(split_file, len(texts)) == "train")
    vocab = Vocab.build(texts, min_count=min_count, keep_whitespace=keep_whitespace, marks=marks)
    _, tokens = token_strings(texts, keep_whitespace=keep_whitespace, marks=marks)
    unknown = int((~tokens.is_in(list(vocab.tokens[2:]))).sum())
    vocab.save(out)
    return VocabSummary(
        rows=len(frame),
        counted_rows=len(texts),
        tokens=len(tokens),
        vocab_size=len(vocab),
        unk_rate=unknown / len(tokens) if len(tokens) else 0.0,
        mean_length=len(tokens) / max(len(texts), 1),
        seconds=time.perf_counter() - start,
        sha256=vocab.sha256,
        out=out,
    )

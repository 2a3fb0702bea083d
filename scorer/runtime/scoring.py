"""The scoring steps every engine shares: open a checked model, encode a chunk, score it.

``scorer run``, ``scorer eval`` and the Ray predictor (``scorer.engines.ray.predictor``) all
go through these, so a row gets the same tokens, the same graph and the same numbers
wherever it is scored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scorer.errors import UserError
from scorer.io.source import is_text_type
from scorer.runtime.config import FORMAT_VERSION, ModelCard
from scorer.runtime.contract import (
    META_CARD,
    META_FORMAT_VERSION,
    META_VOCAB_SHA256,
    ModelFileError,
)
from scorer.runtime.model_dir import ModelDir
from scorer.runtime.onnx_file import MalformedOnnx, read_facts
from scorer.runtime.profile import Profile
from scorer.runtime.session import OnnxScorer, open_scorer
from scorer.text import kernels
from scorer.text.encode import TextColumns, encode_ids, row_hashes
from scorer.text.vocab import UNK_ID, Vocab


@dataclass(frozen=True)
class LoadedModel:
    directory: ModelDir
    vocab: Vocab
    scorer: OnnxScorer

    @property
    def card(self) -> ModelCard:
        return self.directory.card


def check_graph(directory: ModelDir, path: Path) -> None:
    """Refuse a graph that config.json does not vouch for: unrecorded or changed bytes,
    external data, another format version, or a card that disagrees with config.json."""
    card = directory.card
    entry = card.graphs.get(path.name)
    if entry is None:
        raise UserError(
            f"{path.name} is not recorded in {directory.path}/config.json: run `scorer export`"
        )
    from scorer.io.files import file_sha256

    if file_sha256(path) != entry.get("sha256"):
        raise UserError(
            f"{path} does not match the sha256 in config.json: the file was changed after "
            "`scorer export` (export again)"
        )
    try:
        facts = read_facts(path)
    except MalformedOnnx as exc:
        raise ModelFileError(f"{path}: {exc}") from exc
    if facts.external_tensors:
        raise UserError(
            f"{path} refers to external data files; scorer only loads self-contained graphs"
        )
    meta = facts.metadata
    if meta.get(META_FORMAT_VERSION) != str(FORMAT_VERSION):
        raise UserError(
            f"{path} has format_version {meta.get(META_FORMAT_VERSION)!r}; this scorer reads "
            f"{FORMAT_VERSION} (export again)"
        )
    try:
        embedded = json.loads(meta[META_CARD])
        facts_of_card = (
            embedded["tokenizer"]["max_len"],
            embedded["tokenizer"].get("tail", 0),
            embedded["tokenizer"]["keep_whitespace"],
            embedded["tokenizer"].get("marks", ""),
            [float(v) for v in embedded["labels"]],
            meta[META_VOCAB_SHA256],
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: malformed model card metadata: {exc}") from exc
    expected = (
        card.tokenizer.max_len,
        card.tokenizer.tail,
        card.tokenizer.keep_whitespace,
        card.tokenizer.marks,
        list(card.labels),
        card.vocab_sha256,
    )
    names = ("max_len", "tail", "keep_whitespace", "marks", "labels", "vocabulary sha256")
    for name, got, want in zip(names, facts_of_card, expected, strict=True):
        if got != want:
            raise UserError(f"{path}: its model card says {name} {got!r}, config.json {want!r}")


def open_model(
    path: Path,
    device: str = "auto",
    precision: str = "auto",
    threads: int | None = None,
    batch_size: int | None = None,
) -> LoadedModel:
    """The model directory, its checked vocabulary, and an inference session over a graph
    that config.json vouches for (see ``check_graph``)."""
    directory = ModelDir.open(path)
    vocab = directory.vocab()
    scorer = open_scorer(
        directory.path,
        device=device,
        precision=precision,
        threads=threads,
        batch_size=batch_size,
        verify=lambda graph: check_graph(directory, graph),
    )
    return LoadedModel(directory, vocab, scorer)


@dataclass(frozen=True)
class Counts:
    """What an incremental run found among its rows."""

    reused: int = 0
    edited: int = 0
    new: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.reused + other.reused, self.edited + other.edited, self.new + other.new)


@dataclass(frozen=True)
class Chunk:
    """Consecutive input rows from global row ``start``: the table read, then ids, then
    scores (each step drops what the next does not need)."""

    start: int
    table: pa.Table
    rows: int
    ids: np.ndarray | None = None
    lengths: np.ndarray | None = None
    probs: np.ndarray | None = None
    expected: np.ndarray | None = None
    lossy_rows: int = 0
    lossy_flags: np.ndarray | None = None
    unknown: int = 0  # unknown tokens among the encoded rows
    # Incremental runs (scorer.engines.local.incremental): each row's text hash, and which
    # rows keep an earlier run's scores (``probs``/``expected`` then arrive filled for them
    # and only the other rows are encoded and scored).
    hashes: np.ndarray | None = None
    reused: np.ndarray | None = None
    counts: Counts | None = None
    profile: Profile | None = None  # of the rows scored here (not the reused ones)


def encode_table(
    table: pa.Table, text_columns: Sequence[str], model: LoadedModel
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, lengths, rows with invalid UTF-8) of a table's rows, batch by batch (no copy of
    the text), on one thread: callers run chunks in parallel."""
    n = table.num_rows
    tok = model.card.tokenizer
    ids = np.zeros((n, tok.max_len), dtype=np.int32)
    lengths = np.zeros(n, dtype=np.int32)
    invalid = np.zeros(n, dtype=np.bool_)
    start = 0
    for columns in text_batches(table, text_columns):
        end = start + len(columns)
        part = encode_ids(
            columns,
            model.vocab.table,
            max_len=tok.max_len,
            keep_whitespace=tok.keep_whitespace,
            tail=tok.tail,
            marks=tok.marks,
            threads=1,
        )
        ids[start:end], lengths[start:end], invalid[start:end] = (
            part.ids,
            part.lengths,
            part.invalid_utf8,
        )
        start = end
    return ids, lengths, invalid


def text_batches(table: pa.Table, names: Sequence[str]) -> Iterator[TextColumns]:
    """A table's text columns batch by batch, without copying the text."""
    for batch in table.select(list(names)).to_batches():
        yield TextColumns(tuple(_as_text(c) for c in batch.columns))


def text_hashes(table: pa.Table, names: Sequence[str]) -> np.ndarray:
    """Each row's ``row_hashes`` (the text as the model reads it), batch by batch, on one
    thread: callers run chunks in parallel."""
    parts = [row_hashes(columns, threads=1) for columns in text_batches(table, names)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)


def text_columns_of(table: pa.Table, names: Sequence[str]) -> TextColumns:
    """A table's text columns as one TextColumns (a copy when the table has several chunks)."""
    return TextColumns(tuple(_as_text(table.column(n).combine_chunks()) for n in names))


def _as_text(column: pa.Array) -> pa.Array:
    if pa.types.is_large_string(column.type) or pa.types.is_string(column.type):
        return column
    return column.cast(pa.large_string())


def encode_chunk(
    chunk: Chunk,
    text_columns: Sequence[str],
    keep: Sequence[str],
    model,
    *,
    decoded_lossily: bool = False,
) -> Chunk:
    """Token ids of a chunk's text, its kept columns, and which rows lost bytes to UTF-8
    decoding: invalid bytes met here, or, where the reader decoded lossily
    (``decoded_lossily``: CSV), the U+FFFD it left."""
    if chunk.reused is None:
        ids, lengths, invalid = encode_table(chunk.table, text_columns, model)
    else:
        # Only the rows not reused are tokenized. Their text was read by polars, whose
        # strings are valid UTF-8, so the reused rows have no invalid bytes to flag.
        todo = ~chunk.reused
        ids, lengths, scored_invalid = encode_table(
            chunk.table.filter(pa.array(todo)), text_columns, model
        )
        invalid = np.zeros(chunk.rows, dtype=np.bool_)
        invalid[todo] = scored_invalid
    kept, kept_invalid = repair_utf8(chunk.table.select(list(keep)))
    flags = invalid | kept_invalid
    if decoded_lossily:
        flags |= replaced_rows(chunk.table, [*text_columns, *keep])
    return replace(
        chunk,
        table=kept,
        ids=ids,
        lengths=lengths,
        lossy_rows=int(flags.sum()),
        lossy_flags=flags,
        # Padding is PAD_ID, so every UNK_ID is a token the vocabulary did not know.
        unknown=int(np.count_nonzero(ids == UNK_ID)),
    )


def infer_chunk(chunk: Chunk, model: LoadedModel) -> Chunk:
    """Scores of the encoded rows, merged with the reused ones, and the scored rows'
    profile (from what the tokenizer and the model give anyway)."""
    assert chunk.ids is not None and chunk.lengths is not None
    card = model.card
    if len(chunk.lengths):
        probs, expected = model.scorer.score(chunk.ids, chunk.lengths)
    else:  # every row of the chunk reused
        probs = np.zeros((0, len(card.labels)), dtype=np.float32)
        expected = np.zeros(0, dtype=np.float32)
    profile = Profile.of(
        card.labels,
        card.tokenizer.max_len,
        chunk.lengths,
        chunk.unknown,
        probs.argmax(axis=1),
        expected,
    )
    if chunk.reused is not None:
        assert chunk.probs is not None and chunk.expected is not None
        todo = ~chunk.reused
        chunk.probs[todo], chunk.expected[todo] = probs, expected
        probs, expected = chunk.probs, chunk.expected
    return replace(chunk, ids=None, lengths=None, probs=probs, expected=expected, profile=profile)


def repair_utf8(table: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """Kept text columns with invalid UTF-8 decoded lossily (U+FFFD), so the output is valid
    Parquet; and which rows needed it."""
    flags = np.zeros(table.num_rows, dtype=np.bool_)
    columns = []
    for column in table.columns:
        if not (pa.types.is_large_string(column.type) or pa.types.is_string(column.type)):
            columns.append(column)
            continue
        array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        bad = invalid_utf8_rows(array)
        if bad.any():
            # Rare: decode the whole column lossily (valid values come out unchanged).
            values = array.cast(pa.large_binary()).to_pylist()
            decoded = [v.decode("utf-8", "replace") if v is not None else None for v in values]
            array = pa.array(decoded, type=column.type)
            flags |= bad
        columns.append(array)
    return pa.table(columns, schema=table.schema), flags


def replaced_rows(table: pa.Table, columns: Sequence[str]) -> np.ndarray:
    """Rows whose text holds U+FFFD: what the reader's lossy decoding left of invalid bytes
    (indistinguishable from a replacement character already in the input)."""
    flags = np.zeros(table.num_rows, dtype=np.bool_)
    for name in dict.fromkeys(columns):
        column = table.column(name)
        if is_text_type(column.type) and column.null_count < len(column):
            found = pc.match_substring(column, "\ufffd")
            flags |= found.fill_null(False).to_numpy(zero_copy_only=False)
    return flags


def invalid_utf8_rows(array: pa.Array) -> np.ndarray:
    """Which values of a string array are not valid UTF-8."""
    columns = TextColumns((array,))
    datas, offsets, valids = columns.buffers
    out = np.zeros(len(array), dtype=np.bool_)
    kernels.invalid_rows(datas[0], offsets[0], valids[0], out)
    return out

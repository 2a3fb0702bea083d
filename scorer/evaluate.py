"""`scorer eval`: score a labelled file through the production path and report quality."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from scorer.data import read_split_file
from scorer.errors import UserError
from scorer.metrics import Metrics, rating_metrics
from scorer.pipeline import Pipeline
from scorer.run import Chunk, encode_chunk, infer_chunk, open_model
from scorer.sources import check_columns, open_source


@dataclass(frozen=True)
class EvalJob:
    input: str
    model_dir: Path
    label_column: str = "Rating"
    text_columns: tuple[str, ...] | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 2048
    threads: int | None = None
    chunk_rows: int = 50_000
    split_file: Path | None = None
    split: str = "test"


def evaluate(job: EvalJob) -> Metrics:
    model_dir, vocab, scorer = open_model(job.model_dir, job.device, job.precision, job.threads)
    card = model_dir.card
    source = open_source(job.input)
    text_columns = job.text_columns or card.text_columns
    check_columns(source, text_columns, [job.label_column])
    labels = np.asarray(card.labels)
    pipeline = Pipeline(
        [
            ("tokenize", lambda c: encode_chunk(c, vocab, card, job.threads)),
            ("infer", lambda c: infer_chunk(c, scorer, job.batch_size)),
        ]
    )
    chunks = _chunks(source, text_columns, job)
    true, pred, expected = [], [], []
    for chunk in pipeline.run(chunks):
        true.append(_label_index(chunk.frame[job.label_column].to_numpy(), labels, job))
        pred.append(chunk.probs.argmax(axis=1))
        expected.append(chunk.expected)
    if not true or sum(len(t) for t in true) == 0:
        raise UserError(f"{job.input}: no rows to evaluate")
    return rating_metrics(
        np.concatenate(true), np.concatenate(pred), np.concatenate(expected), labels
    )


def _chunks(source, text_columns, job: EvalJob):
    """Chunks of labelled rows; with a split file, only the rows of ``job.split``."""
    wanted = None
    if job.split_file is not None:
        wanted = read_split_file(job.split_file, source.count_rows()) == job.split
    start = 0
    for frame in source.batches(text_columns, [job.label_column], chunk_rows=job.chunk_rows):
        rows = len(frame)
        if wanted is not None:
            frame = frame.filter(pl.Series(wanted[start : start + rows]))
        start += rows
        if len(frame):
            yield Chunk(start - rows, frame)


def _label_index(values: np.ndarray, labels: np.ndarray, job: EvalJob) -> np.ndarray:
    values = values.astype(np.float64)
    index = np.searchsorted(labels, values)
    inside = index < len(labels)
    ok = inside & (labels[np.minimum(index, len(labels) - 1)] == values)
    if not ok.all():
        bad = values[~ok][:3].tolist()
        raise UserError(
            f"{job.input}: column {job.label_column!r} holds values outside the model's labels "
            f"{labels.tolist()} (e.g. {bad})"
        )
    return index


def format_metrics(metrics: Metrics, as_json: bool) -> str:
    if as_json:
        return json.dumps(metrics.to_dict(), indent=2)
    labels = [f"{v:g}" for v in metrics.labels]
    width = max(6, *(len(str(c)) + 1 for row in metrics.confusion for c in row))
    lines = [metrics.line(), "confusion (rows: true, columns: predicted)"]
    lines.append(" " * 6 + "".join(f"{x:>{width}}" for x in labels))
    for label, row in zip(labels, metrics.confusion, strict=True):
        lines.append(f"{label:>6}" + "".join(f"{c:>{width}}" for c in row))
    return "\n".join(lines)

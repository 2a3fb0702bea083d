"""`scorer eval`: score a labelled file through the production path and report quality."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from scorer.engines.local.pipeline import Pipeline, Stage
from scorer.errors import UserError
from scorer.io.labelled import read_split_file
from scorer.io.source import check_columns, open_source, resolve_text_columns
from scorer.progress import Progress
from scorer.runtime.cpus import available_cpus
from scorer.runtime.metrics import Metrics, rating_metrics
from scorer.runtime.model_dir import resolve_model_dir
from scorer.runtime.scoring import Chunk, encode_chunk, infer_chunk, open_model, text_columns_of
from scorer.text.encode import row_hashes


@dataclass(frozen=True)
class EvalJob:
    input: str
    model_dir: Path | None = None
    label_column: str = "Rating"
    text_columns: tuple[str, ...] | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    threads: int | None = None
    workers: int | None = None
    chunk_rows: int = 50_000
    split_file: Path | None = None
    split: str = "test"
    quiet: bool = True


def evaluate(job: EvalJob) -> Metrics:
    """Score a labelled file through the production path; warn when it holds the model's
    own training rows (their metrics are inflated)."""
    model = open_model(
        resolve_model_dir(job.model_dir), job.device, job.precision, job.threads, job.batch_size
    )
    card = model.card
    source = open_source(job.input)
    text_columns, text_note = resolve_text_columns(
        source.schema, job.text_columns or card.text_columns, explicit=bool(job.text_columns)
    )
    if text_note:
        _warn(text_note)
    check_columns(source, text_columns, [job.label_column])
    labels = np.asarray(card.labels)
    training = model.directory.training_rows()
    seen = [0, 0]

    def encode(chunk: Chunk) -> Chunk:
        if training is not None:
            texts = text_columns_of(chunk.table, text_columns)
            seen[0] += int(np.isin(row_hashes(texts), training).sum())
        return encode_chunk(
            chunk, text_columns, [job.label_column], model, decoded_lossily=source.kind == "csv"
        )

    pipeline = Pipeline(
        [
            Stage("tokenize", encode, job.workers or available_cpus()),
            Stage("infer", lambda c: infer_chunk(c, model)),
        ]
    )
    true, pred, expected = [], [], []
    with Progress(None, "rows", "evaluating", quiet=job.quiet) as progress:
        for chunk in pipeline.run(_chunks(source, text_columns, job)):
            values = chunk.table.column(job.label_column).to_numpy(zero_copy_only=False)
            true.append(_label_index(values, labels, job))
            pred.append(chunk.probs.argmax(axis=1))
            expected.append(chunk.expected)
            seen[1] += chunk.rows
            progress.update(chunk.rows)
    if not true or seen[1] == 0:
        raise UserError(f"{job.input}: no rows to evaluate")
    if seen[0]:
        # Rows are matched by their text: a held-out review whose text equals a training
        # review's (a duplicate, a one-word review) counts too, so only advise a split
        # when none was given.
        advice = (
            "evaluate held-out rows, e.g. --split-file F --split test"
            if job.split_file is None or job.split == "train"
            else "held-out rows whose text repeats a training row's"
        )
        _warn(
            f"{seen[0]:,} of {seen[1]:,} rows ({seen[0] / seen[1]:.1%}) have the text of a "
            f"row the model was trained on; their metrics are inflated ({advice})"
        )
    return rating_metrics(
        np.concatenate(true), np.concatenate(pred), np.concatenate(expected), labels
    )


def _warn(message: str) -> None:
    print(f"scorer: warning: {message}", file=sys.stderr, flush=True)


def _chunks(source, text_columns, job: EvalJob):
    """Chunks of labelled rows; with a split file, only the rows of ``job.split``."""
    wanted = None
    if job.split_file is not None:
        total = source.count_rows()
        if total is None:
            total = sum(
                t.num_rows for t in source.batches([job.label_column], [], chunk_rows=1 << 20)
            )
        wanted = read_split_file(job.split_file, total) == job.split
    columns = list(dict.fromkeys([job.label_column, *text_columns]))
    start = 0
    for table in source.batches(columns, text_columns, chunk_rows=job.chunk_rows):
        rows = table.num_rows
        if wanted is not None:
            table = table.filter(pa.array(wanted[start : start + rows]))
        start += rows
        if table.num_rows:
            yield Chunk(start - rows, table, table.num_rows)


def _label_index(values: np.ndarray, labels: np.ndarray, job: EvalJob) -> np.ndarray:
    try:
        values = values.astype(np.float64)
    except (TypeError, ValueError):
        raise UserError(
            f"{job.input}: column {job.label_column!r} must hold numbers (ratings)"
        ) from None
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

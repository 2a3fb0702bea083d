"""`scorer run`: stream reviews through the fast tokenizer and onnxruntime into Parquet.

Each input chunk becomes a part file in ``.OUTPUT.partial/`` (written atomically), so a run
killed at any moment resumes from its last finished chunk. When every chunk is done the
parts are re-cut into fixed-size row groups of the final file (so chunking never shows in
its bytes), which is renamed into place last; a manifest is written beside it.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from tqdm import tqdm

from scorer import __version__
from scorer.errors import UserError
from scorer.io import atomic_write_text
from scorer.model_dir import ModelDir
from scorer.output import OutputSpec, assemble, part_name, read_parts, write_part
from scorer.pipeline import Pipeline
from scorer.session import OnnxScorer, open_scorer
from scorer.sources import (
    INVALID_UTF8_MARK,
    Source,
    check_columns,
    default_keep_columns,
    open_source,
)
from scorer.vocab import Vocab

STATE = "state.json"


@dataclass(frozen=True)
class RunJob:
    input: str
    model_dir: Path
    out: Path
    text_columns: tuple[str, ...] | None = None
    keep_columns: tuple[str, ...] | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 2048
    threads: int | None = None
    chunk_rows: int = 50_000
    resume: bool = False
    overwrite: bool = False
    quiet: bool = False


@dataclass
class RunSummary:
    out: Path
    rows: int
    seconds: float
    device: str
    provider: str
    precision: str
    resumed_rows: int = 0
    lossy_rows: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        resumed = f" ({self.resumed_rows:,} from an earlier run)" if self.resumed_rows else ""
        lossy = f"; {self.lossy_rows:,} rows had invalid UTF-8" if self.lossy_rows else ""
        return (
            f"scored {self.rows:,} rows{resumed} in {self.seconds:.1f}s "
            f"({self.rows_per_s:,.0f} rows/s) on {self.device} ({self.precision}) "
            f"-> {self.out}{lossy}"
        )


def partial_dir(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial")


def manifest_path(out: Path) -> Path:
    return out.with_name(out.name + ".manifest.json")


@dataclass(frozen=True)
class Chunk:
    start: int
    frame: pl.DataFrame
    ids: np.ndarray | None = None
    lengths: np.ndarray | None = None
    probs: np.ndarray | None = None
    expected: np.ndarray | None = None
    lossy_rows: int = 0


def encode_chunk(chunk: Chunk, vocab: Vocab, card, threads: int | None) -> Chunk:
    enc = vocab.encode(
        chunk.frame["text"],
        max_len=card.tokenizer.max_len,
        keep_whitespace=card.tokenizer.keep_whitespace,
        threads=threads,
    )
    # CSV is decoded lossily: invalid UTF-8 became U+FFFD, counted here and reported.
    lossy = int(chunk.frame["text"].str.contains(INVALID_UTF8_MARK, literal=True).sum())
    return Chunk(chunk.start, chunk.frame.drop("text"), enc.ids, enc.lengths, lossy_rows=lossy)


def infer_chunk(chunk: Chunk, scorer: OnnxScorer, batch_size: int) -> Chunk:
    """Rows sorted by length and batched (little padding), results restored to input order."""
    assert chunk.ids is not None and chunk.lengths is not None
    n = len(chunk.lengths)
    labels = len(scorer.card["labels"])
    probs = np.empty((n, labels), dtype=np.float32)
    expected = np.empty(n, dtype=np.float32)
    order = np.argsort(chunk.lengths, kind="stable")
    for start in range(0, n, batch_size):
        rows = order[start : start + batch_size]
        lengths = chunk.lengths[rows].astype(np.int64)
        # Widths rounded up to a multiple of 8 (exact: padding is masked by lengths) keep the
        # number of distinct shapes small, so onnxruntime's arena reuses its blocks.
        width = min(-(-max(int(lengths.max()), 1) // 8) * 8, chunk.ids.shape[1])
        probs[rows], expected[rows] = scorer.run(chunk.ids[rows, :width], lengths)
    return Chunk(
        chunk.start, chunk.frame, probs=probs, expected=expected, lossy_rows=chunk.lossy_rows
    )


def open_model(
    path: Path, device: str, precision: str, threads: int | None
) -> tuple[ModelDir, Vocab, OnnxScorer]:
    """The model directory, its checked vocabulary, and an inference session whose ONNX
    file was exported with that very vocabulary."""
    model_dir = ModelDir.open(path)
    vocab = model_dir.vocab()
    scorer = open_scorer(model_dir.path, device=device, precision=precision, threads=threads)
    if scorer.vocab_sha256 != vocab.sha256:
        raise UserError(
            f"{scorer.path} was exported with another vocabulary than {model_dir.path}/vocab.json"
        )
    return model_dir, vocab, scorer


def _check_output(job: RunJob) -> None:
    out = job.out
    if not out.parent.is_dir():
        raise UserError(f"output directory {out.parent} does not exist")
    if out.suffix.lower() not in (".parquet", ".pq"):
        raise UserError(f"{out}: the output is Parquet; name it *.parquet")
    if out.exists() and not (job.overwrite or job.resume):
        raise UserError(f"{out} already exists; pass --overwrite (or --resume)")


def _run_state(job: RunJob, source: Source, scorer: OnnxScorer, spec: OutputSpec) -> dict:
    return {
        "inputs": [f.fingerprint() for f in source.files],
        "model_sha256": scorer.sha256,
        "text_columns": list(spec.text_columns),
        "keep_columns": list(spec.keep_columns),
        "version": __version__,
    }


def _prepare_parts(job: RunJob, state: dict) -> tuple[Path, int]:
    """The parts directory, and how many input rows finished parts already cover."""
    parts = partial_dir(job.out)
    if job.resume and (parts / STATE).is_file():
        saved = json.loads((parts / STATE).read_text())
        if saved != state:
            raise UserError(
                f"cannot resume into {job.out}: the input files, model or columns changed "
                "since the interrupted run (rerun with --overwrite)"
            )
        done = read_parts(parts)
        return parts, done[-1].end if done else 0
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir()
    atomic_write_text(parts / STATE, json.dumps(state, indent=1))
    return parts, 0


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread its own malloc arena and rarely returns their memory, so a
    long multi-threaded run's RSS creeps up; two arenas keep it flat. No-op elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def run_scoring(job: RunJob) -> RunSummary:
    began = time.perf_counter()
    limit_malloc_arenas()
    _check_output(job)
    if job.batch_size < 1 or job.chunk_rows < 1:
        raise UserError("--batch-size and --chunk-rows must be >= 1")
    model_dir, vocab, scorer = open_model(job.model_dir, job.device, job.precision, job.threads)
    source = open_source(job.input)
    text_columns = job.text_columns or model_dir.card.text_columns
    keep = job.keep_columns if job.keep_columns is not None else default_keep_columns(source.schema)
    check_columns(source, text_columns, keep)
    spec = OutputSpec.create(text_columns, keep, source.schema, model_dir.card, scorer)

    if job.resume and job.out.exists() and not partial_dir(job.out).exists():
        raise UserError(f"{job.out} is already complete; nothing to resume")
    parts, done_rows = _prepare_parts(job, _run_state(job, source, scorer, spec))
    card = model_dir.card
    pipeline = Pipeline(
        [
            ("tokenize", lambda c: encode_chunk(c, vocab, card, job.threads)),
            ("infer", lambda c: infer_chunk(c, scorer, job.batch_size)),
        ]
    )
    chunks = _numbered(source, text_columns, keep, job.chunk_rows, done_rows)
    total = _row_count(source)
    write_seconds = 0.0
    with tqdm(
        total=total, initial=done_rows, unit="rows", unit_scale=True, disable=job.quiet or None
    ) as bar:
        for chunk in pipeline.run(chunks):
            t0 = time.perf_counter()
            write_part(
                parts / part_name(chunk.start, len(chunk.frame)),
                spec.table(chunk.frame, chunk.probs, chunk.expected, chunk.start),
                lossy_rows=chunk.lossy_rows,
            )
            write_seconds += time.perf_counter() - t0
            bar.update(len(chunk.frame))
    t0 = time.perf_counter()
    rows, lossy = assemble(parts, job.out, spec)
    write_seconds += time.perf_counter() - t0
    seconds = time.perf_counter() - began
    summary = RunSummary(
        out=job.out,
        rows=rows,
        seconds=seconds,
        device=scorer.device,
        provider=scorer.provider,
        precision=scorer.precision,
        resumed_rows=done_rows,
        lossy_rows=lossy,
        stage_seconds={**pipeline.seconds, "write": write_seconds},
    )
    _write_manifest(job, source, scorer, summary)
    shutil.rmtree(parts, ignore_errors=True)
    return summary


def _numbered(source: Source, text_columns, keep, chunk_rows: int, skip: int):
    start = skip
    for frame in source.batches(text_columns, keep, chunk_rows=chunk_rows, skip_rows=skip):
        yield Chunk(start, frame)
        start += len(frame)


def _row_count(source: Source) -> int | None:
    """The progress bar's total, when it is cheap to know (Parquet footers)."""
    return source.count_rows() if source.kind == "parquet" else None


def _write_manifest(job: RunJob, source: Source, scorer: OnnxScorer, summary: RunSummary):
    manifest = {
        "scorer_version": __version__,
        "output": str(job.out.resolve()),
        "inputs": [f.fingerprint() for f in source.files],
        "model": {
            "dir": str(Path(job.model_dir).resolve()),
            "file": str(scorer.path.resolve()),
            "sha256": scorer.sha256,
            "precision": scorer.precision,
        },
        "device": summary.device,
        "provider": summary.provider,
        "rows": summary.rows,
        "resumed_rows": summary.resumed_rows,
        "lossy_utf8_rows": summary.lossy_rows,
        "seconds": summary.seconds,
        "rows_per_s": summary.rows_per_s,
        "stage_seconds": summary.stage_seconds,
        "pid": os.getpid(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(manifest_path(job.out), json.dumps(manifest, indent=2) + "\n")

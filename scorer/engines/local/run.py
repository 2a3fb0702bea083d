"""`scorer run`: stream reviews through the tokenizer kernel and onnxruntime into Parquet.

Each input chunk becomes a part file in ``.OUTPUT.partial/`` (written and fsynced under a
temporary name, then renamed), so a run killed at any moment resumes from its whole parts.
The partial directory is locked for the run: a second run on the same output is refused and
never touches its parts. When every chunk is done the parts are re-cut into fixed-size row
groups of the final file (so chunking never shows in its bytes), which is renamed into place
last; a manifest is written beside it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from scorer import __version__
from scorer.engines.local.pipeline import Pipeline, Stage
from scorer.errors import UserError
from scorer.io.files import atomic_write_text, lock_output
from scorer.io.source import (
    Source,
    check_columns,
    default_keep_columns,
    open_source,
    resolve_text_columns,
)
from scorer.progress import Progress
from scorer.runtime.cpus import available_cpus
from scorer.runtime.malloc import limit_arenas
from scorer.runtime.model_dir import resolve_model_dir
from scorer.runtime.output import OutputSpec, assemble, part_name, trusted_parts, write_part
from scorer.runtime.scoring import Chunk, LoadedModel, encode_chunk, infer_chunk, open_model

STATE = "state.json"


class StateError(Exception):
    """The partial directory's state file cannot be read: kept as it is for inspection."""


@dataclass(frozen=True)
class RunJob:
    input: str
    model_dir: Path | None = None
    out: Path | None = None
    text_columns: tuple[str, ...] | None = None
    keep_columns: tuple[str, ...] | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    threads: int | None = None
    workers: int | None = None
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
    model: str = ""
    resumed_rows: int = 0
    lossy_rows: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    already_complete: bool = False

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        if self.already_complete:
            return f"{self.out} is already complete ({self.rows:,} rows); nothing to resume"
        resumed = f" ({self.resumed_rows:,} from an earlier run)" if self.resumed_rows else ""
        lossy = f"; {self.lossy_rows:,} rows had invalid UTF-8" if self.lossy_rows else ""
        return (
            f"scored {self.rows:,} rows{resumed} in {self.seconds:.1f}s "
            f"({self.rows_per_s:,.0f} rows/s) on {self.device} ({self.precision}) with "
            f"{self.model} -> {self.out}{lossy}"
        )


def partial_dir(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial")


def manifest_path(out: Path) -> Path:
    return out.with_name(out.name + ".manifest.json")


def output_beside(spec: str, first: Path) -> Path:
    """The default output, for both engines: beside a single input file, named after it;
    for a folder or glob, beside the folder holding its files and named after it, never
    inside it, where the next run over that folder would read it as input."""
    if Path(spec).is_dir() or any(ch in spec for ch in "*?["):
        folder = first.resolve().parent
        return folder.parent / f"{folder.name}.scores.parquet"
    return first.with_name(first.stem + ".scores.parquet")


def note(message: str) -> None:
    print(f"scorer: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Plan:
    """What a run reads and writes, resolved and checked before anything is written."""

    source: Source
    out: Path
    text_columns: tuple[str, ...]
    keep: tuple[str, ...]
    spec: OutputSpec
    model: LoadedModel
    model_dir: Path


def plan_run(job: RunJob, model: LoadedModel | None = None) -> Plan:
    if job.chunk_rows < 1:
        raise UserError("--chunk-rows must be >= 1")
    source = open_source(job.input)
    if job.out is None and source.files[0].remote:
        raise UserError(f"{job.input} is in an object store: name the output with --out")
    out = Path(job.out) if job.out is not None else output_beside(job.input, source.files[0].path)
    _check_output(job, out)
    model_dir = resolve_model_dir(job.model_dir)
    if model is None:
        model = open_model(model_dir, job.device, job.precision, job.threads, job.batch_size)
    for message in model.scorer.notes:
        note(message)
    text_columns, text_note = resolve_text_columns(
        source.schema, job.text_columns or model.card.text_columns, explicit=bool(job.text_columns)
    )
    if text_note:
        note(text_note)
    keep = tuple(
        job.keep_columns if job.keep_columns is not None else default_keep_columns(source.schema)
    )
    check_columns(source, text_columns, keep)
    kept = pa.schema(
        [
            pa.field(c, pa.large_string())
            if pa.types.is_string(source.schema.field(c).type)
            or pa.types.is_large_string(source.schema.field(c).type)
            or pa.types.is_string_view(source.schema.field(c).type)
            else source.schema.field(c)
            for c in keep
        ]
    )
    spec = OutputSpec.create(kept, model.card, model.scorer)
    return Plan(source, out, tuple(text_columns), keep, spec, model, model_dir)


def run_scoring(job: RunJob, model: LoadedModel | None = None) -> RunSummary:
    """Score ``job.input`` into one Parquet file (see the module docstring).

    ``model`` replaces the model job.model_dir names (benchmarks time the host side alone
    with a no-op scorer).
    """
    began = time.perf_counter()
    limit_arenas()
    plan = plan_run(job, model)
    with lock_output(partial_dir(plan.out), label=plan.out, directory=True):
        if job.resume and plan.out.exists() and not _has_parts_or_state(plan.out):
            summary = _already_complete(plan, began)
            _remove_if_empty(partial_dir(plan.out))
            return summary
        done_rows = _prepare_parts(job, plan)
        summary = _score(job, plan, done_rows, began)
        _write_manifest(job, plan, summary)
        shutil.rmtree(partial_dir(plan.out), ignore_errors=True)
    return summary


def _score(job: RunJob, plan: Plan, done_rows: int, began: float) -> RunSummary:
    parts = partial_dir(plan.out)
    scorer = plan.model.scorer
    workers = job.workers or available_cpus()
    if workers < 1:
        raise UserError("--workers must be >= 1")

    def write(chunk: Chunk) -> int:
        assert chunk.probs is not None and chunk.expected is not None
        table = plan.spec.table(chunk.table, chunk.probs, chunk.expected, chunk.start)
        write_part(parts / part_name(chunk.start, chunk.rows), table, lossy_rows=chunk.lossy_rows)
        return chunk.rows

    lossy = plan.source.kind == "csv"
    pipeline = Pipeline(
        [
            Stage(
                "tokenize",
                lambda c: encode_chunk(
                    c, plan.text_columns, plan.keep, plan.model, decoded_lossily=lossy
                ),
                workers,
            ),
            Stage("infer", lambda c: infer_chunk(c, plan.model)),
            Stage("write", write, workers),
        ]
    )
    chunks = _numbered(plan, job.chunk_rows, done_rows)
    total = plan.source.count_rows()
    with Progress(total, "rows", "scoring", initial=done_rows, quiet=job.quiet) as progress:
        for written in pipeline.run(chunks):
            progress.update(written)
    t0 = time.perf_counter()
    rows, lossy = assemble(parts, plan.out, plan.spec)
    stages = {**pipeline.seconds, "assemble": time.perf_counter() - t0}
    return RunSummary(
        out=plan.out,
        rows=rows,
        seconds=time.perf_counter() - began,
        device=scorer.device,
        provider=scorer.provider,
        precision=scorer.precision,
        model=_model_name(plan),
        resumed_rows=done_rows,
        lossy_rows=lossy,
        stage_seconds=stages,
    )


def _remove_if_empty(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.name != "lock.pid":
            return
    shutil.rmtree(directory, ignore_errors=True)


def _model_name(plan: Plan) -> str:
    return f"{plan.model_dir.name}/{plan.model.scorer.path.name}"


def _numbered(plan: Plan, chunk_rows: int, skip: int):
    start = skip
    columns = list(dict.fromkeys([*plan.keep, *plan.text_columns]))
    for table in plan.source.batches(
        columns, plan.text_columns, chunk_rows=chunk_rows, skip_rows=skip
    ):
        yield Chunk(start, table, table.num_rows)
        start += table.num_rows


def _check_output(job: RunJob, out: Path) -> None:
    if not out.parent.is_dir():
        raise UserError(f"output directory {out.parent} does not exist")
    if out.suffix.lower() not in (".parquet", ".pq"):
        raise UserError(f"{out}: the output is Parquet; name it *.parquet")
    if job.resume and job.overwrite:
        raise UserError("--resume and --overwrite contradict each other; pick one")
    if out.exists() and not (job.overwrite or job.resume):
        raise UserError(f"{out} already exists; pass --overwrite (or --resume)")


def _has_parts_or_state(out: Path) -> bool:
    parts = partial_dir(out)
    return parts.is_dir() and any(p.name != "lock.pid" for p in parts.iterdir())


def _run_state(plan: Plan) -> dict:
    """What must be unchanged for a resumed run to give the bytes of an uninterrupted one
    (chunk and batch sizes, workers and threads never change the output's bytes)."""
    return {
        "inputs": [f.fingerprint() for f in plan.source.files],
        "model_sha256": plan.model.scorer.sha256,
        "model_file": plan.model.scorer.path.name,
        "text_columns": list(plan.text_columns),
        "keep_columns": list(plan.keep),
        "version": __version__,
    }


def _read_state(path: Path) -> dict:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StateError(
            f"cannot read {path}: {exc}; the partial output is kept (rerun with --overwrite "
            "to start over)"
        ) from exc
    if not isinstance(state, dict):
        raise StateError(f"{path} does not hold a JSON object; the partial output is kept")
    return state


def _prepare_parts(job: RunJob, plan: Plan) -> int:
    """How many input rows the trusted parts already cover; a fresh run starts empty."""
    parts = partial_dir(plan.out)
    state = _run_state(plan)
    if job.resume and (parts / STATE).is_file():
        saved = _read_state(parts / STATE)
        _check_resumable(saved, state, plan)
        trusted, stale = trusted_parts(parts)
        for path in stale:
            path.unlink()
        return trusted[-1].end if trusted else 0
    for entry in parts.iterdir():
        if entry.name != "lock.pid":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    atomic_write_text(parts / STATE, json.dumps(state, indent=1))
    return 0


def _check_resumable(saved: dict, state: dict, plan: Plan) -> None:
    what = "cannot resume into " + str(plan.out)
    old_inputs = {i.get("path"): i for i in saved.get("inputs", [])}
    for now in state["inputs"]:
        before = old_inputs.get(now["path"])
        if before is None:
            raise UserError(f"{what}: {now['path']} was not an input of the interrupted run")
        if before != now:
            raise UserError(
                f"{what}: {now['path']} changed since the interrupted run (size or mtime); "
                "rerun with --overwrite"
            )
    if len(old_inputs) != len(state["inputs"]):
        raise UserError(f"{what}: the input files differ from the interrupted run's")
    old_file = saved.get("model_file")
    old_graph = plan.model.card.graphs.get(old_file or "", {})
    if old_file != state["model_file"] and old_graph.get("sha256") == saved.get("model_sha256"):
        # Another graph of this same model (another --device or --precision): scores would mix.
        raise UserError(
            f"{what}: the interrupted run scored with {saved['model_file']}, this one would use "
            f"{state['model_file']}; resume with its --device and --precision, or rerun with "
            "--overwrite"
        )
    for key, label in (
        # The graph's bytes: a state file from before model_file was recorded resumes too.
        ("model_sha256", "the model"),
        ("text_columns", "the text columns"),
        ("keep_columns", "the kept columns"),
        ("version", "the scorer version"),
    ):
        if saved.get(key) != state[key]:
            raise UserError(
                f"{what}: {label} changed since the interrupted run; rerun with --overwrite"
            )


def _already_complete(plan: Plan, began: float) -> RunSummary:
    """--resume on a finished output is a no-op, if the output is this input's and model's."""
    try:
        manifest = json.loads(manifest_path(plan.out).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = {}
    same = (
        manifest.get("inputs") == [f.fingerprint() for f in plan.source.files]
        and manifest.get("model", {}).get("sha256") == plan.model.scorer.sha256
    )
    if not same:
        raise UserError(
            f"{plan.out} exists and was not scored from this input and model (per its "
            "manifest); nothing to resume: pass --overwrite to replace it"
        )
    scorer = plan.model.scorer
    return RunSummary(
        out=plan.out,
        rows=int(manifest.get("rows", 0)),
        seconds=time.perf_counter() - began,
        device=scorer.device,
        provider=scorer.provider,
        precision=scorer.precision,
        model=_model_name(plan),
        already_complete=True,
    )


def _write_manifest(job: RunJob, plan: Plan, summary: RunSummary) -> None:
    scorer = plan.model.scorer
    manifest = {
        "scorer_version": __version__,
        "output": str(plan.out.resolve()),
        "inputs": [f.fingerprint() for f in plan.source.files],
        "model": {
            "dir": str(plan.model_dir.resolve()),
            "file": str(scorer.path.resolve()),
            "sha256": scorer.sha256,
            "precision": scorer.precision,
        },
        "device": summary.device,
        "provider": summary.provider,
        "text_columns": list(plan.text_columns),
        "keep_columns": list(plan.keep),
        "batch_size": scorer.batch_size,
        "chunk_rows": job.chunk_rows,
        "workers": job.workers or available_cpus(),
        "rows": summary.rows,
        "resumed_rows": summary.resumed_rows,
        "lossy_utf8_rows": summary.lossy_rows,
        "seconds": summary.seconds,
        "rows_per_s": summary.rows_per_s,
        "stage_seconds": summary.stage_seconds,
        "notes": list(scorer.notes),
        "pid": os.getpid(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(manifest_path(plan.out), json.dumps(manifest, indent=2) + "\n")

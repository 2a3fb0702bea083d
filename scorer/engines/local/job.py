"""What a `scorer run` is asked (``RunJob``), what it resolves that to before writing
anything (``Plan``: input, output, columns, model, the earlier output, the drift profile),
and what it reports (``RunSummary``)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from scorer.engines.local.incremental import (
    check_id_column,
)
from scorer.errors import UserError
from scorer.io.source import (
    Source,
    check_columns,
    default_keep_columns,
    open_source,
    resolve_text_columns,
)
from scorer.runtime.model_dir import resolve_model_dir
from scorer.runtime.output import OutputSpec
from scorer.runtime.profile import PROFILE_FILE, Drift, DriftThresholds, Profile
from scorer.runtime.scoring import (
    Counts,
    LoadedModel,
    open_model,
)


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
    id_column: str | None = None
    since: Path | None = None
    rescore_all: bool = False
    drift: tuple[str, ...] = ()  # --drift KEY=VALUE settings of DriftThresholds
    fail_on_drift: bool = False


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
    counts: Counts | None = None  # with --since: rows reused, edited and new
    profile: Profile | None = None
    drift: Drift | None = None
    retried: int = 0  # Ray: task attempts beyond the first (lost actors or nodes)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        if self.already_complete:
            return f"{self.out} is already complete ({self.rows:,} rows); nothing to resume"
        resumed = f" ({self.resumed_rows:,} from an earlier run)" if self.resumed_rows else ""
        notes = f"; {self.lossy_rows:,} rows had invalid UTF-8" if self.lossy_rows else ""
        if self.retried:
            notes += f"; {self.retried:,} Ray task(s) retried"
        if self.counts is not None:
            c = self.counts
            resumed += (
                f" ({c.new + c.edited:,} new or edited scored, {c.reused:,} kept from --since"
                f"{', these counts since the resume' if self.resumed_rows else ''})"
            )
        return (
            f"scored {self.rows:,} rows{resumed} in {self.seconds:.1f}s "
            f"({self.rows_per_s:,.0f} rows/s) on {self.device} ({self.precision}) with "
            f"{self.model} -> {self.out}{notes}"
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
    id_column: str | None = None
    since: Path | None = None  # None: every row is scored
    reference: Profile | None = None  # the model's validation rows
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)


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
    since = _check_incremental(job, source)
    if job.id_column is not None and job.id_column not in keep:
        keep = (job.id_column, *keep)
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
    spec = OutputSpec.create(
        kept,
        model.card,
        model.scorer,
        text_columns=tuple(text_columns),
        id_column=job.id_column,
    )
    if since is not None and model.scorer.precision == "int8":
        # Dynamic quantization scales each batch by its own range: a row's int8 scores
        # depend on the rows scored beside it, so kept and rescored rows would not match
        # a full run.
        raise UserError(
            "--since with the int8 graph: its scores depend on the rows batched together, so "
            "an incremental output would differ from a full run; use --precision fp32 (or "
            "--rescore-all)"
        )
    reference = model.directory.profile()
    thresholds = DriftThresholds().with_settings(job.drift)
    if job.fail_on_drift and reference is None:
        raise UserError(
            f"--fail-on-drift: {model_dir} has no {PROFILE_FILE} to measure drift against "
            "(a model trained before profiles were kept; train it again)"
        )
    return Plan(
        source,
        out,
        tuple(text_columns),
        keep,
        spec,
        model,
        model_dir,
        job.id_column,
        since,
        reference,
        thresholds,
    )


def _check_incremental(job: RunJob, source: Source) -> Path | None:
    """The earlier output to take scores from, if any (checked against the model later)."""
    if job.since is not None and job.id_column is None:
        raise UserError("--since needs --id-col: rows are matched to the earlier output by id")
    if job.rescore_all and job.since is None:
        raise UserError("--rescore-all is for --since (without it every row is scored)")
    if job.id_column is not None:
        check_id_column(source, job.id_column)
    if job.since is None or job.rescore_all:
        return None
    if not Path(job.since).is_file():
        raise UserError(f"--since {job.since}: no such file")
    return Path(job.since)


def _check_output(job: RunJob, out: Path) -> None:
    if not out.parent.is_dir():
        raise UserError(f"output directory {out.parent} does not exist")
    if out.suffix.lower() not in (".parquet", ".pq"):
        raise UserError(f"{out}: the output is Parquet; name it *.parquet")
    if job.resume and job.overwrite:
        raise UserError("--resume and --overwrite contradict each other; pick one")
    if out.exists() and not (job.overwrite or job.resume):
        raise UserError(f"{out} already exists; pass --overwrite (or --resume)")


def model_name(plan: Plan) -> str:
    return f"{plan.model_dir.name}/{plan.model.scorer.path.name}"

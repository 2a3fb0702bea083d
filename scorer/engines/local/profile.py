"""`scorer profile`: what an input looks like to the model, and how far it drifted from the
model's validation rows, without writing scores.

The rows go through the same tokenizer and graph as ``scorer run`` (``encode_chunk`` and
``infer_chunk`` in a pipeline) and their profile is the one a run writes to its manifest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from scorer.engines.local.pipeline import Pipeline, Stage
from scorer.io.source import open_source, resolve_text_columns
from scorer.progress import Progress
from scorer.runtime.cpus import available_cpus
from scorer.runtime.model_dir import resolve_model_dir
from scorer.runtime.profile import QUANTILES, Drift, DriftThresholds, Profile, compare
from scorer.runtime.scoring import Chunk, LoadedModel, encode_chunk, infer_chunk, open_model


@dataclass(frozen=True)
class ProfileJob:
    input: str
    model_dir: Path | None = None
    text_columns: tuple[str, ...] | None = None
    device: str = "auto"
    precision: str = "auto"
    chunk_rows: int = 50_000
    workers: int | None = None
    quiet: bool = False
    drift: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProfileResult:
    input: str
    model: str
    profile: Profile
    reference: Profile | None
    drift: Drift | None
    seconds: float

    def line(self) -> str:
        verdict = self.drift.line() if self.drift else "the model has no profile to compare with"
        return (
            f"profiled {self.profile.rows:,} rows of {self.input} in {self.seconds:.1f}s: {verdict}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "model": self.model,
            "profile": self.profile.to_dict(),
            "model_profile": self.reference.to_dict() if self.reference else None,
            "drift": self.drift.to_dict() if self.drift else None,
        }

    def table(self) -> str:
        """The two profiles side by side, then the drift measures."""
        columns = [("input", self.profile)]
        if self.reference is not None:
            columns.insert(0, ("model (validation)", self.reference))
        rows: list[tuple[str, list[str]]] = [
            ("rows", [f"{p.rows:,}" for _, p in columns]),
            ("empty-text share", [f"{p.empty_share:.4f}" for _, p in columns]),
            ("unknown-token share", [f"{p.unknown_share:.4f}" for _, p in columns]),
            (
                "tokens " + "/".join(f"p{round(q * 100)}" for q in QUANTILES),
                ["/".join(str(v) for v in p.length_quantiles()) for _, p in columns],
            ),
            *[
                (f"predicted {label:g}", [f"{p.predicted_shares()[i]:.4f}" for _, p in columns])
                for i, label in enumerate(self.profile.labels)
            ],
            ("mean expected rating", [f"{p.mean_expected:.3f}" for _, p in columns]),
        ]
        if self.drift is not None:
            for m in self.drift.measures:
                if m.name in ("predicted ratings", "token counts"):
                    mark = "  drifted" if m.drifted and self.drift.judged else ""
                    rows.append((f"PSI {m.name}", ["", f"{m.statistic:.4f}{mark}"]))
        width = max(len(name) for name, _ in rows) + 2
        cells = [max(len(h), *(len(v[i]) for _, v in rows)) + 2 for i, (h, _) in enumerate(columns)]
        lines = [
            "".ljust(width) + "".join(h.rjust(c) for (h, _), c in zip(columns, cells, strict=True))
        ]
        lines += [
            name.ljust(width) + "".join(v.rjust(c) for v, c in zip(values, cells, strict=False))
            for name, values in rows
        ]
        return "\n".join(lines)


def profile_input(job: ProfileJob, model: LoadedModel | None = None) -> ProfileResult:
    """Tokenize and score ``job.input`` chunk by chunk; keep only the profile."""
    began = time.perf_counter()
    source = open_source(job.input)
    model_dir = resolve_model_dir(job.model_dir)
    if model is None:
        model = open_model(model_dir, job.device, job.precision)
    text_columns, _ = resolve_text_columns(
        source.schema, job.text_columns or model.card.text_columns, explicit=bool(job.text_columns)
    )
    thresholds = DriftThresholds().with_settings(job.drift)
    reference = model.directory.profile()
    profile = empty_profile(model)
    lossy = source.kind == "csv"
    workers = job.workers or available_cpus()
    pipeline = Pipeline(
        [
            Stage(
                "tokenize",
                lambda c: encode_chunk(c, text_columns, (), model, decoded_lossily=lossy),
                workers,
            ),
            Stage("infer", lambda c: infer_chunk(c, model)),
        ]
    )

    def chunks():
        start = 0
        for table in source.batches(text_columns, text_columns, chunk_rows=job.chunk_rows):
            yield Chunk(start, table, table.num_rows)
            start += table.num_rows

    with Progress(source.count_rows(), "rows", "profiling", quiet=job.quiet) as progress:
        for chunk in pipeline.run(chunks()):
            assert chunk.profile is not None
            profile.add(chunk.profile)
            progress.update(chunk.rows)
    drift = compare(reference, profile, thresholds) if reference is not None else None
    return ProfileResult(
        source.describe(),
        str(model_dir),
        profile,
        reference,
        drift,
        time.perf_counter() - began,
    )


def empty_profile(model: LoadedModel) -> Profile:
    card = model.card
    return Profile(tuple(float(v) for v in card.labels), card.tokenizer.max_len)


def profile_table(table: pa.Table, text_columns: tuple[str, ...], model: LoadedModel) -> Profile:
    """The profile of a table's rows in one go (the bundled model's validation rows)."""
    chunk = infer_chunk(
        encode_chunk(Chunk(0, table, table.num_rows), text_columns, (), model), model
    )
    assert chunk.profile is not None
    profile = empty_profile(model)
    profile.add(chunk.profile)
    return profile

"""`scorer run`: stream reviews through the tokenizer kernel and onnxruntime into Parquet.

Each input chunk becomes a part file in ``.OUTPUT.partial/`` (written and fsynced under a
temporary name, then renamed), so a run killed at any moment resumes from its whole parts.
The partial directory is locked for the run: a second run on the same output is refused and
never touches its parts. When every chunk is done the parts are re-cut into fixed-size row
groups of the final file (so chunking never shows in its bytes), which is renamed into place
last; a manifest is written beside it.

With ``--id-col`` the output also holds each row's text hash, and ``--since`` an earlier such
output lets the run keep the scores of rows whose id and text did not change
(``scorer.engines.local.incremental``). Every run profiles the rows it scores
(``scorer.runtime.profile``) into its manifest and compares them with the model's profile.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace

from scorer.engines.local.incremental import (
    PreviousScores,
    check_unique_ids,
    hash_chunk,
)
from scorer.engines.local.job import (
    Plan,
    RunJob,
    RunSummary,
    manifest_path,
    model_name,
    note,
    output_beside,
    partial_dir,
    plan_run,
)
from scorer.engines.local.manifest import write_manifest
from scorer.engines.local.pipeline import Pipeline, Stage
from scorer.engines.local.resume import (
    STATE,
    StateError,
    already_complete,
    has_parts_or_state,
    prepare_parts,
    remove_if_empty,
)
from scorer.errors import DriftFailed, UserError
from scorer.io.files import lock_output
from scorer.progress import Progress
from scorer.runtime.cpus import available_cpus
from scorer.runtime.malloc import limit_arenas
from scorer.runtime.output import assemble, part_name, write_part
from scorer.runtime.profile import Profile, compare
from scorer.runtime.scoring import (
    Chunk,
    Counts,
    LoadedModel,
    encode_chunk,
    infer_chunk,
)


def run_scoring(job: RunJob, model: LoadedModel | None = None) -> RunSummary:
    """Score ``job.input`` into one Parquet file (see the module docstring).

    ``model`` replaces the model job.model_dir names (benchmarks time the host side alone
    with a no-op scorer).
    """
    began = time.perf_counter()
    limit_arenas()
    plan = plan_run(job, model)
    workers = job.workers or available_cpus()
    # Refusals about the ids and the earlier output come before the lock creates anything.
    if plan.id_column is not None:
        check_unique_ids(plan.source, plan.id_column)
    previous = (
        PreviousScores(
            plan.since, plan.spec, plan.text_columns, plan.id_column, cache_groups=workers + 2
        )
        if plan.since is not None and plan.id_column is not None
        else None
    )
    try:
        with lock_output(partial_dir(plan.out), label=plan.out, directory=True):
            if job.resume and plan.out.exists() and not has_parts_or_state(plan.out):
                summary = already_complete(plan, began)
                remove_if_empty(partial_dir(plan.out))
                return summary
            done_rows = prepare_parts(job, plan)
            summary = _score(job, plan, done_rows, began, previous)
            write_manifest(job, plan, summary, previous.rows if previous is not None else None)
            shutil.rmtree(partial_dir(plan.out), ignore_errors=True)
    finally:
        if previous is not None:
            previous.close()
    # A model trained before profiles were kept has none: nothing to say (manifest: null).
    if summary.drift is not None:
        if summary.drift.drifted and job.fail_on_drift:
            raise DriftFailed(f"{summary.drift.line()} (scores written to {plan.out})")
        note(summary.drift.line())
    return summary


def _score(
    job: RunJob, plan: Plan, done_rows: int, began: float, previous: PreviousScores | None
) -> RunSummary:
    parts = partial_dir(plan.out)
    scorer = plan.model.scorer
    workers = job.workers or available_cpus()
    if workers < 1:
        raise UserError("--workers must be >= 1")

    def write(chunk: Chunk) -> Chunk:
        assert chunk.probs is not None and chunk.expected is not None
        table = plan.spec.table(chunk.table, chunk.probs, chunk.expected, chunk.start, chunk.hashes)
        write_part(
            parts / part_name(chunk.start, chunk.rows),
            table,
            lossy_rows=chunk.lossy_rows,
            interim=True,
        )
        return replace(chunk, table=None, probs=None, expected=None, hashes=None)

    def match(chunk: Chunk) -> Chunk:
        if plan.id_column is None:
            return chunk
        if previous is None:
            return hash_chunk(chunk, plan.text_columns)
        return previous.match(chunk, plan.text_columns)

    lossy = plan.source.kind == "csv"
    pipeline = Pipeline(
        [
            # Matching to an earlier output and tokenizing share a stage: fewer chunks of
            # text wait between stages, and both run on every worker.
            Stage(
                "tokenize",
                lambda c: encode_chunk(
                    match(c), plan.text_columns, plan.keep, plan.model, decoded_lossily=lossy
                ),
                workers,
            ),
            Stage("infer", lambda c: infer_chunk(c, plan.model)),
            Stage("write", write, workers),
        ]
    )
    chunks = _numbered(plan, job.chunk_rows, done_rows)
    total = plan.source.count_rows()
    card = plan.model.card
    profile = Profile(tuple(float(v) for v in card.labels), card.tokenizer.max_len)
    counts = Counts()
    with Progress(total, "rows", "scoring", initial=done_rows, quiet=job.quiet) as progress:
        for written in pipeline.run(chunks):
            if written.profile is not None:
                profile.add(written.profile)
            if written.counts is not None:
                counts += written.counts
            progress.update(written.rows)
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
        model=model_name(plan),
        resumed_rows=done_rows,
        lossy_rows=lossy,
        stage_seconds=stages,
        counts=counts if previous is not None else None,
        profile=profile,
        drift=(
            compare(plan.reference, profile, plan.thresholds)
            if plan.reference is not None
            else None
        ),
    )


def _numbered(plan: Plan, chunk_rows: int, skip: int):
    start = skip
    columns = list(dict.fromkeys([*plan.keep, *plan.text_columns]))
    for table in plan.source.batches(
        columns, plan.text_columns, chunk_rows=chunk_rows, skip_rows=skip
    ):
        yield Chunk(start, table, table.num_rows)
        start += table.num_rows


__all__ = [
    "STATE",
    "RunJob",
    "RunSummary",
    "StateError",
    "manifest_path",
    "output_beside",
    "partial_dir",
    "plan_run",
    "run_scoring",
    "write_part",
]

"""The manifest beside a finished output: what was scored from what, how, and how it looked."""

from __future__ import annotations

import dataclasses
import json
import os
import time

from scorer import __version__
from scorer.engines.local.job import (
    Plan,
    RunJob,
    RunSummary,
    manifest_path,
)
from scorer.io.files import atomic_write_text
from scorer.runtime.cpus import available_cpus


def write_manifest(
    job: RunJob, plan: Plan, summary: RunSummary, previous_rows: int | None = None
) -> None:
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
        "id_column": plan.id_column,
        "incremental": (
            {
                "since": str(plan.since.resolve()) if plan.since else None,
                "reused_rows": summary.counts.reused,
                "edited_rows": summary.counts.edited,
                "new_rows": summary.counts.new,
                # Of the earlier output's rows, those whose id is gone (a resumed run
                # counts from where it resumed, so this is then left out).
                "deleted_rows": (
                    previous_rows - summary.counts.reused - summary.counts.edited
                    if previous_rows is not None and not summary.resumed_rows
                    else None
                ),
            }
            if summary.counts is not None
            else None
        ),
        # The rows scored by this run (with --since: the new and edited ones).
        "profile": summary.profile.to_dict() if summary.profile is not None else None,
        "drift": summary.drift.to_dict() if summary.drift is not None else None,
        "drift_thresholds": dataclasses.asdict(plan.thresholds),
        "notes": list(scorer.notes),
        "pid": os.getpid(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(manifest_path(plan.out), json.dumps(manifest, indent=2) + "\n")

"""Resuming an interrupted `scorer run`: the state file that fixes what the parts were
scored from, the checks before a resume trusts them, and a finished output left alone."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from scorer import __version__
from scorer.engines.local.incremental import (
    fingerprint,
)
from scorer.engines.local.job import (
    Plan,
    RunJob,
    RunSummary,
    manifest_path,
    model_name,
    partial_dir,
)
from scorer.errors import UserError
from scorer.io.files import atomic_write_text
from scorer.runtime.output import trusted_parts

STATE = "state.json"


class StateError(Exception):
    """The partial directory's state file cannot be read: kept as it is for inspection."""


def remove_if_empty(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.name != "lock.pid":
            return
    shutil.rmtree(directory, ignore_errors=True)


def has_parts_or_state(out: Path) -> bool:
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
        "id_column": plan.id_column,
        "since": fingerprint(plan.since) if plan.since is not None else None,
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


def prepare_parts(job: RunJob, plan: Plan) -> int:
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
        ("id_column", "--id-col"),
        ("since", "--since (its file, or --rescore-all)"),
    ):
        if saved.get(key) != state[key]:
            raise UserError(
                f"{what}: {label} changed since the interrupted run; rerun with --overwrite"
            )


def already_complete(plan: Plan, began: float) -> RunSummary:
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
        model=model_name(plan),
        already_complete=True,
    )

"""The Ray engine's output directory: parts written by Ray tasks, the run's state, what a
resumed run still has to score, and publishing the directory with its manifest.

Parts are the local engine's (``scorer.runtime.output.write_part``: written under a temporary name,
fsynced, renamed), named by the input rows they hold, so a part is either whole or absent,
and coverage of rows 0..N is what "complete" means.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from scorer import __version__
from scorer.engines.local.run import RunJob, RunSummary, manifest_path
from scorer.engines.ray import attempts
from scorer.engines.ray.predictor import LOSSY, read_units
from scorer.errors import UserError
from scorer.io.files import atomic_write_text, fsync_dir, publish_dir
from scorer.io.source import Source
from scorer.runtime.model_dir import ModelDir
from scorer.runtime.output import LOSSY_KEY, part_name, write_part

_PART = re.compile(r"part-(\d{12})-(\d{12})\.parquet$")


def write_parts(batch: pa.Table, directory: str) -> pa.Table:
    """A write task: each run of consecutive input rows of the batch becomes one part."""
    lossy = batch.column(LOSSY).to_numpy(zero_copy_only=False)
    table = batch.drop_columns([LOSSY])
    rows = table.column("row").to_numpy()
    if len(rows):
        attempts.record(directory, "write", int(rows[0]))
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts, ends, counts = [], [], []
    for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(rows)], strict=True):
        if hi <= lo:
            continue
        first = int(rows[lo])
        part = table.slice(lo, hi - lo)
        count = int(lossy[lo:hi].sum())
        write_part(Path(directory) / part_name(first, hi - lo), part, lossy_rows=count)
        starts.append(first)
        ends.append(first + hi - lo)
        counts.append(count)
    return pa.table({"start": starts, "end": ends, "lossy": counts})


def already_complete(out: Path, began: float) -> RunSummary:
    try:
        manifest = json.loads(manifest_path(out).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UserError(f"{out} exists without a manifest; pass --overwrite") from None
    return RunSummary(
        out=out,
        rows=int(manifest.get("rows", 0)),
        seconds=time.perf_counter() - began,
        device=str(manifest.get("device", "")),
        provider=str(manifest.get("provider", "")),
        precision=str(manifest.get("model", {}).get("precision", "")),
        already_complete=True,
    )


def pending_units(job: RunJob, parts_dir: Path, source: Source, model_dir: Path) -> list[dict]:
    """The read units still to score: all of them for a fresh run; for ``--resume``, those
    whose rows the whole parts left by an interrupted run do not cover (planned with the
    interrupted run's unit size, whatever ``--chunk-rows`` says now), their stray parts
    removed so no row is written twice."""
    card = ModelDir.open(model_dir).card
    state = {
        "inputs": [f.fingerprint() for f in source.files],
        "model": {name: entry.get("sha256") for name, entry in sorted(card.graphs.items())},
        "engine": "ray",
        "unit_rows": job.chunk_rows,
    }
    saved_path = parts_dir / "state.json"
    if job.resume and saved_path.is_file():
        try:
            saved = json.loads(saved_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"cannot read {saved_path}: {exc}; the parts are kept") from exc
        unit_rows = int(saved.get("unit_rows", 0)) if isinstance(saved, dict) else 0
        if unit_rows < 1 or saved != {**state, "unit_rows": unit_rows}:
            raise UserError(
                f"cannot resume into {job.out}: the input files or the model changed since the "
                "interrupted run (rerun with --overwrite)"
            )
        units = read_units(source, unit_rows)
        total = sum(int(u["rows"]) for u in units)
        spans = _whole_parts(parts_dir)
        covered = np.zeros(total, dtype=bool)
        for start, end, _ in spans:
            covered[start:end] = True
        pending = [u for u in units if not covered[u["start"] : u["start"] + u["rows"]].all()]
        for start, end, path in spans:
            if any(start < u["start"] + u["rows"] and u["start"] < end for u in pending):
                path.unlink()  # the unit is scored whole again
        return pending
    for entry in parts_dir.iterdir():
        if entry.name != "lock.pid":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    atomic_write_text(saved_path, json.dumps(state, indent=1))
    return read_units(source, job.chunk_rows)


def _whole_parts(parts_dir: Path) -> list[tuple[int, int, Path]]:
    """(first row, end row, path) of the whole parts; broken ones are deleted (rewritten)."""
    spans = []
    for path in parts_dir.iterdir():
        match = _PART.match(path.name)
        if not match:
            continue
        start, end = int(match.group(1)), int(match.group(2))
        try:
            whole = pq.ParquetFile(path).metadata.num_rows == end - start
        except (pa.ArrowException, OSError):
            whole = False
        if whole:
            spans.append((start, end, path))
        else:
            path.unlink()
    return spans


def lossy_in_parts(parts_dir: Path) -> int:
    """Rows with invalid UTF-8, as each part recorded (resumed parts included)."""
    total = 0
    for path in parts_dir.glob("part-*.parquet"):
        metadata = pq.ParquetFile(path).schema_arrow.metadata or {}
        total += int(metadata.get(LOSSY_KEY, b"0"))
    return total


def publish(parts_dir: Path, out: Path, overwrite: bool) -> None:
    """Rename the complete parts directory to ``out`` (while still holding its lock)."""
    for name in ("state.json", "lock.pid"):
        with contextlib.suppress(FileNotFoundError):
            (parts_dir / name).unlink()
    if out.exists() and not overwrite:
        raise UserError(f"{out} appeared while scoring; pass --overwrite")
    publish_dir(parts_dir, out)
    fsync_dir(out.parent)


def write_manifest(
    job,
    out: Path,
    files,
    model_dir: Path,
    summary: RunSummary,
    sizing,
    graph,
    retries: dict,
    actors_per_node: list[int] | None,
):
    manifest = {
        "scorer_version": __version__,
        "engine": "ray",
        "output": str(out.resolve()),
        "inputs": [f.fingerprint() for f in files],
        "model": {
            "dir": str(Path(model_dir).resolve()),
            "file": graph[0],
            "sha256": graph[1],
            "precision": graph[2],
        },
        "device": summary.device,
        "provider": summary.provider,
        "actors": sizing.actors,
        "actors_per_node": actors_per_node,  # as planned, largest first
        "cpus_per_actor": sizing.cpus_per_actor,
        "gpus_per_actor": sizing.gpus_per_actor,
        "rows": summary.rows,
        "resumed_rows": summary.resumed_rows,
        "lossy_utf8_rows": summary.lossy_rows,
        # this run's attempts beyond each read unit's first (a resumed run counts its own)
        "retries": retries,
        "seconds": summary.seconds,
        "rows_per_s": summary.rows_per_s,
        "pid": os.getpid(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(manifest_path(out), json.dumps(manifest, indent=2) + "\n")

"""How many times Ray ran each read, score and write of a run: every attempt leaves an empty
file under the parts directory (which every node sees), so the manifest can say how many
tasks were retried after an actor or a node was lost.

Ray 2.60 tells a task neither its attempt number nor, without the dashboard's state API,
anyone else; clusters often run without a dashboard. A file per attempt needs only what the
engine already requires, a shared output folder, and counts re-executions for lost objects
too (lineage reconstruction), which no retry counter would. Each file costs one create per
read unit and stage.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections import Counter
from pathlib import Path

# A folder in the parts directory, removed before the output is published; its leading "_"
# keeps Parquet dataset readers off it should a late actor restart write there afterwards.
ATTEMPTS = "_attempts"
STAGES = ("read", "score", "write")
RESTART = "restart"


def record(directory: str | os.PathLike[str] | None, stage: str, first_row: int) -> None:
    """One attempt of ``stage`` on the unit that starts at input row ``first_row``."""
    if directory is not None:
        _touch(Path(directory) / ATTEMPTS, f"{stage}-{first_row:012d}-{uuid.uuid4().hex}")


def record_restart(directory: str | os.PathLike[str] | None) -> None:
    """A predictor actor that Ray restarted after its process died."""
    if directory is not None:
        _touch(Path(directory) / ATTEMPTS, f"{RESTART}-{uuid.uuid4().hex}")


def _touch(folder: Path, name: str) -> None:
    folder.mkdir(exist_ok=True)
    os.close(os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def tally(parts_dir: Path) -> dict[str, int]:
    """Attempts beyond each unit's first, per stage, the units that needed any, and the
    actor restarts."""
    folder = parts_dir / ATTEMPTS
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    restarts = sum(1 for n in names if n.startswith(f"{RESTART}-"))
    per_unit = Counter(tuple(n.split("-")[:2]) for n in names if n.split("-")[0] in STAGES)
    retried = {stage: 0 for stage in STAGES}
    units = set()
    for (stage, first), count in per_unit.items():
        if count > 1:
            retried[stage] += count - 1
            units.add(first)
    return {
        **{f"{stage}_retries": retried[stage] for stage in STAGES},
        "units_retried": len(units),
        "actor_restarts": restarts,
    }


def clear(parts_dir: Path) -> None:
    if (parts_dir / ATTEMPTS).exists():
        shutil.rmtree(parts_dir / ATTEMPTS)


def remove_half_written(parts_dir: Path) -> int:
    """Delete the hidden temporary files of parts whose writer died (a lost node, a killed
    driver's run) once no task of the run is left; how many there were."""
    stale = [p for p in parts_dir.glob(".part-*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)

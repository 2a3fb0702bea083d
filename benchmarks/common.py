"""Shared benchmark plumbing: interleaved timing, machine facts, result files."""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import time
from collections.abc import Callable
from datetime import date
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_REVIEWS = REPO.parent / "shared" / "data" / "womens_clothing_reviews.csv"
DEFAULT_SPLIT = REPO.parent / "shared" / "data" / "womens_clothing_split.csv"
LIBRARIES = ("numpy", "polars", "pyarrow", "onnxruntime", "onnxruntime-gpu", "torch", "spacy")


def interleaved(
    contenders: dict[str, Callable[[], object]],
    *,
    repeats: int = 3,
    warmup: int = 1,
    pause: float = 0.05,
) -> dict[str, list[float]]:
    """Seconds per run for each contender, run in turn (A B A B ...) after warm-up runs.

    ``pause`` seconds between runs let the previous contender's idle threads (onnxruntime's
    spin-waiting intra-op pool) stop competing for the cores.
    """
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            time.sleep(pause)
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpu_name() -> str | None:
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return None
    except ImportError:
        return None
    try:
        import subprocess

        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict[str, object]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpu": gpu_name(),
        "python": platform.python_version(),
        "libraries": versions,
    }


# Appended to result file names: `python -m benchmarks --quick` sets "-quick" so a quick run
# never overwrites the figures of a full one.
RUN_TAG = ""


def save(name: str, payload: dict[str, object]) -> Path:
    """Write ``results/<date>-<host>-<name><RUN_TAG>.json`` and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{date.today().isoformat()}-{socket.gethostname()}-{name}{RUN_TAG}.json"
    payload = {"benchmark": name, "date": date.today().isoformat(), **payload}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path

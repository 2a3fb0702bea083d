"""One CPU training in a child process, timed: what the training benchmarks compare.

The child is ``scorer train`` (or a module that wraps it) with the default model on the
reference reviews, marks fixed (no choice), no search, no blend and no refit, so its time
is the LSTM's epochs. Kernel (system) CPU seconds and minor page faults are the child's own
(``os.wait4``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import DEFAULT_REVIEWS, DEFAULT_SPLIT, machine, median


def train_once(
    side: str,
    out: Path,
    *,
    epochs: int,
    threads: int,
    env: dict[str, str],
    runner: Sequence[str] = ("-m", "scorer"),
) -> dict[str, float]:
    """Seconds, CPU, faults, peak RSS and the last validation loss of one training."""
    command = [
        sys.executable, *runner, "train", str(DEFAULT_REVIEWS), "--split-file",
        str(DEFAULT_SPLIT), "--out", str(out), "--overwrite", "--epochs", str(epochs),
        "--threads", str(threads), "--search-budget", "0", "--no-blend", "--no-refit",
        "--teacher-hidden-dim", "0", "--marks", "!?",
    ]  # fmt: skip
    # stderr to a file, not a pipe: nothing reads a pipe while the child runs, and its
    # progress lines would fill one and stall it.
    with tempfile.TemporaryFile() as log:
        began = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
        # wait4 rather than wait(): the child's own rusage, not all children's summed.
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - began
        if os.waitstatus_to_exitcode(status) != 0:
            log.seek(0)
            err = log.read().decode(errors="replace")
            raise RuntimeError(f"{side}: scorer train failed: {err[-2000:]}")
    history = json.loads((out / "metrics.json").read_text())["history"]
    return {
        "seconds": seconds,
        "epoch_seconds": sum(h["seconds"] for h in history),
        "batches_per_s": median([h["batches_per_s"] for h in history]),
        "user_cpu_s": usage.ru_utime,
        "system_cpu_s": usage.ru_stime,
        "minor_faults": usage.ru_minflt,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "val_loss": history[-1]["val_loss"],
    }


def alternate(
    sides: Sequence[str],
    train: Callable[[str, int, int], dict[str, float]],
    argv: list[str] | None,
    description: str,
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """``--epochs/--repeats/--threads`` from ``argv``, then each side trained in turn (A B A
    B ...), each run printed. Returns the result file's common part (machine, options, every
    run, the medians) and each side's medians."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    runs: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    width = max(len(side) for side in sides)
    for repeat in range(args.repeats):
        for side in sides:
            run = train(side, args.epochs, args.threads)
            runs[side].append(run)
            print(
                f"repeat {repeat}, {side:{width}s}: epochs {run['epoch_seconds']:6.1f} s, "
                f"user {run['user_cpu_s']:6.1f} s, system {run['system_cpu_s']:6.1f} s, "
                f"{run['minor_faults']:,} minor faults, peak RSS {run['peak_rss_mb']:.0f} MB, "
                f"val loss {run['val_loss']:.6f}",
                flush=True,
            )
    medians = {
        side: {key: median([r[key] for r in rs]) for key in rs[0]} for side, rs in runs.items()
    }
    result = {
        "machine": machine(),
        "epochs": args.epochs,
        "threads": args.threads,
        "runs": runs,
        "median": medians,
    }
    return result, medians

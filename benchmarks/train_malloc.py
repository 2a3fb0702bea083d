"""CPU training with glibc's default malloc against ``scorer.malloc.keep_freed_memory``.

    python -m benchmarks.train_malloc [--epochs 1] [--repeats 2] [--threads 2]

Each case is its own ``scorer train`` process: the default model on the reference reviews,
marks fixed (no choice), no search, no blend, so the time is the LSTM's epochs. The two
sides alternate. "glibc default" runs with ``GLIBC_TUNABLES`` set empty, which leaves
glibc's own settings in force and makes ``keep_freed_memory`` stand aside, as it does for
any user who tunes malloc through the environment. Kernel (system) CPU seconds and minor
page faults are the child's own (``os.wait4``); both sides must end on the same validation
loss: the setting changes where memory comes from, never the arithmetic.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks.common import DEFAULT_REVIEWS, DEFAULT_SPLIT, REPO, machine, median, save

SIDES = {"glibc default": {"GLIBC_TUNABLES": ""}, "heap kept": {}}


def train_once(side: str, epochs: int, threads: int) -> dict[str, float]:
    out = REPO / "runs" / "bench" / "train-malloc"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUN"))}
    env.update(SIDES[side])
    command = [
        sys.executable, "-m", "scorer", "train", str(DEFAULT_REVIEWS), "--split-file",
        str(DEFAULT_SPLIT), "--out", str(out), "--overwrite", "--epochs", str(epochs),
        "--threads", str(threads), "--budget", "0", "--no-blend", "--marks", "!?",
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    runs: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
    for repeat in range(args.repeats):
        for side in SIDES:
            run = train_once(side, args.epochs, args.threads)
            runs[side].append(run)
            print(
                f"repeat {repeat}, {side:13s}: epochs {run['epoch_seconds']:6.1f} s, "
                f"user {run['user_cpu_s']:6.1f} s, system {run['system_cpu_s']:6.1f} s, "
                f"{run['minor_faults']:,} minor faults, peak RSS {run['peak_rss_mb']:.0f} MB, "
                f"val loss {run['val_loss']:.6f}",
                flush=True,
            )
    summary = {
        side: {key: median([r[key] for r in rs]) for key in rs[0]} for side, rs in runs.items()
    }
    losses = {r["val_loss"] for rs in runs.values() for r in rs}
    before, after = summary["glibc default"], summary["heap kept"]
    result = {
        "machine": machine(),
        "epochs": args.epochs,
        "threads": args.threads,
        "runs": runs,
        "median": summary,
        "epoch_speedup": before["epoch_seconds"] / after["epoch_seconds"],
        "same_val_loss": len(losses) == 1,
    }
    print(
        f"median epoch time {before['epoch_seconds']:.1f} s -> {after['epoch_seconds']:.1f} s "
        f"({result['epoch_speedup']:.2f}x); system CPU {before['system_cpu_s']:.1f} s -> "
        f"{after['system_cpu_s']:.1f} s; same validation loss: {result['same_val_loss']}"
    )
    print(f"saved {save('train-malloc', result)}")
    return result


if __name__ == "__main__":
    main()

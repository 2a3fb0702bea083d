"""Training on a shared machine: batches/s of `scorer train` alone and beside another CPU job,
for thread counts and OpenMP wait policies.

    python -m benchmarks.shared_cpu [--epochs 1] [--other busy|torch]

Each case is its own process training the reference-size model for one epoch; the other job,
started before and stopped after, is a busy loop on one core (``busy``) or another
multi-threaded PyTorch job on every core (``torch``: small matrix products in a loop, as a
second training would run). OpenMP's spin-waiting threads
(``OMP_WAIT_POLICY=ACTIVE``, libgomp's default for a while after each parallel region) burn
the core the other job needs, and are then descheduled at the worst moments.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks.common import DEFAULT_REVIEWS, DEFAULT_SPLIT, REPO, machine, save

OTHER_JOBS = {
    "busy": "while True: pass",
    "torch": (
        "import torch\na = torch.randn(128, 512)\nb = torch.randn(512, 512)\nwhile True: a @ b"
    ),
}


def train_once(threads: int, policy: str | None, epochs: int) -> dict:
    out = REPO / "runs" / "bench" / "shared-cpu"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    command = [
        sys.executable, "-m", "scorer", "train", str(DEFAULT_REVIEWS), "--split-file",
        str(DEFAULT_SPLIT), "--out", str(out), "--overwrite", "--reference", "--variant",
        "packed", "--epochs", str(epochs), "--threads", str(threads),
    ]  # fmt: skip
    began = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True)
    history = json.loads((out / "metrics.json").read_text())["history"]
    return {
        "batches_per_s": history[0]["batches_per_s"],
        "seconds": time.perf_counter() - began,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--other", choices=sorted(OTHER_JOBS), default="busy")
    args = parser.parse_args(argv)
    cases = [(t, p) for t in (2, 1) for p in (None, "PASSIVE")]
    results: dict = {"machine": machine(), "other_job": OTHER_JOBS[args.other], "cases": []}
    for busy in (False, True):
        # The other job keeps its libraries' default threading, as an unrelated job would.
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        other = (
            subprocess.Popen([sys.executable, "-c", OTHER_JOBS[args.other]], env=env)
            if busy
            else None
        )
        try:
            for threads, policy in cases:
                run = train_once(threads, policy, args.epochs)
                case = {"other_job": busy, "threads": threads, "omp_wait_policy": policy or "unset"}
                results["cases"].append({**case, **run})
                print(f"{case}: {run['batches_per_s']:.2f} batches/s", flush=True)
        finally:
            if other is not None:
                other.kill()
                other.wait()
    name = "shared-cpu" if args.other == "busy" else f"shared-cpu-{args.other}"
    print(f"saved {save(name, results)}")
    return results


if __name__ == "__main__":
    main()

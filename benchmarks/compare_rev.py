"""`scorer run`'s end-to-end speed on CPU against an earlier revision, in one run.

    python -m benchmarks.compare_rev --rev 9eae768 [--rows 1000000] [--repeats 2]

The earlier revision is checked out beside this one (a git worktree under runs/bench/) and
runs from there with this environment; each side trains and exports its own reference-size
packed model (2 epochs: speed does not depend on the weights), and both score the same
corpus, alternating, each run its own process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from benchmarks.common import DEFAULT_REVIEWS, DEFAULT_SPLIT, REPO, machine, median, save
from benchmarks.e2e import WORK, corpus, measure


def checkout(rev: str) -> Path:
    path = WORK / f"rev-{rev}"
    if not path.is_dir():
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=REPO, check=True)
    return path


def model(cwd: Path, out: Path) -> Path:
    """A reference-size packed model trained and exported by the code in ``cwd``."""
    if not (out / "model.onnx").is_file():
        train = [
            sys.executable, "-m", "scorer", "train", str(DEFAULT_REVIEWS), "--split-file",
            str(DEFAULT_SPLIT), "--out", str(out), "--overwrite", "--reference", "--variant",
            "packed", "--epochs", "2",
        ]  # fmt: skip
        subprocess.run(train, cwd=cwd, check=True, capture_output=True)
        subprocess.run(
            [sys.executable, "-m", "scorer", "export", str(out)], cwd=cwd, check=True,
            capture_output=True,
        )  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="9eae768")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    old = checkout(args.rev)
    sides = {
        args.rev: (old, model(old, WORK / f"model-{args.rev}")),
        "current": (REPO, model(REPO, WORK / "model-current")),
    }
    path = corpus(args.rows)
    runs: dict[str, list] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, (cwd, model_dir) in sides.items():
            out = WORK / f"compare-{name}.parquet"
            command = [
                "env", "-C", str(cwd), sys.executable, "-m", "scorer", "run", str(path),
                "--model", str(model_dir), "--out", str(out), "--overwrite", "--quiet",
            ]  # fmt: skip
            seconds, rss, _ = measure(command)
            runs[name].append({"seconds": seconds, "peak_rss_mb": rss})
            print(f"{name}: {args.rows / seconds:,.0f} reviews/s, {rss:.0f} MB", flush=True)
    result = {"machine": machine(), "rows": args.rows, "sides": {}}
    for name, items in runs.items():
        seconds = median([r["seconds"] for r in items])
        result["sides"][name] = {
            "reviews_per_s": args.rows / seconds,
            "seconds": [r["seconds"] for r in items],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in items),
        }
    result["current_over_rev"] = (
        result["sides"]["current"]["reviews_per_s"] / result["sides"][args.rev]["reviews_per_s"]
    )
    print(f"current / {args.rev}: {result['current_over_rev']:.2f}x")
    print(f"saved {save(f'compare-{args.rev}', result)}")
    return result


if __name__ == "__main__":
    main()

"""End to end: `scorer run` against the seed-style path, and scaling with input size.

    python -m benchmarks.e2e --model-dir runs/bench/ref-packed --rows 100000 1000000
    python -m benchmarks.e2e --model-dir runs/bench/ref-packed --scaling 100000 1000000 8000000
    python -m benchmarks.e2e --model-dir runs/bench/ref-packed --rows 1000000 --host-only 1 2
    python -m benchmarks.e2e --model-dir runs/bench/ref-packed --rows 1000000 --engine ray

Each side runs as its own process (peak RSS is that process's, sampled every 20 ms), on the
same corpus file, nothing cached or pre-tokenized; the two sides alternate.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil

from benchmarks.common import DEFAULT_REVIEWS, REPO, machine, median, save
from benchmarks.corpus import build_corpus

WORK = REPO / "runs" / "bench"


def corpus(rows: int, reviews: Path = DEFAULT_REVIEWS) -> Path:
    path = WORK / f"corpus-{rows}.parquet"
    if not path.is_file():
        WORK.mkdir(parents=True, exist_ok=True)
        build_corpus(reviews, rows, path)
    return path


def measure(command: list[str], tree: bool = False) -> tuple[float, float, str]:
    """(wall seconds, peak memory in MB, stdout) of a command run to completion: the process's
    RSS, or with ``tree`` the summed PSS of it and all its descendants (a local Ray instance's
    GCS, raylet and workers; PSS so that shared memory is not counted once per process)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    handle = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            if tree:
                members = [handle, *handle.children(recursive=True)]
                peak = max(peak, sum(_pss(p) for p in members))
            else:
                peak = max(peak, handle.memory_info().rss)
        except psutil.Error:
            if not tree:
                break
        time.sleep(0.02 if not tree else 0.2)
    out, err = process.communicate()
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed ({process.returncode}): {err[-2000:]}")
    return seconds, peak / 1e6, out


def _pss(process: psutil.Process) -> int:
    try:
        return process.memory_full_info().pss
    except (psutil.Error, AttributeError):
        return 0


def summarize(items: list[dict], rows: int) -> dict:
    """Repeats of one contender: the median time and its rate, the worst peak memory, and
    the last run's stage split where the runs report one."""
    seconds = median([r["seconds"] for r in items])
    summary = {"reviews_per_s": rows / seconds, "seconds": seconds}
    for key in ("peak_memory_mb", "peak_rss_mb"):
        if key in items[0]:
            summary[key] = max(r[key] for r in items)
    if "stage_seconds" in items[0]:
        summary["stage_seconds"] = items[-1]["stage_seconds"]
    return summary


def engines(model_dir: Path, rows: int, repeats: int) -> dict:
    """The local engine against the Ray engine (a local Ray instance sized to this machine)
    on the same rows, alternating; Ray's memory is its whole process tree's (PSS)."""
    path = corpus(rows)
    runs: dict[str, list] = {"local": [], "ray": []}
    for _ in range(repeats):
        for engine in ("local", "ray"):
            out = WORK / f"engine-{engine}.parquet"
            command = [sys.executable, "-m", "scorer", "run", str(path), "--model",
                       str(model_dir), "--out", str(out), "--overwrite", "--quiet",
                       "--engine", engine]  # fmt: skip
            seconds, memory, _ = measure(command, tree=True)
            runs[engine].append({"seconds": seconds, "peak_memory_mb": memory})
    results = {engine: summarize(items, rows) for engine, items in runs.items()}
    results["ray_overhead"] = results["ray"]["seconds"] / results["local"]["seconds"]
    return results


def scorer_run(path: Path, model_dir: Path, extra: list[str] | None = None) -> dict[str, object]:
    out = WORK / "scored.parquet"
    command = [
        sys.executable,
        "-m",
        "scorer",
        "run",
        str(path),
        "--model",
        str(model_dir),
        "--out",
        str(out),
        "--overwrite",
        "--quiet",
        *(extra or []),
    ]
    seconds, rss, _ = measure(command)
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    return {
        "seconds": seconds,
        "peak_rss_mb": rss,
        "stage_seconds": manifest["stage_seconds"],
        "device": manifest["device"],
        "precision": manifest["model"]["precision"],
    }


def seed_run(path: Path, model_dir: Path) -> dict[str, object]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.seed_path",
        str(path),
        str(model_dir),
        str(WORK / "seed.parquet"),
    ]
    seconds, rss, out = measure(command)
    return {"seconds": seconds, "peak_rss_mb": rss, **json.loads(out.splitlines()[-1])}


def compare(model_dir: Path, rows: list[int], repeats: int, extra: list[str]) -> dict:
    results = {}
    for n in rows:
        path = corpus(n)
        runs = {"scorer run": [], "seed-style path": []}
        for _ in range(repeats):
            runs["seed-style path"].append(seed_run(path, model_dir))
            runs["scorer run"].append(scorer_run(path, model_dir, extra))
        summary = {name: summarize(items, n) for name, items in runs.items()}
        summary["speedup"] = (
            summary["scorer run"]["reviews_per_s"] / summary["seed-style path"]["reviews_per_s"]
        )
        results[str(n)] = summary
    return results


def scaling(model_dir: Path, rows: list[int], extra: list[str]) -> dict:
    results = {}
    for n in rows:
        run = scorer_run(corpus(n), model_dir, extra)
        results[str(n)] = {"reviews_per_s": n / run["seconds"], **run}
    return results


def host_only(model_dir: Path, rows: int, workers: list[int], repeats: int) -> dict:
    """read + tokenize + write with a no-op model (benchmarks.host_only), per worker count;
    worker counts alternate within each repeat."""
    path = corpus(rows)
    runs: dict[int, list[dict]] = {n: [] for n in workers}
    for _ in range(repeats):
        for n in workers:
            command = [
                sys.executable,
                "-m",
                "benchmarks.host_only",
                str(path),
                str(model_dir),
                str(WORK / "host-only.parquet"),
                "--workers",
                str(n),
            ]
            seconds, rss, out = measure(command)
            runs[n].append(
                {"seconds": seconds, "peak_rss_mb": rss, **json.loads(out.splitlines()[-1])}
            )
    return {str(n): summarize(items, rows) for n, items in runs.items()}


def plot_scaling(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [int(k) for k in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(rows, [results[str(n)]["seconds"] for n in rows], "o-")
    left.set(xscale="log", yscale="log", xlabel="rows", ylabel="seconds", title="time (linear)")
    right.plot(rows, [results[str(n)]["peak_rss_mb"] for n in rows], "o-")
    right.set(xscale="log", xlabel="rows", ylabel="peak RSS (MB)", title="memory (flat)")
    right.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--rows", type=int, nargs="*", default=[100_000])
    parser.add_argument("--scaling", type=int, nargs="*", default=[])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--scorer-args", default="", help="extra `scorer run` arguments")
    parser.add_argument(
        "--host-only",
        type=int,
        nargs="*",
        default=None,
        metavar="WORKERS",
        help="read + tokenize + write with a no-op model, at each worker count (default 1 2)",
    )
    parser.add_argument(
        "--engine",
        choices=["ray"],
        default=None,
        help="compare the local engine with the Ray engine on the last --rows",
    )
    args = parser.parse_args(argv)
    extra = args.scorer_args.split()
    result: dict[str, object] = {"machine": machine(), "scorer_args": extra}
    if args.engine == "ray":
        rows = args.rows[-1] if args.rows else 1_000_000
        result["engines"] = {"rows": rows, **engines(args.model_dir, rows, args.repeats)}
        for name in ("local", "ray"):
            r = result["engines"][name]
            print(
                f"{name:5s} engine, {rows:,} rows: {r['reviews_per_s']:9,.0f} reviews/s, "
                f"peak memory (process tree, PSS) {r['peak_memory_mb']:6.0f} MB"
            )
        print(f"saved {save('engines', result)}")
        return result
    if args.host_only is not None:
        rows = args.rows[-1] if args.rows else 1_000_000
        workers = args.host_only or [1, 2]
        result["host_only"] = {
            "rows": rows,
            "workers": host_only(args.model_dir, rows, workers, args.repeats),
        }
        for n, r in result["host_only"]["workers"].items():
            stages = ", ".join(f"{k} {v:.1f}s" for k, v in r["stage_seconds"].items())
            print(
                f"host only, {rows:,} rows, {n} workers: {r['reviews_per_s']:9,.0f} reviews/s  "
                f"peak RSS {r['peak_rss_mb']:6.0f} MB  ({stages})"
            )
        print(f"saved {save('host-only', result)}")
        return result
    if args.rows:
        result["end_to_end"] = compare(args.model_dir, args.rows, args.repeats, extra)
        for n, s in result["end_to_end"].items():
            for name in ("seed-style path", "scorer run"):
                r = s[name]
                stages = ", ".join(f"{k} {v:.1f}s" for k, v in r["stage_seconds"].items())
                print(
                    f"{int(n):>9,} rows  {name:16s} {r['reviews_per_s']:9,.0f} reviews/s  "
                    f"peak RSS {r['peak_rss_mb']:6.0f} MB  ({stages})"
                )
            print(f"{int(n):>9,} rows  speedup {s['speedup']:.1f}x")
    if args.scaling:
        result["scaling"] = scaling(args.model_dir, args.scaling, extra)
        for n, r in result["scaling"].items():
            print(
                f"scaling {int(n):>10,} rows: {r['reviews_per_s']:9,.0f} reviews/s, "
                f"peak RSS {r['peak_rss_mb']:.0f} MB"
            )
        plot = save("e2e", result).with_suffix(".png")
        plot_scaling(result["scaling"], plot)
        print(f"plot {plot}")
    print(f"saved {save('e2e', result)}")
    return result


if __name__ == "__main__":
    main()

"""The device check for a CUDA host (an H100/H200 with 16 cores, no network), in two calls.

    python -m benchmarks.gpu [--rows 4000000] [--quick]

1. the whole pytest suite, its CUDA tests among it (they skip elsewhere), in three parts with
   a limit each (``suite_parts``), each part's files and counts recorded;
2. the default recipe on CUDA with its AMP choice, judged on test; two epochs in fp32 beside it;
3. the export of every graph (CPU, CUDA, CUDA fp16), validated on the CUDA provider;
4. the model alone: reviews/s of each graph on CUDA at batch 2k, 16k and 64k, each graph and
   size in a process of its own, and of the CPU graph on all of the host's cores;
5. `scorer run` end to end on >= 4M real reviews with --device cuda, then --device cpu:
   reviews/s, stage split, peak host RSS and peak GPU memory;
6. the GPU, driver, CUDA/cuDNN and library versions.

``--steps tests`` (about 5 minutes) and ``--steps training,export,model_alone,end_to_end``
each fit one device call. Writes benchmarks/results/<date>-<gpu>.json and .md (with
``-<steps>`` in the name when only some ran). Without CUDA every CUDA step is reported as
skipped with its reason (a dry run; tests/test_benchmarks.py runs it here).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np

from benchmarks.common import DEFAULT_REVIEWS, DEFAULT_SPLIT, REPO, RESULTS, machine, median
from benchmarks.e2e import WORK, corpus, measure

BATCHES = (2048, 16_384, 65_536)


def cuda_status() -> str | None:
    """None when CUDA is usable by both torch and onnxruntime, else why not."""
    try:
        import onnxruntime as ort
        import torch
    except ImportError as exc:
        return f"not installed: {exc.name}"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime has no CUDA provider (install onnxruntime-gpu)"
    return None


def environment() -> dict:
    facts: dict = {"machine": machine()}
    try:
        import torch

        facts["torch"] = torch.__version__
        facts["torch_cuda"] = torch.version.cuda
        facts["cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
        if torch.cuda.is_available():
            facts["gpu"] = torch.cuda.get_device_name(0)
            facts["capability"] = list(torch.cuda.get_device_capability(0))
    except ImportError:
        pass
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        facts["nvidia_smi"] = out.stdout.strip() or out.stderr.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        facts["nvidia_smi"] = f"unavailable: {exc}"
    return facts


def suite_parts(count: int, tests: Path = REPO / "tests") -> list[list[str]]:
    """The suite's files in ``count`` parts of near-equal size (bytes of test code, largest
    first into the lightest part), so each part can finish within its own limit."""
    files = sorted(tests.glob("test_*.py"), key=lambda f: (-f.stat().st_size, f.name))
    parts: list[list[str]] = [[] for _ in range(max(count, 1))]
    weights = [0] * len(parts)
    for file in files:
        lightest = weights.index(min(weights))
        parts[lightest].append(str(file.relative_to(REPO)))
        weights[lightest] += file.stat().st_size
    return [sorted(part) for part in parts if part]


def step_tests(skip: str | None, timeout: float = 240, parts: int = 3) -> dict:
    """The whole suite on the host, the CUDA tests among it (they skip elsewhere), in
    ``parts`` runs of their own, each with its share of ``timeout``: a part that runs out of
    time costs only its own report. Spread over 8 workers where pytest-xdist is installed."""
    if skip:
        return {"skipped": skip}
    began = time.perf_counter()
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", "--tb=line",
               "--continue-on-collection-errors"]  # fmt: skip
    if importlib.util.find_spec("xdist") is not None:
        command += ["-n", "8"]
    # Two torch threads a worker: 8 workers at 16 threads each on 16 cores crawl.
    env = {**os.environ, "OMP_NUM_THREADS": "2", "COLUMNS": "400"}
    reports = []
    for files in suite_parts(parts):
        reports.append(_test_part(command + files, files, timeout / parts, env))
    cuda = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py",
         "--collect-only"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    totals: dict = {}
    for report in reports:
        for key in ("passed", "failed", "skipped", "error"):
            totals[key] = totals.get(key, 0) + report.get(key, 0)
    return {
        **totals,
        "parts": reports,
        "all_parts_finished": all("timed_out" not in r for r in reports),
        "cuda_tests_collected": cuda.stdout.strip().splitlines()[-1:],
        "seconds": time.perf_counter() - began,
    }


def _test_part(command: list[str], files: list[str], timeout: float, env: dict) -> dict:
    began = time.perf_counter()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, cwd=REPO, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        return {"files": files, "timed_out": timeout, "tail": out[-8_000:]}
    lines = done.stdout.strip().splitlines()
    tail = lines[-1] if lines else done.stderr[-500:]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error)", tail)}
    return {
        "files": files,
        "returncode": done.returncode,
        "summary": tail,
        **counts,
        "skips": [line for line in lines if line.startswith("SKIPPED")],
        "failures": [line for line in lines if line.startswith(("FAILED", "ERROR"))],
        # --tb=line: one line per failure with its message, for the next session to read.
        "output_tail": done.stdout[-8_000:],
        "seconds": time.perf_counter() - began,
    }


def step_training(skip: str | None, epochs: int) -> dict:
    """The default recipe on CUDA with its AMP choice (``--precision auto``), search included,
    judged on the test rows; then ``epochs`` epochs in fp32 for the per-epoch comparison."""
    if skip:
        return {"skipped": skip}
    from scorer.io.labelled import DEFAULT_TEXT_COLUMNS
    from scorer.train.job import TrainJob, train_model
    from scorer.train.presets import resolve

    results: dict = {}
    runs = {"auto": {}, "fp32": {"epochs": epochs, "search_budget": 0}}
    for precision, overrides in runs.items():
        model, tok, train = resolve({"device": "cuda", "precision": precision, **overrides})
        result = train_model(
            TrainJob(DEFAULT_REVIEWS, WORK / f"gpu-{precision}", model, tok, train,
                     DEFAULT_TEXT_COLUMNS, split_file=DEFAULT_SPLIT, overwrite=True)
        )  # fmt: skip
        metrics = json.loads((result.model_dir.path / "metrics.json").read_text())
        results[precision] = {
            "seconds": metrics["seconds"],
            "seconds_per_epoch": median([h["seconds"] for h in metrics["history"]]),
            "epochs": len(metrics["history"]),
            "search": [t.get("variant") or "default" for t in metrics["search"]],
            **{
                split: {k: metrics[split][k] for k in ("accuracy", "rmse_expected")}
                for split in ("val", "test")
                if metrics.get(split)
            },
            "precision": metrics["precision"],
            "batch": metrics.get("batch"),
        }
    results["this_box_default_train_seconds"] = _cpu_train_seconds()
    return results


def _cpu_train_seconds() -> list[float] | None:
    """The default recipe's training seconds on the reference reviews on the 2-core VM, from
    the committed quality results (None where that file is absent)."""
    path = RESULTS / "2026-11-26-vm-quality-datasets.json"
    if not path.is_file():
        return None
    datasets = json.loads(path.read_text())["datasets"]
    reference = next((d for d in datasets if d["name"] == "reference"), None)
    return [r["train_seconds"] for r in reference["model"]["runs"]] if reference else None


def step_export(skip: str | None, model_dir: Path) -> dict:
    if skip:
        return {"skipped": skip}
    from scorer.export.onnx_export import export_model

    began = time.perf_counter()
    result = export_model(model_dir, fp16=True)
    return {
        "graphs": {
            g.path.name: {"validated_on": g.validated_on, "check": g.check} for g in result.graphs
        },
        "seconds": time.perf_counter() - began,
    }


def step_model_alone(skip: str | None, quick: bool, model_dir: Path, timeout: float = 90) -> dict:
    """Reviews/s of each graph at each batch size, each pair in a process of its own (one
    graph's sessions at a time: six open at once ran out of GPU memory at 64k), the CPU graph
    on all of the host's cores beside them."""
    if not (model_dir / "model.onnx").is_file():
        return {"skipped": f"no exported model in {model_dir} ({skip or 'export failed'})"}
    graphs = {"cpu folded, all cores": ("model.onnx", "cpu")}
    if not skip:
        # The graphs CUDA scoring runs (the folded CPU graph's time loop is no GPU contender).
        for name in ("model.cuda.onnx", "model.cuda.fp16.onnx"):
            graphs[f"cuda {name}"] = (name, "cuda")
    results: dict = {}
    for batch in BATCHES[:1] if quick else BATCHES:
        row: dict = {}
        for label, (name, device) in graphs.items():
            command = [sys.executable, "-m", "benchmarks.gpu", "--one-graph", str(model_dir / name),
                       device, str(batch)]  # fmt: skip
            try:
                done = subprocess.run(
                    command, capture_output=True, text=True, cwd=REPO, timeout=timeout
                )
            except subprocess.TimeoutExpired:
                row[label] = {"error": f"timed out after {timeout:.0f} s"}
                continue
            if done.returncode:
                # Out of GPU memory, say: the other sizes and graphs still count.
                row[label] = {"error": (done.stderr.strip().splitlines() or ["?"])[-1][:500]}
            else:
                row[label] = json.loads(done.stdout.strip().splitlines()[-1])["reviews_per_s"]
        results[str(batch)] = row
    rates = [
        (rate, name, batch)
        for batch, row in results.items()
        for name, rate in row.items()
        if isinstance(rate, float)
    ]
    cuda_rates = [x for x in rates if x[1].startswith("cuda")]
    if cuda_rates:
        rate, name, batch = max(cuda_rates)
        results["best_cuda"] = {"graph": name, "batch": int(batch), "reviews_per_s": rate}
    if skip:
        results["cuda"] = {"skipped": skip}
    return results


def one_graph(path: Path, device: str, batch: int, repeats: int = 3) -> dict:
    """One graph at one batch size, 4 batches a round, median of ``repeats`` rounds."""
    import onnxruntime as ort

    from scorer.runtime.cpus import available_cpus
    from scorer.runtime.session import CpuRunner, DeviceRunner, open_session, slice_rows_for

    card = json.loads((path.parent / "config.json").read_text())["model"]
    if device == "cpu":
        runner = CpuRunner(
            open_session(ort, path, "cpu"), available_cpus(), slice_rows_for(card["hidden_dim"])
        )
    else:
        runner = DeviceRunner(ort, [open_session(ort, path, "cuda") for _ in range(2)], "cuda")
    rng = np.random.default_rng(0)
    ids = rng.integers(2, card["vocab_size"], size=(batch, 70)).astype(np.int32)
    lengths = np.full(batch, 70, dtype=np.int64)
    work = [(ids, lengths)] * 4
    runner.run(work[:1])  # warm-up: allocations and kernel choices
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        runner.run(work)
        seconds.append(time.perf_counter() - began)
    runner.close()
    return {"graph": path.name, "device": device, "batch": batch, "seconds": seconds,
            "reviews_per_s": 4 * batch / median(seconds)}  # fmt: skip


class GpuMemory:
    """Peak used GPU memory (MiB) over a run, sampled with nvidia-smi every 0.2 s."""

    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=5,
                )  # fmt: skip
                self.peak = max(self.peak, int(out.stdout.split()[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                return
            self._stop.wait(0.2)

    def __enter__(self) -> GpuMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def step_end_to_end(skip: str | None, rows: int, model_dir: Path) -> dict:
    if not (model_dir / "model.onnx").is_file():
        return {"skipped": f"no exported model in {model_dir} ({skip or 'export failed'})"}
    path = corpus(rows)
    results = {}
    for device in ("cuda", "cpu"):
        if device == "cuda" and skip:
            results[device] = {"skipped": skip}
            continue
        out = WORK / f"gpu-e2e-{device}.parquet"
        command = [sys.executable, "-m", "scorer", "run", str(path), "--model", str(model_dir),
                   "--out", str(out), "--overwrite", "--quiet", "--device", device]  # fmt: skip
        with GpuMemory() as gpu:
            seconds, rss, _ = measure(command)
        manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
        results[device] = {
            "reviews_per_s": rows / seconds,
            "seconds": seconds,
            "peak_rss_mb": rss,
            "peak_gpu_mib": gpu.peak,
            "provider": manifest["provider"],
            "precision": manifest["model"]["precision"],
            "batch_size": manifest["batch_size"],
            "workers": manifest["workers"],
            "stage_seconds": manifest["stage_seconds"],
        }
    if "reviews_per_s" in results.get("cuda", {}):
        results["cuda_over_cpu"] = (
            results["cuda"]["reviews_per_s"] / results["cpu"]["reviews_per_s"]
        )
    return results


def guarded(name: str, step: Callable[[], dict]) -> dict:
    """A step's result, or its traceback: device time is scarce, so one broken step must not
    cost the figures of the others."""
    began = time.perf_counter()
    try:
        result = step()
    except Exception:  # reported in the results file; the run goes on
        result = {"error": traceback.format_exc()[-4000:]}
    print(f"{name}: {time.perf_counter() - began:.0f}s {json.dumps(result)[:600]}", flush=True)
    return result


def markdown(report: dict) -> str:
    lines = [
        f"# Device check, {report['date']}",
        "",
        "```",
        json.dumps(report["environment"], indent=1),
        "```",
        "",
    ]
    for name in ("tests", "training", "export", "model_alone", "end_to_end"):
        lines += [f"## {name}", "", "```", json.dumps(report[name], indent=1), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one batch size, fewer checks")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="an exported model for steps 4-5 (default: the one step 2 trains on CUDA)",
    )
    parser.add_argument(
        "--steps",
        default="tests,training,export,model_alone,end_to_end",
        help="which steps to run, comma-separated (the others are recorded as not run)",
    )
    parser.add_argument("--test-parts", type=int, default=3)
    parser.add_argument("--test-timeout", type=float, default=300, help="seconds, all parts")
    parser.add_argument(
        "--one-graph",
        nargs=3,
        metavar=("GRAPH", "DEVICE", "BATCH"),
        help="measure one graph at one batch size and print it as JSON (step 4's workers)",
    )
    args = parser.parse_args(argv)
    if args.one_graph:
        path, device, batch = args.one_graph
        result = one_graph(Path(path), device, int(batch))
        print(json.dumps(result))
        return result
    model_dir = args.model_dir or WORK / "gpu-auto"
    WORK.mkdir(parents=True, exist_ok=True)
    skip = cuda_status()
    began = time.perf_counter()
    report: dict = {"date": date.today().isoformat(), "cuda": skip or "available"}
    report["environment"] = environment()
    steps = {
        "tests": lambda: step_tests(skip, args.test_timeout, args.test_parts),
        "training": lambda: step_training(skip, args.epochs),
        "export": lambda: step_export(skip, model_dir),
        "model_alone": lambda: step_model_alone(skip, args.quick, model_dir),
        "end_to_end": lambda: step_end_to_end(skip, args.rows, model_dir),
    }
    wanted = set(args.steps.split(","))
    unknown = wanted - set(steps)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; use {', '.join(steps)}")
    for name, step in steps.items():
        report[name] = guarded(name, step) if name in wanted else {"not_run": "--steps"}
    report["seconds"] = time.perf_counter() - began
    gpu = report["environment"].get("gpu") or "no-gpu"
    stem = args.out / f"{report['date']}-{re.sub(r'[^A-Za-z0-9]+', '-', gpu).strip('-').lower()}"
    if wanted != set(steps):  # a call of a split check: each keeps its own file
        stem = stem.with_name(stem.name + "-" + "-".join(n for n in steps if n in wanted))
    args.out.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(f"device check done in {report['seconds']:.0f}s ({report['cuda']}); saved {stem}.json")
    return report


if __name__ == "__main__":
    main()

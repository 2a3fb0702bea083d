"""The device check for a CUDA host (an H100/H200 with 16 cores, no network), in <= 8 minutes.

    python -m benchmarks.gpu [--rows 4000000] [--quick]

1. pytest's CUDA tests (they skip elsewhere);
2. two epochs of the default model on CUDA, fp32 against AMP (fp16 + GradScaler);
3. the export of every graph (CPU, CUDA, CUDA fp16), validated on the CUDA provider;
4. the model alone: reviews/s of each graph on CUDA at batch 2k, 16k and 64k, and of the CPU
   graph on all of the host's cores, in the same run;
5. `scorer run` end to end on >= 4M real reviews with --device cuda, then --device cpu:
   reviews/s, stage split, peak host RSS and peak GPU memory;
6. the GPU, driver, CUDA/cuDNN and library versions.

Writes benchmarks/results/<date>-<gpu>.json and .md. Without CUDA every CUDA step is reported
as skipped with its reason (a dry run; tests/test_benchmarks.py runs it here).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
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


def step_tests(skip: str | None) -> dict:
    if skip:
        return {"skipped": skip}
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py",
         "tests/test_train.py", "-k", "cuda"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-500:]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error)", tail)}
    return {
        "returncode": done.returncode,
        "summary": tail,
        **counts,
        "seconds": time.perf_counter() - began,
    }


def step_training(skip: str | None, epochs: int) -> dict:
    if skip:
        return {"skipped": skip}
    from scorer.data import DEFAULT_TEXT_COLUMNS
    from scorer.presets import resolve
    from scorer.train import TrainJob, train_model

    results = {}
    for precision in ("fp32", "fp16"):
        model, tok, train = resolve(
            {"epochs": epochs, "device": "cuda", "precision": precision, "budget": 0}
        )
        result = train_model(
            TrainJob(DEFAULT_REVIEWS, WORK / f"gpu-{precision}", model, tok, train,
                     DEFAULT_TEXT_COLUMNS, split_file=DEFAULT_SPLIT, overwrite=True)
        )  # fmt: skip
        metrics = json.loads((result.model_dir.path / "metrics.json").read_text())
        results[precision] = {
            "seconds_per_epoch": median([h["seconds"] for h in metrics["history"]]),
            "val": {k: metrics["val"][k] for k in ("accuracy", "rmse_expected")},
            "precision": metrics["precision"],
            "batch": metrics.get("batch"),
        }
    return results


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


def step_model_alone(skip: str | None, quick: bool, model_dir: Path) -> dict:
    import onnxruntime as ort

    from benchmarks.common import interleaved
    from scorer.cpus import available_cpus
    from scorer.session import CpuRunner, DeviceRunner, open_session, slice_rows_for

    if not (model_dir / "model.onnx").is_file():
        return {"skipped": f"no exported model in {model_dir} ({skip or 'export failed'})"}
    config = json.loads((model_dir / "config.json").read_text())["model"]
    hidden, vocab_size = config["hidden_dim"], config["vocab_size"]
    contenders = {
        "cpu folded, all cores": CpuRunner(
            open_session(ort, model_dir / "model.onnx", "cpu"),
            available_cpus(),
            slice_rows_for(hidden),
        )
    }
    if not skip:
        for name in ("model.cuda.onnx", "model.cuda.fp16.onnx", "model.onnx"):
            sessions = [open_session(ort, model_dir / name, "cuda") for _ in range(2)]
            contenders[f"cuda {name}"] = DeviceRunner(ort, sessions, "cuda")
    rng = np.random.default_rng(0)
    results: dict = {}
    for batch in BATCHES[:1] if quick else BATCHES:
        ids = rng.integers(2, vocab_size, size=(batch, 70)).astype(np.int32)
        lengths = np.full(batch, 70, dtype=np.int64)
        work = [(ids, lengths)] * 4
        calls = {name: (lambda r=r, w=work: r.run(w)) for name, r in contenders.items()}
        times = interleaved(calls, repeats=3)
        results[str(batch)] = {name: 4 * batch / median(t) for name, t in times.items()}
    if skip:
        results["cuda"] = {"skipped": skip}
    return results


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
    args = parser.parse_args(argv)
    model_dir = args.model_dir or WORK / "gpu-fp16"
    WORK.mkdir(parents=True, exist_ok=True)
    skip = cuda_status()
    began = time.perf_counter()
    report: dict = {"date": date.today().isoformat(), "cuda": skip or "available"}
    report["environment"] = environment()
    report["tests"] = step_tests(skip)
    report["training"] = step_training(skip, args.epochs)
    report["export"] = step_export(skip, model_dir)
    report["model_alone"] = step_model_alone(skip, args.quick, model_dir)
    report["end_to_end"] = step_end_to_end(skip, args.rows, model_dir)
    report["seconds"] = time.perf_counter() - began
    gpu = report["environment"].get("gpu") or "no-gpu"
    stem = args.out / f"{report['date']}-{re.sub(r'[^A-Za-z0-9]+', '-', gpu).strip('-').lower()}"
    args.out.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(f"device check done in {report['seconds']:.0f}s ({report['cuda']}); saved {stem}.json")
    return report


if __name__ == "__main__":
    main()

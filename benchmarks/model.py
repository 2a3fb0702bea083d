"""Model alone: onnxruntime (each export option) against torch eager, and the FLOP ceiling.

    python -m benchmarks.model --model-dir runs/bench/ref-packed [--batches 256 1024 4096]

Inputs are the same random ids for every contender (all reviews at full length, so padding
plays no part), runs are interleaved, each figure is the median of the repeats.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import interleaved, machine, median, save

THREADS = 2


def gemm_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Measured fp32 GEMM throughput of this CPU (torch, THREADS threads)."""
    import torch

    torch.set_num_threads(THREADS)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def lstm_flops_per_token(embedding: int, hidden: int, directions: int, folded: bool) -> int:
    """Forward multiply-adds x2 of the LSTM; folding removes the input projection."""
    per_direction = 8 * hidden * hidden if folded else 8 * hidden * (embedding + hidden)
    return per_direction * directions


def naive_export(model, path: Path, batch: int, width: int) -> None:
    """Plain torch.onnx.export of the trained module itself (the baseline to beat)."""
    import dataclasses
    import warnings

    import torch

    from scorer.model import ReviewLSTM

    # The packed module exports pack_padded_sequence with the example batch baked in, so the
    # baseline uses the same weights without packing (identical at full length).
    plain = ReviewLSTM(dataclasses.replace(model.config, packed=False))
    plain.load_state_dict(model.state_dict())
    plain.eval()
    ids = torch.ones((batch, width), dtype=torch.int64)
    lengths = torch.full((batch,), width, dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            plain,
            (ids, lengths),
            str(path),
            input_names=["input_ids", "lengths"],
            output_names=["logits"],
            dynamic_axes={"input_ids": {0: "b", 1: "t"}},
            opset_version=17,
            dynamo=False,
        )


def sessions(model_dir: Path, work: Path, batch: int, width: int) -> dict[str, object]:
    import onnxruntime as ort

    from export.onnx_export import export_model
    from scorer.model_dir import ModelDir

    model = ModelDir.open(model_dir).load_model()
    naive = work / "naive.onnx"
    naive_export(model, naive, batch, width)
    result = export_model(model_dir, work / "model.onnx", int8=True)
    optimized = work / "model.optimized.onnx"

    def session(path: Path, level: str = "ORT_ENABLE_ALL", save_to: Path | None = None):
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        if save_to is not None:
            options.optimized_model_filepath = str(save_to)
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    session(result.path, save_to=optimized)  # writes the offline-optimized graph
    naive_options = ort.SessionOptions()
    naive_options.intra_op_num_threads = THREADS
    return {
        "onnx naive export (ort defaults)": ort.InferenceSession(
            str(naive), naive_options, providers=["CPUExecutionProvider"]
        ),
        "onnx scorer export": session(result.path),
        "onnx scorer export, offline-optimized": session(optimized, "ORT_DISABLE_ALL"),
        "onnx scorer export, int8": session(result.extras["int8"]),
        "_model": model,
        "_report": result.report,
    }


def run(model_dir: Path, batches: list[int], width: int, repeats: int) -> dict[str, object]:
    import torch

    torch.set_num_threads(THREADS)
    rng = np.random.default_rng(0)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        made = sessions(model_dir, Path(tmp), max(batches), width)
        model = made.pop("_model")
        report = made.pop("_report")
        config = model.config
        for batch in batches:
            ids = rng.integers(2, config.vocab_size, size=(batch, width)).astype(np.int32)
            lengths = np.full(batch, width, dtype=np.int64)
            t_ids, t_len = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(lengths)
            contenders = {name: _ort_call(session, ids, lengths) for name, session in made.items()}

            def eager(t_ids=t_ids, t_len=t_len):
                with torch.inference_mode():
                    model(t_ids, t_len)

            contenders["torch eager"] = eager
            times = interleaved(contenders, repeats=repeats)
            results[str(batch)] = {name: batch / median(ts) for name, ts in times.items()}
    gflops = gemm_gflops()
    directions = 2 if config.bidirectional else 1
    flops = {
        folded: lstm_flops_per_token(config.embedding_dim, config.hidden_dim, directions, folded)
        * width
        for folded in (False, True)
    }
    ceiling = {
        "unfolded": gflops * 1e9 / flops[False],
        "folded": gflops * 1e9 / flops[True],
    }
    return {
        "machine": machine(),
        "threads": THREADS,
        "model": {
            "embedding": config.embedding_dim,
            "hidden": config.hidden_dim,
            "bidirectional": config.bidirectional,
            "length": width,
        },
        "validation": report.line(),
        "reviews_per_s": results,
        "gemm_gflops": gflops,
        "flop_ceiling_reviews_per_s": ceiling,
    }


def _ort_call(session, ids: np.ndarray, lengths: np.ndarray):
    names = {i.name for i in session.get_inputs()}
    feeds = {
        "input_ids": ids if "lengths" in names and _is_int32(session) else ids.astype(np.int64)
    }
    if "lengths" in names:
        feeds["lengths"] = lengths
    return lambda: session.run(None, feeds)


def _is_int32(session) -> bool:
    return session.get_inputs()[0].type == "tensor(int32)"


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--width", type=int, default=70)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    result = run(args.model_dir, args.batches, args.width, args.repeats)
    for batch, rates in result["reviews_per_s"].items():
        naive = rates["onnx naive export (ort defaults)"]
        for name, rate in rates.items():
            print(
                f"batch {batch:>5}  {name:40s} {rate:10,.0f} reviews/s  ({rate / naive:.2f}x naive)"
            )
    ceiling = result["flop_ceiling_reviews_per_s"]
    best = max(result["reviews_per_s"][str(max(args.batches))].values())
    print(
        f"GEMM {result['gemm_gflops']:.0f} GFLOP/s -> ceiling {ceiling['unfolded']:,.0f} reviews/s "
        f"unfolded, {ceiling['folded']:,.0f} folded; best reached {best / ceiling['unfolded']:.0%}"
        " of the unfolded ceiling"
    )
    print(f"saved {save('model', result)}")
    return result


if __name__ == "__main__":
    main()

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
from scorer.train.checkpoint import load_model

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

    from scorer.nn.model import ReviewLSTM

    # The packed module exports pack_padded_sequence with the example batch baked in, so the
    # baseline uses the same weights without packing (identical at full length).
    plain = ReviewLSTM(dataclasses.replace(model.config, packed=False))
    plain.load_state_dict(model.state_dict())
    plain.eval()

    class TwoInputs(torch.nn.Module):
        # The legacy exporter fills every parameter of forward() from its signature, the
        # keyword-only ones included, and then passes them positionally.
        def __init__(self) -> None:
            super().__init__()
            self.inner = plain

        def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            return self.inner(ids, lengths)

    ids = torch.ones((batch, width), dtype=torch.int64)
    lengths = torch.full((batch,), width, dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            TwoInputs(),
            (ids, lengths),
            str(path),
            input_names=["input_ids", "lengths"],
            output_names=["logits"],
            dynamic_axes={"input_ids": {0: "b", 1: "t"}, "lengths": {0: "b"}},
            opset_version=17,
            dynamo=False,
        )


NAIVE = "onnx naive export (ort defaults)"
SCORER = "onnx folded export, as scorer run runs it"


def runners(model_dir: Path, work: Path, width: int):
    """name -> (ids, lengths) -> zero-argument call scoring them once; the model; the report.

    "2 intra-op threads" is one call with onnxruntime splitting each op over 2 threads;
    "2 x 1-thread slices" is how `scorer run` calls a model on CPU
    (scorer.runtime.session.OnnxScorer:
    slices of <= 1024 rows, run concurrently by single-threaded calls). The naive export is
    measured both ways, so the gain of each change is visible on its own.
    """
    import onnxruntime as ort

    from scorer.export.onnx_export import export_graph, quantize_int8
    from scorer.runtime.model_dir import ModelDir
    from scorer.runtime.session import CpuRunner, open_session, slice_rows_for

    directory = ModelDir.open(model_dir)
    model = load_model(directory)
    hidden = model.config.hidden_dim
    naive = work / "naive.onnx"
    naive_export(model, naive, 2, width)
    folded, fused = work / "folded.onnx", work / "fused.onnx"
    report = export_graph(model_dir, folded, fold=True)
    export_graph(model_dir, fused, fold=False)
    int8_path = quantize_int8(fused, work / "int8.onnx", directory)
    optimized = work / "folded.optimized.onnx"

    def session(path: Path, threads: int, level: str = "ORT_ENABLE_ALL", save_to=None):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        if save_to is not None:
            options.optimized_model_filepath = str(save_to)
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    session(folded, 1, save_to=optimized)  # writes the offline-optimized graph
    naive_options = ort.SessionOptions()
    naive_options.intra_op_num_threads = THREADS
    naive_session = ort.InferenceSession(
        str(naive), naive_options, providers=["CPUExecutionProvider"]
    )
    # How `scorer run` calls a graph on CPU (scorer.runtime.session.CpuRunner).
    fp32 = CpuRunner(open_session(ort, folded, "cpu"), THREADS, slice_rows_for(hidden))
    int8 = CpuRunner(open_session(ort, int8_path, "cpu"), THREADS, slice_rows_for(hidden))
    made = {
        NAIVE: _whole(naive_session),
        "onnx naive export, 2 x 1-thread slices": _sliced(session(naive, 1), hidden),
        "onnx fused export (LSTM op), 2 intra-op threads": _whole(session(fused, THREADS)),
        "onnx folded export, 2 intra-op threads": _whole(session(folded, THREADS)),
        "onnx folded export, offline-optimized, 2 x 1-thread slices": _sliced(
            session(optimized, 1, "ORT_DISABLE_ALL"), hidden
        ),
        "onnx int8 (fused), 2 intra-op threads": _whole(session(int8_path, THREADS)),
        "onnx int8 (fused), 2 x 1-thread slices": lambda ids, lengths: (
            lambda: int8.run([(ids, lengths)])
        ),
        SCORER: lambda ids, lengths: lambda: fp32.run([(ids, lengths)]),
    }
    return made, model, report


def run(model_dir: Path, batches: list[int], width: int, repeats: int) -> dict[str, object]:
    import torch

    torch.set_num_threads(THREADS)
    rng = np.random.default_rng(0)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        made, model, report = runners(model_dir, Path(tmp), width)
        config = model.config
        for batch in batches:
            ids = rng.integers(2, config.vocab_size, size=(batch, width)).astype(np.int32)
            lengths = np.full(batch, width, dtype=np.int64)
            calls = {name: make(ids, lengths) for name, make in made.items()}
            t_ids, t_len = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(lengths)

            def eager(t_ids=t_ids, t_len=t_len):
                with torch.inference_mode():
                    model(t_ids, t_len)

            calls["torch eager"] = eager
            times = interleaved(calls, repeats=repeats)
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


def _feeds(session, ids: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
    inputs = {i.name: i.type for i in session.get_inputs()}
    dtype = np.int32 if inputs["input_ids"] == "tensor(int32)" else np.int64
    feeds = {"input_ids": ids.astype(dtype)}
    if "lengths" in inputs:
        feeds["lengths"] = lengths
    return feeds


def _whole(session):
    """One call on the whole batch."""

    def make(ids: np.ndarray, lengths: np.ndarray):
        feeds = _feeds(session, ids, lengths)
        return lambda: session.run(None, feeds)

    return make


def _sliced(session, hidden: int):
    """Concurrent single-threaded calls on the scorer's CPU slices, through IO binding as in
    scorer.runtime.session.OnnxScorer (for graphs whose inputs differ from the contract's)."""
    from concurrent.futures import ThreadPoolExecutor

    from scorer.runtime.session import plan_slices, slice_rows_for

    pool = ThreadPoolExecutor(THREADS)
    outputs = [o.name for o in session.get_outputs()]

    def call(feeds: dict[str, np.ndarray]):
        binding = session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        for name in outputs:
            binding.bind_output(name, "cpu")
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def make(ids: np.ndarray, lengths: np.ndarray):
        plan = plan_slices([len(ids)], [ids.shape[1]], THREADS, slice_rows_for(hidden))
        slices = [s for _, s in plan]
        parts = [_feeds(session, ids[s], lengths[s]) for s in slices]
        return lambda: list(pool.map(call, parts))

    return make


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--width", type=int, default=70)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    result = run(args.model_dir, args.batches, args.width, args.repeats)
    for batch, rates in result["reviews_per_s"].items():
        naive = rates[NAIVE]
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

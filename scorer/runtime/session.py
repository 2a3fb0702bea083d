"""onnxruntime sessions: which graph file, which provider really runs, and how batches flow.

A model directory holds one graph per provider (``scorer.runtime.contract.GRAPH_FILES``): the folded
``Scan`` graph for the CPU, the fused ``LSTM`` graph (cuDNN) for CUDA, plus optional fp16
(CUDA) and int8 (CPU) variants. The provider that really runs picks the file and the thread
settings: onnxruntime silently falls back to the CPU when it cannot create the CUDA provider,
so the session is checked and, under ``--device auto``, reopened with the CPU graph and CPU
settings (``--device cuda`` refuses the fallback).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from scorer.errors import UserError
from scorer.io.files import file_sha256
from scorer.runtime.contract import GRAPH_FILES, PRECISIONS
from scorer.runtime.cpus import available_cpus

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# Rows per inference call when --batch-size is not given. CPU: slices sized to L2 (below)
# make 2,048 a good batch. CUDA: a provisional value until the device check
# (benchmarks/gpu.py) has measured the best size on an H100.
DEFAULT_BATCH = {"cpu": 2048, "cuda": 16_384}
# On CPU a batch is cut into slices run concurrently by single-threaded calls: one thread per
# slice beats onnxruntime splitting every op of the folded graph's time loop across threads
# (benchmarks/model.py). A slice keeps one step's gate tensor [rows, 4H] fp32 within a core's
# L2 (1 MiB is typical): measured best at 1024 rows for H=50 and 256-512 for H=128.
L2_BYTES = 1 << 20
# Slices are never cut below this many rows to give every worker work: a call's fixed cost
# (binding, copies, the GIL) then stays small against its rows.
MIN_SLICE_ROWS = 256
# CUDA: batches alternate between this many sessions (each has its own stream), so one
# batch's host-to-device copy overlaps another's compute.
CUDA_STREAMS = 2


def onnxruntime() -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError(
            "onnxruntime is not installed: pip install 'scorer[cpu]' (or 'scorer[gpu]' on CUDA)"
        ) from None
    return ort


class Runner(Protocol):
    def run(self, batches: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, ...]]:
        """(probs, expected) of each (ids, lengths) batch, in order."""
        ...

    def close(self) -> None: ...


def _bind_host(session, ids: np.ndarray, lengths: np.ndarray):
    binding = session.io_binding()
    binding.bind_cpu_input("input_ids", np.ascontiguousarray(ids, dtype=np.int32))
    binding.bind_cpu_input("lengths", np.ascontiguousarray(lengths, dtype=np.int64))
    for name in ("probs", "expected_rating"):
        binding.bind_output(name, "cpu")
    session.run_with_iobinding(binding)
    probs, expected = binding.copy_outputs_to_cpu()
    return probs, expected


@dataclass
class CpuRunner:
    """A chunk's batches cut into slices (``plan_slices``) run by ``workers`` single-threaded
    calls, all of the chunk's slices at once, the costliest first."""

    session: Any
    workers: int
    slice_rows: int
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)

    def run(self, batches):
        plan = plan_slices(
            [len(ids) for ids, _ in batches],
            [ids.shape[1] for ids, _ in batches],
            self.workers,
            self.slice_rows,
        )

        def call(piece: tuple[int, slice]):
            ids, lengths = batches[piece[0]]
            return _bind_host(self.session, ids[piece[1]], lengths[piece[1]])

        if len(plan) == 1:
            results = [call(plan[0])]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="onnxruntime")
            results = list(self._pool.map(call, plan))
        # Back in each batch's row order.
        parts: list[list] = [[] for _ in batches]
        for (index, _), result in sorted(
            zip(plan, results, strict=True), key=lambda item: (item[0][0], item[0][1].start)
        ):
            parts[index].append(result)
        return [
            (np.concatenate([p for p, _ in pieces]), np.concatenate([e for _, e in pieces]))
            if len(pieces) > 1
            else pieces[0]
            for pieces in parts
        ]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


@dataclass
class DeviceRunner:
    """Device-resident IO over several sessions (streams): each batch is copied to the
    device once, its outputs stay there until the whole chunk is done, and batches alternate
    between sessions on as many threads, so copies overlap compute. ``device="cpu"`` is its
    CPU twin (same code path; tested here, where there is no GPU)."""

    ort: Any
    sessions: list
    device: str = "cuda"
    device_id: int = 0
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)

    def run(self, batches):
        if self._pool is None:
            self._pool = ThreadPoolExecutor(len(self.sessions), thread_name_prefix="ort-stream")
        lanes = [batches[k :: len(self.sessions)] for k in range(len(self.sessions))]
        done = list(self._pool.map(self._lane, self.sessions, lanes))
        # One copy back per output once every batch has run.
        out: list = [None] * len(batches)
        for k, results in enumerate(done):
            for j, values in enumerate(results):
                out[k + j * len(self.sessions)] = tuple(v.numpy() for v in values)
        return out

    def _lane(self, session, batches):
        ortvalue = self.ort.OrtValue.ortvalue_from_numpy
        results = []
        for ids, lengths in batches:
            binding = session.io_binding()
            ids = np.ascontiguousarray(ids, dtype=np.int32)
            lengths = np.ascontiguousarray(lengths, dtype=np.int64)
            binding.bind_ortvalue_input("input_ids", ortvalue(ids, self.device, self.device_id))
            binding.bind_ortvalue_input("lengths", ortvalue(lengths, self.device, self.device_id))
            for name in ("probs", "expected_rating"):
                binding.bind_output(name, self.device, self.device_id)
            session.run_with_iobinding(binding)
            results.append(binding.get_outputs())
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


@dataclass
class OnnxScorer:
    """An inference session set; ``device``, ``provider`` and ``path`` say what really runs."""

    runner: Runner
    path: Path
    precision: str
    device: str
    provider: str
    sha256: str
    card: dict
    metadata: dict[str, str]
    batch_size: int
    workers: int = 1
    notes: tuple[str, ...] = ()

    def score(self, ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probs [n, K], expected [n]) for a chunk of rows: rows are sorted by length and
        batched (little padding), and results come back in the rows' order."""
        n = len(lengths)
        labels = len(self.card["labels"])
        probs = np.empty((n, labels), dtype=np.float32)
        expected = np.empty(n, dtype=np.float32)
        order = np.argsort(lengths, kind="stable")
        batches, rows = [], []
        for start in range(0, n, self.batch_size):
            picked = order[start : start + self.batch_size]
            batch_lengths = lengths[picked].astype(np.int64)
            # Widths rounded up to a multiple of 8 (exact: padding is masked by lengths) keep
            # the number of distinct shapes small, so onnxruntime's arena reuses its blocks.
            width = min(-(-max(int(batch_lengths.max()), 1) // 8) * 8, ids.shape[1])
            if len(picked) == 1:
                # A one-row call takes another GEMM path whose last bits differ: run the row
                # twice, so a row's scores never depend on the rows scored beside it (an
                # incremental run rescores a few rows and must equal a full run).
                batches.append((ids[[picked[0]] * 2, :width], np.repeat(batch_lengths, 2)))
            else:
                batches.append((ids[picked, :width], batch_lengths))
            rows.append(picked)
        for picked, (p, e) in zip(rows, self.runner.run(batches), strict=True):
            probs[picked], expected[picked] = p[: len(picked)], e[: len(picked)]
        return probs, expected

    def run(self, ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One batch as given (no sorting): for tests and benchmarks."""
        probs, expected = self.runner.run([(ids, lengths)])[0]
        return probs, expected

    def close(self) -> None:
        self.runner.close()


def slice_rows_for(hidden: int) -> int:
    """The largest power of two of rows whose [rows, 4 * hidden] fp32 fits L2_BYTES."""
    rows = L2_BYTES // (16 * max(hidden, 1))
    return max(64, 1 << (rows.bit_length() - 1)) if rows else 64


def cpu_slices(rows: int, count: int) -> list[slice]:
    """``count`` near-equal slices covering ``rows`` rows in order (one when rows is 0)."""
    count = max(min(count, rows), 1)
    bounds = np.linspace(0, rows, count + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in pairwise(bounds)]


def plan_slices(
    rows: Sequence[int],
    widths: Sequence[int],
    workers: int,
    slice_rows: int,
    min_rows: int = MIN_SLICE_ROWS,
) -> list[tuple[int, slice]]:
    """(batch, rows) of each call for a chunk's batches, costliest first.

    Each batch is cut into near-equal slices of at most ``slice_rows`` rows (L2_BYTES); then,
    while there are fewer than two slices per worker, the batch whose slices cost most (rows x
    width) and hold at least ``2 * min_rows`` rows is cut into one slice more. Cutting every
    batch into ``workers`` slices instead gave 16 workers slices of 128 rows and a wait for
    the slowest of 16 after every batch: here the only wait is the chunk's last slice, and it
    is one of the cheapest."""
    counts = [-(-n // slice_rows) if n else 1 for n in rows]
    while sum(counts) < 2 * workers:
        costs = [
            (rows[i] / counts[i]) * widths[i] if rows[i] / counts[i] >= 2 * min_rows else -1.0
            for i in range(len(rows))
        ]
        best = int(np.argmax(costs)) if costs else 0
        if not costs or costs[best] < 0:
            break
        counts[best] += 1
    plan = [(i, s) for i, n in enumerate(rows) for s in cpu_slices(n, counts[i])]
    return sorted(plan, key=lambda p: -(p[1].stop - p[1].start) * widths[p[0]])


def graph_file(model_dir: Path, device: str, precision: str) -> Path:
    return Path(model_dir) / GRAPH_FILES[(device, precision)]


def choose_precision(model_dir: Path, device: str, precision: str) -> str:
    """The precision to run on ``device``; refuses ones that cannot run there."""
    if precision not in ("auto", *PRECISIONS):
        raise UserError(f"--precision must be auto, {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "auto":
        # CUDA: fp16 when exported (validated at export); CPU: fp32, as fast as int8 here.
        fp16 = graph_file(model_dir, "cuda", "fp16")
        return "fp16" if device == "cuda" and fp16.is_file() else "fp32"
    if (device, precision) not in GRAPH_FILES:
        if precision == "int8":
            raise UserError(
                "--precision int8 runs on the CPU only (DynamicQuantizeLSTM has no CUDA "
                "kernel): use --device cpu, or fp32/fp16 on CUDA"
            )
        raise UserError(f"--precision {precision} runs on CUDA only; use fp32 or int8 on the CPU")
    return precision


def open_session(ort, path: Path, device: str, threads: int = 1):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # onnxruntime's own multi-line warning about a CUDA fallback is replaced by one line of
    # ours; errors still show.
    options.log_severity_level = 3
    providers = [CUDA, CPU] if device == "cuda" else [CPU]
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise UserError(f"cannot load {path}: {str(exc).strip().splitlines()[0]}") from None


def _require_file(model_dir: Path, device: str, precision: str) -> Path:
    path = graph_file(model_dir, device, precision)
    if not path.is_file():
        hint = {"fp16": " --fp16", "int8": " --int8"}.get(precision, "")
        raise UserError(
            f"{model_dir} has no {path.name} ({device}, {precision}): run `scorer export "
            f"{model_dir}{hint}`"
        )
    return path


def open_scorer(
    model_dir: Path,
    *,
    device: str = "auto",
    precision: str = "auto",
    threads: int | None = None,
    batch_size: int | None = None,
    streams: int = CUDA_STREAMS,
    verify: Callable[[Path], None] | None = None,
) -> OnnxScorer:
    """A scorer on the provider that really runs (see the module docstring). ``verify`` is
    called on a graph file before onnxruntime ever reads it."""
    verify = verify or (lambda path: None)
    ort = onnxruntime()
    model_dir = Path(model_dir)
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda, got {device!r}")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    cuda_built = CUDA in ort.get_available_providers()
    if device == "cuda" and not cuda_built:
        raise UserError(
            "--device cuda: this onnxruntime has no CUDA provider (install 'scorer[gpu]', "
            "and never onnxruntime and onnxruntime-gpu together)"
        )
    notes: list[str] = []
    want_cuda = device == "cuda" or (device == "auto" and cuda_built and precision != "int8")
    if want_cuda:
        chosen = choose_precision(model_dir, "cuda", precision)
        path = graph_file(model_dir, "cuda", chosen)
        if path.is_file() or device == "cuda":
            path = _require_file(model_dir, "cuda", chosen)
            verify(path)
            scorer = _open_cuda(ort, model_dir, path, chosen, batch_size, streams)
            if scorer is not None:
                return scorer
            if device == "cuda":
                raise UserError(
                    "--device cuda: onnxruntime could not create its CUDA provider (no "
                    "device, or the CUDA 13 / cuDNN 9 libraries are missing: "
                    "pip install 'scorer[gpu]')"
                )
            notes.append("the CUDA provider could not be created; scoring on the CPU")
        else:
            notes.append(f"{model_dir} has no CUDA graph ({path.name}); scoring on the CPU")
    if precision == "fp16":
        if device == "cpu":
            raise UserError("--precision fp16 runs on CUDA only; use fp32 or int8 on the CPU")
        notes.append("fp16 runs on CUDA only; scoring the fp32 graph on the CPU")
    chosen = choose_precision(model_dir, "cpu", "auto" if precision == "fp16" else precision)
    path = _require_file(model_dir, "cpu", chosen)
    verify(path)
    workers = threads or available_cpus()
    session = open_session(ort, path, "cpu", threads=1)
    metadata = _metadata(session, path)
    hidden = int(metadata["card"]["model"]["hidden_dim"])
    runner = CpuRunner(session, workers, slice_rows_for(hidden))
    return _scorer(runner, path, chosen, "cpu", CPU, metadata, batch_size, workers, notes)


def _open_cuda(ort, model_dir, path, precision, batch_size, streams) -> OnnxScorer | None:
    if hasattr(ort, "preload_dlls"):
        # onnxruntime-gpu finds CUDA and cuDNN in the nvidia-*-cu13 wheels only once loaded;
        # a failed preload shows as the CPU fallback checked below.
        with contextlib.suppress(Exception):
            ort.preload_dlls()
    sessions = [open_session(ort, path, "cuda") for _ in range(max(1, streams))]
    provider = sessions[0].get_providers()[0]
    if provider != CUDA:
        return None
    metadata = _metadata(sessions[0], path)
    runner = DeviceRunner(ort, sessions, "cuda")
    return _scorer(runner, path, precision, "cuda", provider, metadata, batch_size, 1, [])


def _metadata(session, path: Path) -> dict:
    from scorer.runtime.contract import parse_metadata

    return parse_metadata(dict(session.get_modelmeta().custom_metadata_map), path)


def _scorer(runner, path, precision, device, provider, metadata, batch_size, workers, notes):
    return OnnxScorer(
        runner=runner,
        path=path,
        precision=precision,
        device=device,
        provider=provider,
        sha256=file_sha256(path),
        card=metadata["card"],
        metadata=metadata["raw"],
        batch_size=batch_size or DEFAULT_BATCH[device],
        workers=workers,
        notes=tuple(notes),
    )

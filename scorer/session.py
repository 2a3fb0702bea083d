"""onnxruntime on CUDA or CPU: which model file, which provider really runs, IO binding."""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np

from scorer.contract import META_CARD, META_VOCAB_SHA256
from scorer.errors import UserError

FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
# On CPU a batch is cut into slices run concurrently by single-threaded calls: one thread per
# slice beats onnxruntime splitting every op of the folded graph's time loop across threads
# (benchmarks/model.py). A slice keeps one step's gate tensor [rows, 4H] fp32 within a core's
# L2 (1 MiB is typical): measured best at 1024 rows for H=50 and 256-512 for H=128.
L2_BYTES = 1 << 20


def _onnxruntime():
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError(
            "onnxruntime is not installed: pip install 'scorer[cpu]' (or 'scorer[gpu]' on CUDA)"
        ) from None
    return ort


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pick_model_file(model_dir: Path, precision: str) -> tuple[Path, str]:
    """``auto`` is fp32: on the CPUs measured so far the int8 model is no faster (see the
    README's performance table), so it is used only when asked for."""
    if precision not in ("auto", *FILES):
        raise UserError(f"--precision must be auto, fp32 or int8, got {precision!r}")
    if precision == "auto":
        precision = "fp32"
    path = model_dir / FILES[precision]
    if not path.is_file():
        hint = "" if precision == "fp32" else f" (export with --{precision})"
        raise UserError(f"{model_dir} has no {FILES[precision]}; run `scorer export`{hint}")
    return path, precision


@dataclass
class OnnxScorer:
    """One inference session; ``device`` and ``provider`` say what actually runs.

    On CPU the session runs single-threaded calls from ``workers`` threads, each on a slice of
    the batch (onnxruntime sessions accept concurrent calls); on CUDA one call takes the batch.
    """

    session: object
    path: Path
    precision: str
    device: str
    provider: str
    sha256: str
    card: dict
    vocab_sha256: str
    workers: int = 1
    slice_rows: int = 1024
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)

    def run(self, ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probs [B, K], expected [B]) for a batch (see the class docstring)."""
        if self.device == "cpu":
            slices = cpu_slices(len(ids), self.workers, self.slice_rows)
        else:
            slices = [slice(None)]
        if len(slices) == 1:
            return self._run_one(ids, lengths)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="onnxruntime")
        parts = list(self._pool.map(lambda s: self._run_one(ids[s], lengths[s]), slices))
        return np.concatenate([p for p, _ in parts]), np.concatenate([e for _, e in parts])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _run_one(self, ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One call through IO binding (host buffers are bound directly; onnxruntime copies
        them to the device when the provider is CUDA)."""
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", np.ascontiguousarray(ids, dtype=np.int32))
        binding.bind_cpu_input("lengths", np.ascontiguousarray(lengths, dtype=np.int64))
        for name in ("probs", "expected_rating"):
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        probs, expected = binding.copy_outputs_to_cpu()
        return probs, expected


def slice_rows_for(hidden: int) -> int:
    """The largest power of two of rows whose [rows, 4 * hidden] fp32 fits L2_BYTES."""
    rows = L2_BYTES // (16 * max(hidden, 1))
    return max(64, 1 << (rows.bit_length() - 1)) if rows else 64


def cpu_slices(rows: int, workers: int, slice_rows: int) -> list[slice]:
    """Near-equal slices of at most ``slice_rows`` rows, at least one per worker."""
    count = max(min(workers, rows), -(-rows // slice_rows), 1)
    bounds = np.linspace(0, rows, count + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in pairwise(bounds)]


def cpu_workers(threads: int | None) -> int:
    if threads:
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def open_scorer(
    model_dir: Path, *, device: str = "auto", precision: str = "auto", threads: int | None = None
) -> OnnxScorer:
    ort = _onnxruntime()
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda, got {device!r}")
    available = ort.get_available_providers()
    cuda_ok = "CUDAExecutionProvider" in available
    if device == "cuda" and not cuda_ok:
        raise UserError(
            "--device cuda: this onnxruntime has no CUDA provider (install onnxruntime-gpu, "
            "and never together with onnxruntime)"
        )
    want_cuda = device == "cuda" or (device == "auto" and cuda_ok)
    path, chosen = pick_model_file(Path(model_dir), precision)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # CPU: parallel across batch slices instead of inside each op (see OnnxScorer).
    options.intra_op_num_threads = 1 if not want_cuda else (threads or 0)
    options.inter_op_num_threads = 1
    providers = (
        ["CUDAExecutionProvider", "CPUExecutionProvider"] if want_cuda else ["CPUExecutionProvider"]
    )
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise UserError(f"cannot load {path}: {str(exc).strip().splitlines()[0]}") from None
    provider = session.get_providers()[0]
    ran_cuda = provider == "CUDAExecutionProvider"
    if device == "cuda" and not ran_cuda:
        raise UserError("--device cuda: onnxruntime fell back to the CPU (check CUDA/cuDNN)")
    meta = session.get_modelmeta().custom_metadata_map
    if META_CARD not in meta:
        raise UserError(f"{path} was not written by `scorer export` (no model card metadata)")
    vocab_sha256 = meta.get(META_VOCAB_SHA256)
    card = json.loads(meta[META_CARD])
    return OnnxScorer(
        session=session,
        path=path,
        precision=chosen,
        device="cuda" if ran_cuda else "cpu",
        provider=provider,
        sha256=file_sha256(path),
        card=card,
        vocab_sha256=vocab_sha256 or "",
        workers=1 if ran_cuda else cpu_workers(threads),
        slice_rows=slice_rows_for(int(card["model"]["hidden_dim"])),
    )

"""onnxruntime on CUDA or CPU: which model file, which provider really runs, IO binding."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.contract import META_CARD, META_VOCAB_SHA256
from scorer.errors import UserError

FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}


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
    """One inference session; ``device`` and ``provider`` say what actually runs."""

    session: object
    path: Path
    precision: str
    device: str
    provider: str
    sha256: str
    card: dict
    vocab_sha256: str

    def run(self, ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probs [B, K], expected [B]) through IO binding (host buffers are bound directly;
        onnxruntime copies them to the device when the provider is CUDA)."""
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", np.ascontiguousarray(ids, dtype=np.int32))
        binding.bind_cpu_input("lengths", np.ascontiguousarray(lengths, dtype=np.int64))
        for name in ("probs", "expected_rating"):
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        probs, expected = binding.copy_outputs_to_cpu()
        return probs, expected


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
    if threads:
        options.intra_op_num_threads = threads
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
    return OnnxScorer(
        session=session,
        path=path,
        precision=chosen,
        device="cuda" if ran_cuda else "cpu",
        provider=provider,
        sha256=file_sha256(path),
        card=json.loads(meta[META_CARD]),
        vocab_sha256=vocab_sha256 or "",
    )

"""Numeric validation of an exported model against PyTorch over a grid of shapes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scorer.runtime.config import ModelCard

BATCHES = (1, 3, 64, 1000)
TOLERANCE = 1e-4
# onnxruntime's CUDA provider runs fp32 matrix products in TF32 by default (its use_tf32): 10-bit
# mantissas put a trained model's probabilities up to 6.2e-4 from PyTorch's fp32 on an H100, and
# the tests' random weights (3x their init) up to 3.6e-3. Validation checks the graph, not that
# rounding, so it runs with TF32 off (CUDA_VALIDATION_OPTIONS): the same random models then
# agree within 1.4e-6 on an H100. Scoring keeps TF32, and the GPU check holds its scores to the
# CPU provider's within 1e-3. The bar stays 1e-3 until longer sequences are measured there.
CUDA_TOLERANCE = 1e-3
CUDA_VALIDATION_OPTIONS = {"use_tf32": "0"}


class Verdict:
    """What every export check's report shares: it passes when it records no failure."""

    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def verdict(self) -> str:
        return "passed" if self.passed else "FAILED"


class Agreement(Verdict):
    """A check against a reference graph, counted in rows whose argmax differs."""

    rows: int
    argmax_mismatches: int

    @property
    def agreement(self) -> float:
        return 1.0 - self.argmax_mismatches / max(self.rows, 1)


@dataclass(frozen=True)
class ValidationReport(Verdict):
    cases: int
    worst_diff: float
    worst_case: str
    argmax_mismatches: int
    tolerance: float
    failures: list[str] = field(default_factory=list)
    provider: str = "CPUExecutionProvider"

    def line(self) -> str:
        return (
            f"validation {self.verdict} on {self.provider}: {self.cases} shape cases, worst "
            f"|probs diff| {self.worst_diff:.2e} ({self.worst_case}), "
            f"{self.argmax_mismatches} argmax differences (tolerance {self.tolerance:g})"
        )


def length_cases(max_len: int, rng: np.random.Generator) -> dict[str, object]:
    """Named length patterns: constant lengths, and a mix from 1 to max_len."""
    fixed = sorted({1, 2, min(17, max_len), max_len})
    cases: dict[str, object] = {f"len={n}": n for n in fixed}
    cases["mixed"] = lambda batch: rng.integers(1, max_len + 1, size=batch)
    return cases


def make_batch(
    batch: int, lengths, vocab_size: int, max_len: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    lens = np.asarray(lengths(batch) if callable(lengths) else np.full(batch, lengths), np.int64)
    width = int(lens.max())
    ids = rng.integers(2, max(vocab_size, 3), size=(batch, width)).astype(np.int32)
    ids[np.arange(width)[None, :] >= lens[:, None]] = 0
    return ids, lens


def torch_outputs(model, card: ModelCard, ids: np.ndarray, lengths: np.ndarray):
    import torch

    from scorer.export.graph import ReferenceOutputs

    reference = ReferenceOutputs(model, card.labels)
    if not card.model.packed:
        # The fixed-length model was trained on max_len-padded input.
        width = card.tokenizer.max_len
        ids = np.pad(ids[:, :width], ((0, 0), (0, width - min(ids.shape[1], width))))
    probs, expected = reference(torch.from_numpy(ids), torch.from_numpy(lengths))
    return probs.numpy(), expected.numpy()


def validation_provider(device: str) -> str:
    """The provider a graph for ``device`` is validated on: its own when this host has it,
    else the CPU (the README says which one each export used)."""
    import onnxruntime as ort

    if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return "CUDAExecutionProvider"
    return "CPUExecutionProvider"


def validate_against_torch(
    onnx_path: Path,
    model,
    card: ModelCard,
    *,
    tolerance: float | None = None,
    seed: int = 0,
    provider: str = "CPUExecutionProvider",
) -> ValidationReport:
    """``tolerance``: on probabilities; by default ``CUDA_TOLERANCE`` on the CUDA provider,
    else ``TOLERANCE``."""
    import onnxruntime as ort

    cuda = provider == "CUDAExecutionProvider"
    if tolerance is None:
        tolerance = CUDA_TOLERANCE if cuda else TOLERANCE
    options = CUDA_VALIDATION_OPTIONS if cuda else {}
    session = ort.InferenceSession(str(onnx_path), providers=[(provider, options)])
    if session.get_providers()[0] != provider:
        raise RuntimeError(f"could not validate {onnx_path} on {provider}")
    rng = np.random.default_rng(seed)
    worst, worst_case, mismatches, cases = 0.0, "-", 0, 0
    failures: list[str] = []
    for batch in BATCHES:
        for name, lengths in length_cases(card.tokenizer.max_len, rng).items():
            ids, lens = make_batch(
                batch, lengths, card.model.vocab_size, card.tokenizer.max_len, rng
            )
            want_probs, want_expected = torch_outputs(model, card, ids, lens)
            got_probs, got_expected = session.run(None, {"input_ids": ids, "lengths": lens})
            cases += 1
            diff = float(
                max(
                    np.abs(got_probs - want_probs).max(), np.abs(got_expected - want_expected).max()
                )
            )
            case = f"batch={batch} {name}"
            if diff > worst:
                worst, worst_case = diff, case
            bad = int((got_probs.argmax(1) != want_probs.argmax(1)).sum())
            mismatches += bad
            if diff > tolerance or bad:
                failures.append(f"{case}: diff {diff:.2e}, {bad} argmax differences")
    return ValidationReport(cases, worst, worst_case, mismatches, tolerance, failures, provider)

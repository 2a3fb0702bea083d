"""Device and per-op precision, chosen once (nanoGPT style) and passed around.

Precision is explicit per op because autocast alone does not say what runs: under CUDA
autocast torch's AutocastRNN casts cuDNN LSTMs to fp16 whatever dtype autocast was given, and
CPUs without AVX512-BF16 have no bf16 LSTM kernel. So ``bf16`` keeps the LSTM outside
autocast in fp32 (the model does it when asked, on CPU and CUDA alike), and ``metrics.json``
records what really ran.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from scorer.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# What `--precision auto` runs on CUDA: fp16 autocast with a GradScaler (the LSTM runs fp16 in
# cuDNN). Provisional: the GPU device check will time fp32 (TF32) against AMP on this model,
# and this default may change with its numbers.
CUDA_AUTO_PRECISION = "fp16"


@dataclass(frozen=True)
class Precision:
    """What each part of the model computes in, and what was asked for."""

    requested: str  # auto | fp32 | fp16 | bf16, as given
    name: str  # fp32 | fp16 | bf16, what runs
    lstm: torch.dtype  # the LSTM's compute dtype
    other: torch.dtype  # autocast dtype of the other autocast ops (the head); fp32: no autocast
    grad_scaler: bool
    tf32: bool  # fp32 matmuls and cuDNN RNNs may use TF32 tensor cores (Ampere and later)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return None if self.other == torch.float32 else self.other

    @property
    def lstm_fp32(self) -> bool:
        """The LSTM must leave the autocast region and run in fp32."""
        return self.autocast_dtype is not None and self.lstm == torch.float32

    def to_dict(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "name": self.name,
            "lstm": _dtype_name(self.lstm),
            "other": _dtype_name(self.other),
            "grad_scaler": self.grad_scaler,
            "tf32": self.tf32,
        }

    def line(self) -> str:
        """``bf16 (LSTM float32, other bfloat16, TF32)``."""
        parts = [f"LSTM {_dtype_name(self.lstm)}", f"other {_dtype_name(self.other)}"]
        parts += ["GradScaler"] * self.grad_scaler + ["TF32"] * self.tf32
        return f"{self.name} ({', '.join(parts)})"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def plan_precision(
    device_type: str, requested: str, *, bf16_native: bool, tf32_capable: bool
) -> Precision:
    """The precision for a device, from what was asked and what the hardware has (pure)."""
    if requested not in PRECISIONS:
        raise UserError(f"--precision must be {', '.join(PRECISIONS)}, got {requested!r}")
    cuda = device_type == "cuda"
    name = requested
    if requested == "auto":
        # On CPU fp32 is the fast and exact default (no fp16 kernels, bf16 mostly emulated).
        name = CUDA_AUTO_PRECISION if cuda else "fp32"
    if name == "fp16" and not cuda:
        raise UserError("--precision fp16 needs CUDA; use bf16 or fp32 on CPU")
    if name == "bf16" and cuda and not bf16_native:
        # Emulated bf16 is slower than fp32 and buys nothing.
        raise UserError("--precision bf16 needs a GPU with native bf16 (compute capability 8.0+)")
    tf32 = cuda and tf32_capable
    if name == "fp16":
        # fp16's narrow exponent range needs loss scaling.
        return Precision(requested, name, torch.float16, torch.float16, True, tf32)
    if name == "bf16":
        # bf16 has fp32's exponent range: no scaler. The LSTM stays fp32 (TF32 on CUDA).
        return Precision(requested, name, torch.float32, torch.bfloat16, False, tf32)
    return Precision(requested, name, torch.float32, torch.float32, False, tf32)


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: Precision

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = self.precision.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device.type, enabled=self.precision.grad_scaler)


def set_tf32(enabled: bool) -> None:
    """Allow (or forbid) TF32 for fp32 matmuls and cuDNN RNNs: set both ways, explicitly,
    so that a run records what it really used rather than a process-wide leftover."""
    mode = "tf32" if enabled else "ieee"
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        # torch >= 2.9 deprecates allow_tf32 and refuses mixing it with fp32_precision.
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.rnn.fp32_precision = mode
    else:
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def choose_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda, got {device!r}")
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be {', '.join(PRECISIONS)}, got {precision!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no CUDA device")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    dev = torch.device("cuda" if use_cuda else "cpu")
    # Native bf16 and TF32 both arrive with Ampere (8.0). Not torch.cuda.is_bf16_supported():
    # by default it also counts bf16 that older GPUs only emulate.
    ampere = use_cuda and torch.cuda.get_device_capability(dev) >= (8, 0)
    plan = plan_precision(dev.type, precision, bf16_native=ampere, tf32_capable=ampere)
    if use_cuda:
        set_tf32(plan.tf32)
    return Runtime(dev, plan)

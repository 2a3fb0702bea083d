"""Device, precision and autocast, chosen once (nanoGPT style) and passed around."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from scorer.errors import UserError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_DTYPES[self.precision])

    def grad_scaler(self) -> torch.amp.GradScaler:
        # Only fp16 needs loss scaling; bf16 has fp32's exponent range.
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")


def choose_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda, got {device!r}")
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise UserError(f"--precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no CUDA device")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    dev = torch.device("cuda" if use_cuda else "cpu")
    if precision == "auto":
        # Mixed precision pays on GPUs; on CPU fp32 is the fast and exact default.
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if use_cuda else "fp32"
    if precision == "fp16" and not use_cuda:
        raise UserError("--precision fp16 needs CUDA; use bf16 or fp32 on CPU")
    return Runtime(dev, precision)

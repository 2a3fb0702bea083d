"""Per-op precision: the decision table (CUDA's included, decided on CPU) and the LSTM's
escape from autocast, which is the same mechanism on CPU and CUDA."""

from __future__ import annotations

import pytest
import torch

from scorer.errors import UserError
from scorer.nn.device import CUDA_AUTO_PRECISION, Runtime, choose_runtime, plan_precision
from scorer.nn.model import ReviewLSTM
from scorer.runtime.config import ModelConfig

F16, BF16, F32 = torch.float16, torch.bfloat16, torch.float32


@pytest.mark.parametrize(
    ("device", "requested", "ampere", "expected"),
    [
        # (name, lstm, other, grad_scaler, tf32)
        ("cuda", "auto", True, (CUDA_AUTO_PRECISION, F16, F16, True, True)),
        ("cuda", "auto", False, (CUDA_AUTO_PRECISION, F16, F16, True, False)),
        ("cuda", "fp16", True, ("fp16", F16, F16, True, True)),
        ("cuda", "bf16", True, ("bf16", F32, BF16, False, True)),
        ("cuda", "fp32", True, ("fp32", F32, F32, False, True)),
        ("cuda", "fp32", False, ("fp32", F32, F32, False, False)),
        ("cpu", "auto", False, ("fp32", F32, F32, False, False)),
        ("cpu", "bf16", False, ("bf16", F32, BF16, False, False)),
        ("cpu", "fp32", True, ("fp32", F32, F32, False, False)),
    ],
)
def test_precision_plan(device, requested, ampere, expected) -> None:
    plan = plan_precision(device, requested, bf16_native=ampere, tf32_capable=ampere)
    assert (plan.name, plan.lstm, plan.other, plan.grad_scaler, plan.tf32) == expected
    assert plan.requested == requested
    # What metrics.json records.
    assert plan.to_dict()["lstm"] == str(expected[1]).removeprefix("torch.")


def test_cuda_auto_is_fp16_with_a_scaler_for_now() -> None:
    assert CUDA_AUTO_PRECISION == "fp16"


@pytest.mark.parametrize(
    ("device", "requested", "ampere", "message"),
    [
        ("cpu", "fp16", False, "needs CUDA"),
        # Emulated bf16 (before compute capability 8.0) is refused, not silently slow.
        ("cuda", "bf16", False, "native bf16"),
        ("cpu", "fp8", False, "--precision must be"),
    ],
)
def test_precision_plan_refusals(device, requested, ampere, message) -> None:
    with pytest.raises(UserError, match=message):
        plan_precision(device, requested, bf16_native=ampere, tf32_capable=ampere)


def test_cpu_runtime() -> None:
    runtime = choose_runtime("cpu", "auto")
    assert runtime.device.type == "cpu" and runtime.precision.name == "fp32"
    assert not runtime.grad_scaler().is_enabled()
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            choose_runtime("cuda")


DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("packed", [True, False])
def test_bf16_runs_the_lstm_in_fp32_outside_autocast(device, packed) -> None:
    config = ModelConfig(
        variant="packed" if packed else "fixed",
        vocab_size=30,
        num_labels=5,
        embedding_dim=8,
        hidden_dim=8,
        packed=packed,
        pooling="last+max",
    )
    model = ReviewLSTM(config).to(device)
    plan = plan_precision(device, "bf16", bf16_native=True, tf32_capable=False)
    runtime = Runtime(torch.device(device), plan)
    seen: dict[str, object] = {}

    def lstm_hook(module, args, output) -> None:
        data = args[0].data if hasattr(args[0], "batch_sizes") else args[0]
        seen["lstm_autocast"] = torch.is_autocast_enabled(device)
        seen["lstm_in"] = data.dtype
        seen["lstm_out"] = output[1][0].dtype

    def head_hook(module, args, output) -> None:
        seen["head_out"] = output.dtype

    model.lstm.register_forward_hook(lstm_hook)
    model.head.register_forward_hook(head_hook)
    ids = torch.randint(1, 30, (4, 6), device=device)
    lengths = torch.tensor([6, 3, 1, 0], device=device)
    with runtime.autocast():
        model(ids, lengths, lengths.cpu(), lstm_fp32=plan.lstm_fp32)
    assert seen == {
        "lstm_autocast": False,
        "lstm_in": torch.float32,
        "lstm_out": torch.float32,
        "head_out": torch.bfloat16,
    }


def test_cpu_lengths_give_the_same_output_as_device_lengths() -> None:
    config = ModelConfig(
        variant="packed", vocab_size=30, num_labels=5, embedding_dim=8, hidden_dim=8, packed=True
    )
    model = ReviewLSTM(config).eval()
    ids = torch.randint(1, 30, (4, 6))
    lengths = torch.tensor([6, 3, 1, 0])
    with torch.no_grad():
        assert torch.equal(model(ids, lengths), model(ids, lengths, lengths.clone()))

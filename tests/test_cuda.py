"""On a CUDA host: the CUDA graphs validate on the CUDA provider, and `scorer run --device cuda`
gives the CPU's answers (issue bars: fp32 argmax agreement >= 99.9% and max |probs diff| <=
1e-3; fp16 agreement >= 99.5%). Skipped, with the reason, where there is no CUDA."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

ort = pytest.importorskip("onnxruntime")
if "CUDAExecutionProvider" not in ort.get_available_providers():
    pytest.skip("needs onnxruntime-gpu with a CUDA device (none here)", allow_module_level=True)

from scorer.cli import main  # noqa: E402
from scorer.export.onnx_export import export_model  # noqa: E402
from scorer.train.job import train_model  # noqa: E402
from tests.helpers import write_reviews  # noqa: E402
from tests.test_train import job  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A briefly trained model (near-ties of random weights would blur the bars)."""
    root = tmp_path_factory.mktemp("cuda")
    data = write_reviews(root / "reviews.parquet", n=3000, seed=4)
    result = train_model(job(root, data, epochs=3, device="cuda"))
    export_model(result.model_dir.path, fp16=True, int8=True)
    return result.model_dir.path, data


def test_cuda_graphs_are_validated_on_the_cuda_provider(trained) -> None:
    model, _ = trained
    graphs = json.loads((model / "config.json").read_text())["graphs"]
    assert graphs["model.cuda.onnx"]["validated_on"] == "CUDAExecutionProvider"
    assert "CUDA" in graphs["model.cuda.fp16.onnx"]["validated_on"]
    assert graphs["model.onnx"]["validated_on"] == "CPUExecutionProvider"


@pytest.mark.parametrize(
    ("precision", "agreement", "max_diff"), [("fp32", 0.999, 1e-3), ("fp16", 0.995, None)]
)
def test_cuda_scores_agree_with_the_cpu(tmp_path, trained, precision, agreement, max_diff):
    model, data = trained
    outputs = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.parquet"
        chosen = precision if device == "cuda" else "fp32"
        argv = ["run", str(data), "--model", str(model), "--out", str(out), "--quiet"]
        assert main([*argv, "--device", device, "--precision", chosen]) == 0
        manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
        expected = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
        assert manifest["provider"] == expected
        outputs[device] = pl.read_parquet(out)
    cpu, cuda = outputs["cpu"], outputs["cuda"]
    assert cpu["row"].equals(cuda["row"])
    same = (cpu["predicted_rating"] == cuda["predicted_rating"]).mean()
    assert same >= agreement
    if max_diff is not None:
        probs = lambda f: f.select(pl.col("^prob_.*$")).to_numpy()  # noqa: E731
        assert np.abs(probs(cpu) - probs(cuda)).max() <= max_diff


def test_int8_on_cuda_is_refused_in_one_line(tmp_path, trained, capsys) -> None:
    model, data = trained
    argv = ["run", str(data), "--model", str(model), "--out", str(tmp_path / "o.parquet")]
    assert main([*argv, "--device", "cuda", "--precision", "int8", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "int8 runs on the CPU only" in err and err.count("\n") == 1


def test_cuda_training_records_what_really_ran(tmp_path) -> None:
    data = write_reviews(tmp_path / "r.parquet", n=600)
    result = train_model(job(tmp_path, data, epochs=1, device="cuda"))
    metrics = json.loads((result.model_dir.path / "metrics.json").read_text())
    assert metrics["device"].startswith("cuda")
    assert metrics["precision"]["name"] in ("fp16", "fp32", "bf16")

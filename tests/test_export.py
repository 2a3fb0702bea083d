from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from scorer.cli import main
from scorer.errors import UserError
from scorer.export.onnx_export import export_model, read_metadata
from scorer.export.validate import (
    make_batch,
    torch_outputs,
    validate_against_torch,
    validation_provider,
)
from scorer.runtime.contract import META_CARD, META_VOCAB_SHA256
from scorer.train.checkpoint import load_model
from tests.helpers import make_model_dir

VARIANTS = [
    ("fixed", {}),
    ("fixed", {"bidirectional": True, "pooling": "last+max"}),
    ("packed", {}),
    ("packed", {"bidirectional": True}),
    ("packed", {"bidirectional": True, "layers": 2, "pooling": "last+max"}),
    ("packed", {"layers": 2}),
    ("vectors", {"freeze_embeddings": True}),
    ("regression", {}),
    ("regression", {"packed": True, "bidirectional": True}),
]


@pytest.mark.parametrize(("variant", "options"), VARIANTS)
def test_every_variant_exports_both_graphs_validated(tmp_path, variant, options) -> None:
    model_dir = make_model_dir(tmp_path / "m", variant=variant, **options)
    result = export_model(model_dir.path)
    assert [(g.path.name, g.device) for g in result.graphs] == [
        ("model.onnx", "cpu"),
        ("model.cuda.onnx", "cuda"),
    ]
    for graph in result.graphs:
        # Each graph on its own provider where the host has it (else the CPU's), within that
        # provider's tolerance (1e-4 on the CPU, 1e-3 on CUDA's TF32).
        assert graph.validated_on == validation_provider(graph.device) == graph.report.provider
        assert graph.report.cases == 20
        assert graph.report.worst_diff <= graph.report.tolerance <= 1e-3
        assert graph.report.argmax_mismatches == 0
        onnx.checker.check_model(onnx.load(str(graph.path)))
        meta = read_metadata(graph.path)
        assert meta[META_VOCAB_SHA256] == model_dir.card.vocab_sha256
        assert json.loads(meta[META_CARD])["model"]["variant"] == variant
    assert "LSTM" in {n.op_type for n in onnx.load(str(result.graphs[1].path)).graph.node}


def test_contract_shapes_types_and_dynamic_axes(tmp_path) -> None:
    model_dir = make_model_dir(tmp_path / "m", variant="packed", bidirectional=True)
    path = export_model(model_dir.path).path
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = {i.name: (i.type, i.shape) for i in session.get_inputs()}
    outputs = {o.name: (o.type, o.shape) for o in session.get_outputs()}
    assert inputs == {
        "input_ids": ("tensor(int32)", ["batch", "seq"]),
        "lengths": ("tensor(int64)", ["batch"]),
    }
    assert outputs["probs"][0] == "tensor(float)" and outputs["probs"][1][0] == "batch"
    assert outputs["expected_rating"] == ("tensor(float)", ["batch"])
    rng = np.random.default_rng(0)
    for batch, width in [(1, 1), (7, 3), (5, 40)]:  # 40 > max_len: still runs
        ids, lengths = make_batch(batch, width, model_dir.card.model.vocab_size, width, rng)
        probs, expected = session.run(None, {"input_ids": ids, "lengths": lengths})
        assert probs.shape == (batch, 5) and expected.shape == (batch,)
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
        np.testing.assert_allclose(expected, probs @ np.arange(1, 6), atol=1e-4)


def test_packed_results_do_not_depend_on_padding_or_batch_mates(tmp_path) -> None:
    model_dir = make_model_dir(tmp_path / "m", variant="packed", bidirectional=True)
    session = ort.InferenceSession(
        str(export_model(model_dir.path).path), providers=["CPUExecutionProvider"]
    )
    ids = np.array([[5, 6, 7, 0, 0, 0, 0]], dtype=np.int32)
    alone = session.run(None, {"input_ids": ids[:, :3], "lengths": np.array([3])})[0]
    padded = session.run(None, {"input_ids": ids, "lengths": np.array([3])})[0]
    mates = np.array([[5, 6, 7, 0, 0, 0, 0], [9, 9, 9, 9, 9, 9, 9]], dtype=np.int32)
    batched = session.run(None, {"input_ids": mates, "lengths": np.array([3, 7])})[0]
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-6)
    np.testing.assert_allclose(alone[0], batched[0], atol=1e-6)


def test_regression_probs_interpolate_the_prediction(tmp_path) -> None:
    model_dir = make_model_dir(tmp_path / "m", variant="regression")
    model = load_model(model_dir)
    rng = np.random.default_rng(1)
    vocab_size = model_dir.card.model.vocab_size
    ids, lengths = make_batch(50, lambda b: rng.integers(1, 25, b), vocab_size, 24, rng)
    probs, expected = torch_outputs(model, model_dir.card, ids, lengths)
    assert np.all(probs >= 0) and np.allclose(probs.sum(1), 1, atol=1e-6)
    assert np.allclose(probs @ np.arange(1, 6), expected, atol=1e-5)
    assert np.all((expected >= 1) & (expected <= 5))


def test_int8_export_is_checked_against_fp32_with_the_readme_bars(tmp_path, caplog) -> None:
    from scorer.export.int8_check import (
        MAX_MEAN_EXPECTED_DIFF,
        MAX_P99_EXPECTED_DIFF,
        MIN_AGREEMENT,
        check_int8,
    )

    model_dir = make_model_dir(tmp_path / "m", variant="packed", bidirectional=True)
    result = export_model(model_dir.path, int8=True)
    entry = result.graphs[-1]
    assert (entry.path.name, entry.device, entry.precision) == ("model.int8.onnx", "cpu", "int8")
    assert read_metadata(entry.path)["scorer.precision"] == "int8"
    assert "DynamicQuantizeLSTM" in {n.op_type for n in onnx.load(str(entry.path)).graph.node}
    assert "pre-processing" not in caplog.text  # the quantizer's advice is filtered out
    # The README's bars, computed independently of the report the export gated on.
    rng = np.random.default_rng(2)
    vocab_size = model_dir.card.model.vocab_size
    ids, lengths = make_batch(2000, lambda b: rng.integers(1, 25, b), vocab_size, 24, rng)
    feeds = {"input_ids": ids, "lengths": lengths}
    fp32 = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    q = ort.InferenceSession(str(entry.path), providers=["CPUExecutionProvider"])
    (p32, e32), (p8, e8) = fp32.run(None, feeds), q.run(None, feeds)
    assert (p32.argmax(1) == p8.argmax(1)).mean() >= MIN_AGREEMENT
    diff = np.abs(e32 - e8)
    assert np.quantile(diff, 0.99) <= MAX_P99_EXPECTED_DIFF
    assert diff.mean() <= MAX_MEAN_EXPECTED_DIFF
    # A quantizer that broke the model is caught: another model's int8 graph fails the check.
    other = make_model_dir(tmp_path / "other", variant="packed", bidirectional=True, seed=5)
    other_int8 = export_model(other.path, int8=True).graphs[-1].path
    assert not check_int8(result.path, other_int8, model_dir.card).passed


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (
            lambda d: (d / "vocab.json").write_text(
                (d / "vocab.json").read_text().replace('"<unk>", "', '"<unk>", "zz')
            ),
            "does not match its own sha256",
        ),
        (lambda d: _edit_config(d, format_version=1), "format_version 1"),
        (lambda d: _edit_config(d, model={"hidden_dim": 9}), "does not fit config.json"),
        (lambda d: (d / "model.pt").write_bytes(b"garbage"), "cannot load"),
        (lambda d: (d / "config.json").unlink(), "config.json is missing"),
    ],
)
def test_bad_model_dir_is_refused_and_nothing_written(tmp_path, capsys, tamper, message) -> None:
    model_dir = make_model_dir(tmp_path / "m")
    tamper(model_dir.path)
    assert main(["export", str(model_dir.path)]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (model_dir.path / "model.onnx").exists()
    assert not list(model_dir.path.glob(".*tmp"))


def _edit_config(directory, **changes) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


def test_export_refuses_unknown_model_dir(tmp_path) -> None:
    with pytest.raises(UserError, match="not a model directory"):
        export_model(tmp_path / "missing")


def _reduce_inputs(path, ids: np.ndarray, lengths: np.ndarray) -> dict[str, tuple[int, ...]]:
    """The shape of what each top-level Reduce* node of a graph reads, for one batch."""
    graph = onnx.load(str(path))
    names = sorted({n.input[0] for n in graph.graph.node if n.op_type.startswith("Reduce")})
    outputs = {o.name for o in graph.graph.output}
    graph.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in outputs)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(names, {"input_ids": ids, "lengths": lengths})
    return {name: value.shape for name, value in zip(names, got, strict=True)}


@pytest.mark.parametrize("steps", [1, 2, 5])
@pytest.mark.parametrize(
    "paths", [{"wide_buckets": 64}, {"wide_buckets": 64, "linear_buckets": 32}]
)
def test_no_graph_reduces_over_an_empty_axis(tmp_path, steps, paths) -> None:
    """onnxruntime's CUDA provider refuses a sum over an empty axis (the CPU provider returns
    zeros, so CPU validation alone misses it): one-token reviews once left the wide path's
    bigram axis empty and failed every CUDA export."""
    model_dir = make_model_dir(tmp_path / "m", variant="packed", **paths)
    result = export_model(model_dir.path, fp16=True)
    ids = np.full((3, steps), 5, dtype=np.int32)
    lengths = np.full(3, steps, dtype=np.int64)
    graphs = [g.path for g in result.graphs]
    assert {p.name for p in graphs} == {"model.onnx", "model.cuda.onnx", "model.cuda.fp16.onnx"}
    for path in graphs:
        shapes = _reduce_inputs(path, ids, lengths)
        assert shapes, f"{path.name}: no Reduce node found (the wide path is missing)"
        assert {n: s for n, s in shapes.items() if 0 in s} == {}, path.name


class _Opened(Exception):
    pass


@pytest.mark.parametrize(
    ("provider", "options"),
    [("CUDAExecutionProvider", {"use_tf32": "0"}), ("CPUExecutionProvider", {})],
)
def test_validation_on_cuda_turns_tf32_off(monkeypatch, tmp_path, provider, options) -> None:
    """Validation checks the graph's arithmetic: on CUDA without TF32 (random test models are
    3.6e-3 from PyTorch with it, 1.4e-6 without, on an H100); scoring keeps TF32."""
    seen = []

    def session(path, providers):
        seen.append(providers)
        raise _Opened

    monkeypatch.setattr(ort, "InferenceSession", session)
    with pytest.raises(_Opened):
        validate_against_torch(tmp_path / "g.onnx", None, None, provider=provider)
    assert seen == [[(provider, options)]]

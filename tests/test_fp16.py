"""The fp16 CUDA graph (checked on the CPU with the reference evaluator) and the int8 check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper, shape_inference

from scorer.export.fp16 import FP16_TOLERANCE, run_reference, to_fp16, validate_fp16
from scorer.export.int8_check import check_int8
from scorer.export.onnx_export import export_model, quantize_int8
from scorer.export.validate import make_batch, torch_outputs
from scorer.runtime.contract import INPUTS, META_PRECISION, OUTPUTS
from scorer.runtime.model_dir import ModelDir
from scorer.train.checkpoint import load_model
from scorer.train.job import TrainJob, train_model
from scorer.train.presets import resolve
from tests.helpers import make_model_dir, write_reviews
from tests.test_export import VARIANTS

IDS = [f"{v}-{'-'.join(f'{k}={o}' for k, o in opts.items()) or 'default'}" for v, opts in VARIANTS]
# The LSTM's inputs of type T (sequence_lens, slot 4, is int32).
T_SLOTS = {0: "X", 1: "W", 2: "R", 3: "B", 5: "initial_h", 6: "initial_c", 7: "P"}
# Where an fp16 tensor may go: the LSTMs, the embedding lookup, pure layout ops, shape reads,
# a cast back to fp32.
FP16_READERS = {"LSTM", "Gather", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Shape", "Cast"}
CLASSIFIERS = [i for i, (variant, _) in enumerate(VARIANTS) if variant != "regression"]


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """variant index -> (model dir, fused fp32 graph, fp16 graph), built once per module."""
    cache: dict[int, tuple[ModelDir, onnx.ModelProto, onnx.ModelProto]] = {}

    def get(index: int):
        if index not in cache:
            variant, options = VARIANTS[index]
            model_dir = make_model_dir(
                tmp_path_factory.mktemp("fp16") / "m", variant=variant, **options
            )
            source = onnx.load(str(_export_fused(model_dir)))
            cache[index] = (model_dir, source, to_fp16(source))
        return cache[index]

    return get


def _export_fused(model_dir: ModelDir) -> Path:
    """The fused fp32 graph, without export's own validation grid (test_export runs that for
    every variant; here it would be most of this file's time)."""
    from scorer.export.graph import InferenceGraph
    from scorer.export.onnx_export import DEFAULT_OPSET, _stamp_metadata, _torch_export

    card, path = model_dir.card, model_dir.path / "fused.onnx"
    graph = InferenceGraph(load_model(model_dir), card.labels, card.tokenizer.max_len, False)
    _torch_export(graph, path, DEFAULT_OPSET)
    _stamp_metadata(path, model_dir, "fp32")
    return path


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = shape_inference.infer_shapes(model, strict_mode=True)
    graph = inferred.graph
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in [*graph.value_info, *graph.input, *graph.output]
    }
    types.update({t.name: t.data_type for t in graph.initializer})
    return types


def _io(model: onnx.ModelProto) -> dict[str, tuple[int, list]]:
    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    return {
        v.name: (v.type.tensor_type.elem_type, dims(v))
        for v in [*model.graph.input, *model.graph.output]
    }


@pytest.mark.parametrize("index", range(len(VARIANTS)), ids=IDS)
def test_fp16_graph_keeps_the_contract_and_runs_every_lstm_in_fp16(graphs, index) -> None:
    _, source, half = graphs(index)
    onnx.checker.check_model(half, full_check=True)
    # The contract: same names, element types and (dynamic) axes as the fp32 graph.
    assert _io(half) == _io(source)
    io = _io(half)
    for tensor in (*INPUTS, *OUTPUTS):
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(tensor.dtype))
        assert io[tensor.name][0] == elem
        assert io[tensor.name][1][0] == "batch"
    assert io["input_ids"][1] == ["batch", "seq"]
    meta = {p.key: p.value for p in half.metadata_props}
    assert meta == {
        **{p.key: p.value for p in source.metadata_props},
        META_PRECISION: "fp16",
    }
    types = _types(half)
    lstms = [n for n in half.graph.node if n.op_type == "LSTM"]
    assert len(lstms) == sum(n.op_type == "LSTM" for n in source.graph.node) >= 1
    for node in lstms:
        for slot, name in enumerate(node.input):
            if slot in T_SLOTS and name:
                assert types[name] == TensorProto.FLOAT16, (T_SLOTS[slot], name)
        assert all(types[o] == TensorProto.FLOAT16 for o in node.output if o)
    # No cast feeds an LSTM: the embedding table itself is fp16, and so is a layer's output
    # read by the next layer.
    assert not [n for n in half.graph.node if n.op_type == "Cast" and n.attribute[0].i == 10]
    # fp16 never reaches the pooling, the head or the outputs: only LSTMs, layout ops, shape
    # reads, and casts back to float32.
    for node in half.graph.node:
        if any(types.get(name) == TensorProto.FLOAT16 for name in node.input):
            assert node.op_type in FP16_READERS, node.op_type
            if node.op_type == "Gather":  # the lookup in the fp16 embedding table
                assert types[node.input[0]] == TensorProto.FLOAT16
                assert node.input[0] in {t.name for t in half.graph.initializer}
            if node.op_type == "Cast":
                assert node.attribute[0].i == TensorProto.FLOAT
    for name in ("head.weight", "head.bias"):
        assert types[name] == TensorProto.FLOAT


@pytest.mark.parametrize("index", range(len(VARIANTS)), ids=IDS)
def test_fp16_graph_matches_pytorch_on_the_reference_evaluator(graphs, index) -> None:
    model_dir, source, half = graphs(index)
    card = model_dir.card
    # The evaluator's LSTM (with sequence_lens) first reproduces onnxruntime on fp32.
    rng = np.random.default_rng(index)
    ids, lengths = make_batch(16, lambda b: rng.integers(1, 25, b), card.model.vocab_size, 24, rng)
    feeds = {"input_ids": ids, "lengths": lengths}
    session = ort.InferenceSession(source.SerializeToString(), providers=["CPUExecutionProvider"])
    for want, got in zip(session.run(None, feeds), run_reference(source, feeds), strict=True):
        np.testing.assert_allclose(got, want, atol=2e-6)
    report = validate_fp16(half, load_model(model_dir), card, "cpu", batches=(3, 64))
    assert report.passed, report.line()
    assert report.cases == 10 and report.worst_diff <= FP16_TOLERANCE


def test_fp16_arithmetic_is_really_fp16(graphs) -> None:
    """The fp16 graph's outputs differ from fp32's at fp16's rounding level (~1e-4..1e-2)."""
    model_dir, source, half = graphs(3)  # packed, bidirectional
    rng = np.random.default_rng(0)
    vocab_size = model_dir.card.model.vocab_size
    ids, lengths = make_batch(64, lambda b: rng.integers(1, 25, b), vocab_size, 24, rng)
    feeds = {"input_ids": ids, "lengths": lengths}
    diff = np.abs(run_reference(half, feeds)[0] - run_reference(source, feeds)[0]).max()
    assert 1e-5 < diff < FP16_TOLERANCE
    want, _ = torch_outputs(load_model(model_dir), model_dir.card, ids, lengths)
    assert np.abs(run_reference(half, feeds)[0] - want).max() < FP16_TOLERANCE


def _all_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deliberately wrong conversion: the whole graph, head included, in fp16."""
    bad = onnx.ModelProto()
    bad.CopyFrom(model)
    graph = bad.graph

    def half(tensor, name: str = ""):
        with np.errstate(over="ignore"):  # the regression head's 1e30 "far" gaps: inf is fine
            return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), name)

    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(half(init, init.name))
    for node in graph.node:
        for attr in node.attribute:
            if attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(half(attr.t))
    for output in graph.output:
        for node in graph.node:
            node.output[:] = [o + "_h" if o == output.name else o for o in node.output]
            node.input[:] = [i + "_h" if i == output.name else i for i in node.input]
        graph.node.append(
            helper.make_node("Cast", [output.name + "_h"], [output.name], to=TensorProto.FLOAT)
        )
    del graph.value_info[:]
    return bad


@pytest.mark.parametrize("index", range(len(VARIANTS)), ids=IDS)
def test_the_head_stays_fp32(graphs, index) -> None:
    """Computed in fp32, the outputs are not all fp16 values, and a classifier's probabilities
    sum to 1 within 1e-5 (their expected rating too); the same graph with its head in fp16
    fails both."""
    model_dir, _, half = graphs(index)
    card = model_dir.card
    rng = np.random.default_rng(1)
    # Random-weight regression models mostly predict a clamped 1.0 (an fp16 value too); full
    # length reviews give a few predictions inside (1, 5).
    width = (lambda b: rng.integers(1, 25, b)) if index in CLASSIFIERS else 24
    ids, lengths = make_batch(1000, width, card.model.vocab_size, 24, rng)
    feeds = {"input_ids": ids, "lengths": lengths}
    labels = np.asarray(card.labels, np.float32)

    def check(model) -> tuple[bool, float]:
        probs, expected = run_reference(model, feeds)
        assert probs.dtype == expected.dtype == np.float32
        fp32_values = any(
            np.any(x.astype(np.float16).astype(np.float32) != x) for x in (probs, expected)
        )
        sums = max(
            float(np.abs(probs.sum(1) - 1).max()), float(np.abs(probs @ labels - expected).max())
        )
        return fp32_values, sums

    fp32_values, sums = check(half)
    assert fp32_values and sums < 1e-5
    fp32_values, sums = check(_all_fp16(half))
    assert not fp32_values
    if index in CLASSIFIERS:
        assert sums > 1e-4


def test_to_fp16_refuses_a_graph_without_lstm() -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "folded",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    with pytest.raises(ValueError, match="fused graph"):
        to_fp16(helper.make_model(graph))


# -- int8 --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two briefly trained tiny models on the same data (so the same vocabulary), exported
    with their int8 twins."""
    root = tmp_path_factory.mktemp("int8")
    data = write_reviews(root / "reviews.parquet", n=600)
    dirs = {}
    for name, bidirectional in (("bi", True), ("uni", False)):
        model, tok, train = resolve(
            {
                "variant": "packed",
                "bidirectional": bidirectional,
                "pooling": "last+max",
                "embedding_dim": 16,
                "hidden_dim": 16,
                "max_len": 24,
                "epochs": 4,
                "batch_size": 32,
                "lr": 1e-2,
                "patience": 2,
                "threads": 1,
                "search_budget": 0,
                "teacher_hidden_dim": 0,
            }
        )
        out = root / name
        train_model(
            TrainJob(
                data=data,
                out=out,
                model=model,
                tokenizer=tok,
                train=train,
                text_columns=("Title", "Review Text"),
            )
        )
        if name == "bi":
            export_model(out, int8=True)  # model.onnx and model.int8.onnx, as shipped
        else:  # only its int8 file is used
            model_dir = ModelDir.open(out)
            quantize_int8(_export_fused(model_dir), out / "model.int8.onnx", model_dir)
        dirs[name] = ModelDir.open(out)
    return dirs


def test_check_int8_passes_for_a_trained_model(trained) -> None:
    model_dir = trained["bi"]
    path = model_dir.path
    report = check_int8(path / "model.onnx", path / "model.int8.onnx", model_dir.card)
    assert report.passed, report.line()
    assert report.rows == 5340 and report.agreement >= 0.97


def test_check_int8_fails_for_another_models_int8_file(trained) -> None:
    ours, theirs = trained["bi"], trained["uni"]
    assert ours.card.model.vocab_size == theirs.card.model.vocab_size
    report = check_int8(ours.path / "model.onnx", theirs.path / "model.int8.onnx", ours.card)
    assert not report.passed
    assert report.agreement < 0.95 and report.mean_expected_diff > 0.1, report.line()

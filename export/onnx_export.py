"""`scorer export`: write ``model.onnx`` (plus an optional int8 twin), then validate it."""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scorer.contract import (
    DYNAMIC_AXES,
    INPUTS,
    META_CARD,
    META_FORMAT_VERSION,
    META_PRECISION,
    META_VOCAB_SHA256,
    OUTPUTS,
)
from scorer.errors import UserError
from scorer.export.fold import expand_folded
from scorer.export.validate import ValidationReport, validate_against_torch
from scorer.io import atomic_path, make_temp_dir
from scorer.model_dir import ONNX, ModelDir

DEFAULT_OPSET = 17
INT8_NAME = "model.int8.onnx"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    report: ValidationReport
    extras: dict[str, Path]
    seconds: float

    def line(self) -> str:
        extras = "".join(f", {name} -> {path.name}" for name, path in self.extras.items())
        return f"exported {self.path} in {self.seconds:.1f}s; {self.report.line()}{extras}"


def _torch_export(graph, path: Path, opset: int) -> None:
    import torch

    example_ids = torch.ones((2, 5), dtype=torch.int32)
    example_lengths = torch.tensor([5, 3], dtype=torch.int64)
    # The TorchScript exporter keeps the LSTM's time axis dynamic (the dynamo exporter has
    # specialized it), and pack_padded_sequence is never traced (see export.graph).
    with warnings.catch_warnings():
        # torch warns that exporting an RNN with a batch size other than 1 is batch-specific;
        # the validation grid (batch 1 to 1000) is what proves otherwise.
        warnings.simplefilter("ignore", UserWarning)
        # ...and that the TorchScript exporter is legacy: we choose it on purpose (above).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        _export(graph, example_ids, example_lengths, path, opset)


def _export(graph, example_ids, example_lengths, path: Path, opset: int) -> None:
    import torch

    torch.onnx.export(
        graph,
        (example_ids, example_lengths),
        str(path),
        input_names=[t.name for t in INPUTS],
        output_names=[t.name for t in OUTPUTS],
        dynamic_axes=DYNAMIC_AXES,
        opset_version=opset,
        dynamo=False,
        do_constant_folding=True,
    )


def _stamp_metadata(path: Path, model_dir: ModelDir, precision: str) -> None:
    import onnx

    model = onnx.load(str(path))
    expand_folded(model)
    _declare_all_inputs(model)
    meta = {
        META_CARD: model_dir.card.to_json(),
        META_VOCAB_SHA256: model_dir.card.vocab_sha256,
        META_FORMAT_VERSION: str(model_dir.card.format_version),
        META_PRECISION: precision,
    }
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "scorer"
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def _declare_all_inputs(model) -> None:
    """Keep every contract input, even one a variant ignores (a fixed-length model with
    last-state pooling never reads ``lengths``, and the tracer drops unused inputs)."""
    from onnx import helper

    present = {i.name for i in model.graph.input}
    for tensor in INPUTS:
        if tensor.name not in present:
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(tensor.dtype))
            model.graph.input.append(
                helper.make_tensor_value_info(tensor.name, elem, list(tensor.axes))
            )


def export_model(
    model_dir_path: Path,
    out: Path | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    int8: bool = False,
    graph: str = "auto",
) -> ExportResult:
    """Export, stamp metadata, run onnx.checker and the numeric validation grid.

    Nothing is left at ``out`` unless every check passed.
    """
    start = time.perf_counter()
    model_dir = ModelDir.open(model_dir_path)
    model = model_dir.load_model()
    card = model_dir.card
    target = Path(out) if out else model_dir.path / ONNX
    if not target.parent.is_dir():
        raise UserError(f"{target.parent} does not exist")
    fold = _want_fold(graph, card.model.layers, opset)
    with atomic_path(target) as tmp:
        report = _export_validated(model_dir, model, tmp, opset, fold)
    extras: dict[str, Path] = {}
    if int8:
        int8_path = target.with_name(INT8_NAME)
        extras["int8"] = (
            _int8_twin(model_dir, model, int8_path, opset)
            if fold
            else quantize_int8(target, int8_path, model_dir)
        )
    return ExportResult(target, report, extras, time.perf_counter() - start)


def _export_validated(
    model_dir: ModelDir, model, path: Path, opset: int, fold: bool
) -> ValidationReport:
    from scorer.export.graph import InferenceGraph

    card = model_dir.card
    _torch_export(InferenceGraph(model, card.labels, card.tokenizer.max_len, fold), path, opset)
    _stamp_metadata(path, model_dir, "fp32")
    report = validate_against_torch(path, model, card)
    if not report.passed:
        raise UserError(f"exported model failed validation: {report.line()}")
    return report


def _int8_twin(model_dir: ModelDir, model, target: Path, opset: int) -> Path:
    """Quantized from the fused graph: onnxruntime quantizes its LSTM op (DynamicQuantizeLSTM)
    but leaves the folded graph's time loop in fp32."""
    work = make_temp_dir(target)
    try:
        fused = work / "fused.onnx"
        _export_validated(model_dir, model, fused, opset, fold=False)
        return quantize_int8(fused, target, model_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)


GRAPHS = ("auto", "folded", "fused")
FOLD_MIN_OPSET = 13  # the Scan body's Split takes its sizes as an input from opset 13


def _want_fold(graph: str, layers: int, opset: int) -> bool:
    """``folded`` (the embedding folded into layer 0, see export.fold) is the faster CPU graph
    and ``auto``'s choice where it can be built; ``fused`` keeps onnxruntime's LSTM op."""
    if graph not in GRAPHS:
        raise UserError(f"--graph must be one of {', '.join(GRAPHS)}, got {graph!r}")
    possible = layers == 1 and opset >= FOLD_MIN_OPSET
    if graph == "folded" and not possible:
        raise UserError(
            f"--graph folded needs a one-layer model and --opset >= {FOLD_MIN_OPSET}; "
            f"this is a {layers}-layer model at opset {opset}"
        )
    return graph == "folded" or (graph == "auto" and possible)


def quantize_int8(source: Path, target: Path, model_dir: ModelDir) -> Path:
    """onnxruntime dynamic quantization (int8 weights for LSTM and MatMul) for CPU hosts."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with atomic_path(target) as tmp, _quiet_preprocessing_advice():
        quantize_dynamic(
            str(source),
            str(tmp),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["LSTM", "MatMul", "Gemm"],
        )
        _stamp_metadata(tmp, model_dir, "int8")
    return target


@contextmanager
def _quiet_preprocessing_advice():
    """The quantizer logs a WARNING advising shape-inference pre-processing; it changes
    nothing for this graph (the quality check is what validates int8), so it is dropped."""

    def keep(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def read_metadata(path: Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}

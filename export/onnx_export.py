"""`scorer export`: one validated ONNX graph per provider, recorded in config.json."""

from __future__ import annotations

import logging
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scorer.errors import UserError
from scorer.export.fold import expand_folded
from scorer.export.validate import ValidationReport, validate_against_torch
from scorer.io.files import atomic_path
from scorer.runtime.contract import (
    DYNAMIC_AXES,
    GRAPH_FILES,
    INPUTS,
    META_CARD,
    META_FORMAT_VERSION,
    META_PRECISION,
    META_VOCAB_SHA256,
    OUTPUTS,
)
from scorer.runtime.model_dir import ModelDir
from scorer.train.checkpoint import load_model

DEFAULT_OPSET = 17


@dataclass(frozen=True)
class GraphEntry:
    """One exported graph: where, for which provider and precision, and how it was checked."""

    path: Path
    device: str
    precision: str
    kind: str
    check: str
    validated_on: str
    report: Any = None

    def record(self) -> dict[str, str]:
        from scorer.io.files import file_sha256

        return {
            "sha256": file_sha256(self.path),
            "device": self.device,
            "precision": self.precision,
            "graph": self.kind,
            "validated_on": self.validated_on,
            "check": self.check,
        }


@dataclass(frozen=True)
class ExportResult:
    model_dir: Path
    graphs: tuple[GraphEntry, ...]
    seconds: float

    @property
    def path(self) -> Path:
        """The CPU fp32 graph (``model.onnx``)."""
        return self.graphs[0].path

    def line(self) -> str:
        files = "; ".join(
            f"{g.path.name} ({g.device} {g.precision}): {g.check}" for g in self.graphs
        )
        took = f"{self.seconds:.1f}s"
        return f"exported {len(self.graphs)} graphs to {self.model_dir} in {took}: {files}"


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


def _stamp_metadata(path: Path, model_dir: ModelDir, precision: str, expand: bool = True) -> None:
    import onnx

    model = onnx.load(str(path))
    if expand:
        expand_folded(model)
        _declare_all_inputs(model)
    meta = {
        META_CARD: model_dir.card.embedded_json(),
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
    *,
    opset: int = DEFAULT_OPSET,
    graph: str = "auto",
    int8: bool = False,
    fp16: bool = False,
) -> ExportResult:
    """Export one validated graph per provider into the model directory and record each
    file's sha256 in config.json (the scorer refuses a graph config.json does not vouch for).

    * ``model.onnx`` (CPU): the folded Scan graph where the model allows (``graph``);
    * ``model.cuda.onnx`` (CUDA): the fused LSTM op, which onnxruntime runs as cuDNN;
    * ``model.cuda.fp16.onnx`` (``fp16``): the same with the embedding and LSTM in fp16;
    * ``model.int8.onnx`` (``int8``, CPU): dynamic quantization of the fused graph.

    Each graph is validated against PyTorch on the provider it is for when this host has it,
    else on the CPU; nothing is written under a final name unless its checks pass.
    """
    from scorer.export.validate import validation_provider

    start = time.perf_counter()
    model_dir = ModelDir.open(model_dir_path)
    model = load_model(model_dir)
    fold = _want_fold(graph, model_dir.card.model.layers, opset)
    entries: list[GraphEntry] = []
    cpu_path = model_dir.path / GRAPH_FILES[("cpu", "fp32")]
    with atomic_path(cpu_path) as tmp:
        report = _export_validated(model_dir, model, tmp, opset, fold, "CPUExecutionProvider")
    kind = "folded" if fold else "fused"
    entries.append(
        GraphEntry(cpu_path, "cpu", "fp32", kind, report.line(), report.provider, report)
    )
    cuda_path = model_dir.path / GRAPH_FILES[("cuda", "fp32")]
    provider = validation_provider("cuda")
    with atomic_path(cuda_path) as tmp:
        report = _export_validated(model_dir, model, tmp, opset, False, provider)
    entries.append(
        GraphEntry(cuda_path, "cuda", "fp32", "fused", report.line(), report.provider, report)
    )
    if fp16:
        entries.append(_fp16_graph(model_dir, model, cuda_path, provider))
    if int8:
        entries.append(_int8_graph(model_dir, cuda_path))
    model_dir.record_graphs({e.path.name: e.record() for e in entries})
    return ExportResult(model_dir.path, tuple(entries), time.perf_counter() - start)


def export_graph(model_dir_path: Path, path: Path, *, fold: bool, opset: int = DEFAULT_OPSET):
    """One validated graph written anywhere (benchmarks compare graphs this way); not
    recorded in config.json, so ``scorer run`` never loads it."""
    model_dir = ModelDir.open(model_dir_path)
    model = load_model(model_dir)
    with atomic_path(Path(path)) as tmp:
        return _export_validated(model_dir, model, tmp, opset, fold, "CPUExecutionProvider")


def _export_validated(
    model_dir: ModelDir, model, path: Path, opset: int, fold: bool, provider: str
) -> ValidationReport:
    from scorer.export.graph import InferenceGraph

    card = model_dir.card
    _torch_export(InferenceGraph(model, card.labels, card.tokenizer.max_len, fold), path, opset)
    _stamp_metadata(path, model_dir, "fp32")
    report = validate_against_torch(path, model, card, provider=provider)
    if not report.passed:
        raise UserError(f"exported model failed validation: {report.line()}")
    return report


def _fp16_graph(model_dir: ModelDir, model, fused: Path, provider: str) -> GraphEntry:
    import onnx

    from scorer.export.fp16 import to_fp16, validate_fp16

    target = model_dir.path / GRAPH_FILES[("cuda", "fp16")]
    with atomic_path(target) as tmp:
        onnx.save(to_fp16(onnx.load(str(fused))), str(tmp))
        _stamp_metadata(tmp, model_dir, "fp16", expand=False)
        report = validate_fp16(
            tmp, model, model_dir.card, "cuda" if "CUDA" in provider else "reference"
        )
        if not report.passed:
            raise UserError(f"fp16 export failed validation: {report.line()}")
    return GraphEntry(target, "cuda", "fp16", "fused", report.line(), report.provider, report)


def _int8_graph(model_dir: ModelDir, fused: Path) -> GraphEntry:
    """Quantized from the fused graph: onnxruntime quantizes its LSTM op
    (DynamicQuantizeLSTM) but would leave the folded graph's time loop in fp32."""
    from scorer.export.int8_check import check_int8

    target = model_dir.path / GRAPH_FILES[("cpu", "int8")]
    with atomic_path(target) as tmp:
        quantize_int8(fused, tmp, model_dir)
        report = check_int8(model_dir.path / GRAPH_FILES[("cpu", "fp32")], tmp, model_dir.card)
        if not report.passed:
            raise UserError(f"int8 export failed its check against fp32: {report.line()}")
    return GraphEntry(target, "cpu", "int8", "fused", report.line(), "CPUExecutionProvider", report)


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
    """onnxruntime dynamic quantization (int8 weights for LSTM and MatMul) for CPU hosts.

    Weights take 7 bits (``reduce_range``): on x86 CPUs without VNNI (AVX2 only, e.g. AMD
    Zen 3) onnxruntime's u8 x s8 kernels sum pairs of products in 16 bits (VPMADDUBSW), which
    saturates with full-range weights; there the graph failed its own check against fp32
    (argmax agreement 94% against the 97% bar). With 7-bit weights it passes on either kind
    of CPU, so one exported file serves every host."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_preprocessing_advice():
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            reduce_range=True,
            op_types_to_quantize=["LSTM", "MatMul", "Gemm"],
        )
    _stamp_metadata(target, model_dir, "int8", expand=False)
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

"""The ONNX model contract, declared once; the exporter writes it, the scorer checks it.

Inputs
    input_ids        int32  [batch, seq]  token ids, right-padded with 0 (PAD)
    lengths          int64  [batch]       real token counts (clamped to [1, seq] in the graph)
Outputs
    probs            float32 [batch, K]   softmax over the model's labels (for a regression
                                          model: linear interpolation between the two labels
                                          nearest the prediction, so sum_k p_k * label_k holds)
    expected_rating  float32 [batch]      sum_k p_k * label_k (regression: the clipped value)

``batch`` and ``seq`` are dynamic. A fixed-length model pads or cuts ``seq`` to its
``max_len`` inside the graph, so callers never need to know the variant. The model card
(config.json) and the vocabulary's sha256 travel in the ONNX metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: type
    axes: tuple[str, ...]


INPUTS = (
    Tensor("input_ids", np.int32, ("batch", "seq")),
    Tensor("lengths", np.int64, ("batch",)),
)
OUTPUTS = (
    Tensor("probs", np.float32, ("batch", "labels")),
    Tensor("expected_rating", np.float32, ("batch",)),
)
DYNAMIC_AXES = {
    t.name: {i: axis for i, axis in enumerate(t.axes) if axis in ("batch", "seq")}
    for t in INPUTS + OUTPUTS
}

# ONNX metadata keys.
META_CARD = "scorer.model_card"
META_VOCAB_SHA256 = "scorer.vocab_sha256"
META_FORMAT_VERSION = "scorer.format_version"
META_PRECISION = "scorer.precision"

# One graph file per (provider, precision) in a model directory. The CPU graph is the folded
# Scan graph (faster there); the CUDA graph is the fused LSTM op (cuDNN), which the Scan's
# host-driven time loop would starve; int8 (DynamicQuantizeLSTM) has no CUDA kernel.
GRAPH_FILES: dict[tuple[str, str], str] = {
    ("cpu", "fp32"): "model.onnx",
    ("cpu", "int8"): "model.int8.onnx",
    ("cuda", "fp32"): "model.cuda.onnx",
    ("cuda", "fp16"): "model.cuda.fp16.onnx",
}
PRECISIONS = ("fp32", "fp16", "int8")


class ModelFileError(Exception):
    """An ONNX file whose checksum matched yet whose contents make no sense: a bug in the
    exporter or the scorer, not bad input, so it keeps its traceback and exit code."""


def parse_metadata(meta: dict[str, str], path: Path) -> dict:
    """The model card and raw metadata of an exported graph."""
    if META_CARD not in meta:
        raise ModelFileError(f"{path} has no model card metadata ({META_CARD})")
    try:
        card = json.loads(meta[META_CARD])
        card["model"]["hidden_dim"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{path}: malformed model card metadata: {exc}") from exc
    return {"card": card, "raw": dict(meta)}

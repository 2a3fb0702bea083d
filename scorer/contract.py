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

from dataclasses import dataclass

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

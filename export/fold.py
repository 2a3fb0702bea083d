"""The embedding folded into the first LSTM layer's input projection.

At inference ``W_ih @ embedding[id] + b_ih + b_hh`` depends on the token id alone, so it is a
row of a precomputed ``[V, 4H]`` table: one lookup per token replaces ``8*H*E`` FLOPs.
onnxruntime's fused ``LSTM`` op cannot take such pre-projected gates (its input is always
multiplied by ``W``), so a folded layer is an ONNX ``Scan`` over time whose body is
``Gather -> Gemm(h, R, gates) -> activations``.

Exactness of variable lengths without masks: each review is *right-aligned* in time (its
padding comes first) and padding steps read an extra all-zero table row. From the zero initial
state, a zero row keeps the state at exactly zero (``g = tanh(0) = 0`` so ``c = f*0 + i*0``
and ``h = o*tanh(0)``), so the state after the last step is the state after the review's own
last token. A backward direction is the same run over each review reversed within its length.

The torch side (``export.graph``) arranges the step ids and emits a placeholder node
``scorer.FoldedLSTM``; :func:`expand_folded` replaces it with the Scan after export.
"""

from __future__ import annotations

import numpy as np
import torch

DOMAIN = "scorer"
OP = "FoldedLSTM"

# Table/recurrent rows are ordered i, f, o, g (PyTorch orders them i, f, g, o), and the g block
# is doubled: tanh(x) = 2 * sigmoid(2x) - 1, so one Sigmoid covers all four gates (measured
# ~10% faster than a Split into Sigmoid and Tanh). Doubling is exact in floating point, and
# sigmoid(0) is exactly 0.5, so the padding row still gives g = 0 exactly.
_GATE_ORDER = (0, 1, 3, 2)
_GATE_SCALE = (1.0, 1.0, 1.0, 2.0)


def _reorder(weight: torch.Tensor) -> torch.Tensor:
    blocks = weight.chunk(4, dim=0)
    return torch.cat(
        [blocks[k] * scale for k, scale in zip(_GATE_ORDER, _GATE_SCALE, strict=True)], dim=0
    )


def folded_factors(
    embedding: torch.Tensor, lstm: torch.nn.LSTM, reverse: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(embedding [V, E], input weights [E, 4H], bias [4H], recurrent [4H, H]) for one
    direction of layer 0, gates reordered (see ``_GATE_ORDER``). The table is their product:
    the graph stores these factors (a fifth of the table's size at E=100, H=128) and
    onnxruntime multiplies them once, when it constant-folds the graph at session start."""
    suffix = "_l0_reverse" if reverse else "_l0"
    w_ih = _reorder(getattr(lstm, f"weight_ih{suffix}").detach().float())
    bias = getattr(lstm, f"bias_ih{suffix}").detach() + getattr(lstm, f"bias_hh{suffix}").detach()
    bias = _reorder(bias.float()[:, None])[:, 0]
    recurrent = _reorder(getattr(lstm, f"weight_hh{suffix}").detach().float())
    return embedding.detach().float(), w_ih.T.contiguous(), bias, recurrent


def fold_table(embedding: torch.Tensor, w_in: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """[V + 1, 4H]: each token's gate pre-activations; the last row is the all-zero padding
    row (see the module docstring)."""
    table = embedding @ w_in + bias
    return torch.cat([table, table.new_zeros((1, table.shape[1]))], dim=0)


def folded_weights(
    embedding: torch.Tensor, lstm: torch.nn.LSTM, reverse: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(table [V + 1, 4H], recurrent [4H, H]) for one direction of layer 0."""
    embedding, w_in, bias, recurrent = folded_factors(embedding, lstm, reverse)
    return fold_table(embedding, w_in, bias), recurrent


def step_ids(
    ids: torch.Tensor, lengths: torch.Tensor, hold: int, packed: bool, reverse: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids per step [T, B] int64, valid [T, B, 1] bool): what one direction reads at each
    step, and whether that step is one of the review's own tokens (for max pooling).

    Packed: right-aligned, padding steps read ``hold``. Fixed: every step reads the padded
    input as the trained model did; ``valid`` still marks the first ``length`` positions.
    """
    batch, steps = ids.shape
    time = torch.arange(steps, device=ids.device)[None, :].expand(batch, -1)
    if packed:
        shift = steps - lengths[:, None]
        valid = time >= shift
        source = (steps - 1 - time) if reverse else (time - shift)
        picked = ids.long().gather(1, source.clamp(0, steps - 1))
        arranged = torch.where(valid, picked, hold)
    else:
        source = (steps - 1 - time) if reverse else time
        valid = source < lengths[:, None]
        arranged = ids.long().gather(1, source)
    return arranged.transpose(0, 1), valid.transpose(0, 1)[:, :, None]


def recur(
    ids: torch.Tensor, valid: torch.Tensor, table: torch.Tensor, recurrent: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager twin of the Scan: (final h [B, H], max of h over valid steps [B, H])."""
    hidden = recurrent.shape[1]
    batch = ids.shape[1]
    h = table.new_zeros((batch, hidden))
    c = torch.zeros_like(h)
    best = torch.full_like(h, float("-inf"))
    for t in range(ids.shape[0]):
        z = table[ids[t]] + h @ recurrent.T
        i, f, o, s = torch.sigmoid(z).chunk(4, dim=1)
        c = f * c + i * (2 * s - 1)
        h = o * torch.tanh(c)
        best = torch.maximum(best, torch.where(valid[t], h, float("-inf")))
    return h, best


class FoldedLSTM(torch.autograd.Function):
    """Eagerly :func:`recur`; exported, a ``scorer.FoldedLSTM`` placeholder node."""

    @staticmethod
    def forward(ctx, ids, valid, embedding, w_in, bias, recurrent, want_max, right_aligned):  # type: ignore[override]
        h, best = recur(ids, valid, fold_table(embedding, w_in, bias), recurrent)
        return h, best

    @staticmethod
    def symbolic(g, ids, valid, embedding, w_in, bias, recurrent, want_max, right_aligned):
        outputs = g.op(
            f"{DOMAIN}::{OP}",
            ids,
            valid,
            embedding,
            w_in,
            bias,
            recurrent,
            want_max_i=int(want_max),
            right_aligned_i=int(right_aligned),
            outputs=2,
        )
        # Declared so the exporter's shape inference knows the placeholder's outputs.
        state = embedding.type().with_sizes([None, recurrent.type().sizes()[1]])
        for output in outputs:
            output.setType(state)
        return outputs


def expand_folded(model) -> int:
    """Replace every placeholder in ``model`` (an onnx ModelProto) by its Scan; returns how
    many were replaced."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    new_nodes, count = [], 0
    for node in graph.node:
        if node.domain != DOMAIN:
            new_nodes.append(node)
            continue
        count += 1
        new_nodes.extend(_scan_nodes(node, inits, f"folded{count}"))
    del graph.node[:]
    graph.node.extend(new_nodes)
    kept = [o for o in model.opset_import if o.domain != DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return count


def _scan_nodes(node, inits, prefix: str) -> list:
    from onnx import helper, numpy_helper

    ids, valid, embedding, w_in, bias, recurrent = node.input
    final, best = node.output
    want_max = next(a.i for a in node.attribute if a.name == "want_max")
    right_aligned = next((a.i for a in node.attribute if a.name == "right_aligned"), 0)
    hidden = int(inits[recurrent].dims[1])

    def name(s: str) -> str:
        return f"{prefix}_{s}"

    consts = {
        "axis1": np.array([1], np.int64),
        "hidden": np.array([hidden], np.int64),
        "hold": np.zeros((1, 4 * hidden), np.float32),
    }
    nodes = [
        helper.make_node("Constant", [], [name(k)], value=numpy_helper.from_array(v, name(k)))
        for k, v in consts.items()
    ]
    # The table from its factors: all constants, so onnxruntime computes it once at load.
    table = name("table")
    nodes += [
        helper.make_node("MatMul", [embedding, w_in], [name("projected")]),
        helper.make_node("Add", [name("projected"), bias], [name("rows")]),
        helper.make_node("Concat", [name("rows"), name("hold")], [table], axis=0),
    ]
    # Zero initial states [B, H] (B read from the step ids [T, B]).
    nodes += [
        helper.make_node("Shape", [ids], [name("shape")]),
        helper.make_node("Gather", [name("shape"), name("axis1")], [name("batch")], axis=0),
        helper.make_node("Concat", [name("batch"), name("hidden")], [name("state_shape")], axis=0),
        helper.make_node(
            "ConstantOfShape",
            [name("state_shape")],
            [name("zeros")],
            value=numpy_helper.from_array(np.zeros(1, np.float32)),
        ),
    ]
    if not want_max:
        nodes += _scan(name, table, recurrent, hidden, [name("zeros")] * 2, [ids], "last")
        nodes.append(helper.make_node("Identity", [name("zeros")], [best]))
    else:
        nodes.append(
            helper.make_node(
                "ConstantOfShape",
                [name("state_shape")],
                [name("lowest")],
                value=numpy_helper.from_array(np.full(1, -np.inf, np.float32)),
            )
        )
        states = [name("zeros"), name("zeros"), name("lowest")]
        if right_aligned:
            nodes += _split_scans(name, table, recurrent, hidden, states, ids, valid)
        else:
            nodes += _scan(name, table, recurrent, hidden, states, [ids, valid], "masked")
        nodes.append(helper.make_node("Identity", [name("best_last")], [best]))
    nodes.append(helper.make_node("Identity", [name("h_last")], [final]))
    return nodes


def _scan(name, table, recurrent, hidden, states, inputs, kind, suffix="") -> list:
    """One Scan node over ``inputs`` from ``states``; its outputs are ``h_last``, ``c_last``
    (and ``best_last``) with ``suffix``."""
    from onnx import helper

    outputs = [name(f"h_last{suffix}"), name(f"c_last{suffix}")]
    if kind != "last":
        outputs.append(name(f"best_last{suffix}"))
    return [
        helper.make_node(
            "Scan",
            [*states, *inputs],
            outputs,
            name=name(f"scan{suffix}"),
            num_scan_inputs=len(inputs),
            body=_body(table, recurrent, hidden, kind),
        )
    ]


def _split_scans(name, table, recurrent, hidden, states, ids, valid) -> list:
    """Max pooling over right-aligned reviews, in two Scans: a masked one over the steps
    where some review is still padding, then an unmasked one over the rest, where every
    review is real (most steps: a batch holds reviews of similar lengths), which skips the
    mask's two ops per step. The masked Scan starts with one more padding step, so that
    neither Scan is empty (onnxruntime refuses a Scan over no steps): padding leaves the
    state at zero, so the extra step changes nothing, and the last step is always real."""
    from onnx import TensorProto, helper, numpy_helper

    consts = {
        "zero": np.array([0], np.int64),
        "one": np.array([1], np.int64),
        "one_one": np.array([1, 1], np.int64),
        "no": np.zeros((1, 1, 1), np.bool_),
    }
    nodes = [
        helper.make_node("Constant", [], [name(k)], value=numpy_helper.from_array(v, name(k)))
        for k, v in consts.items()
    ]
    # The padding id: the table's last (all-zero) row; constant, folded at load.
    nodes += [
        helper.make_node("Shape", [table], [name("table_shape")]),
        helper.make_node("Gather", [name("table_shape"), name("zero")], [name("rows_n")], axis=0),
        helper.make_node("Sub", [name("rows_n"), name("one")], [name("hold_flat")]),
        helper.make_node("Reshape", [name("hold_flat"), name("one_one")], [name("hold_id")]),
    ]
    nodes += [
        helper.make_node("Concat", [name("one"), name("batch")], [name("batch_row")], axis=0),
        helper.make_node(
            "Concat", [name("one"), name("batch"), name("one")], [name("valid_row")], axis=0
        ),
    ]
    # k: the leading steps where some review is padding (valid is monotone in time).
    nodes += [
        helper.make_node("Cast", [valid], [name("valid_i")], to=TensorProto.INT64),
        helper.make_node(
            "ReduceMin", [name("valid_i")], [name("all_valid")], axes=[1, 2], keepdims=0
        ),
        helper.make_node(
            "ReduceSum", [name("all_valid"), name("zero")], [name("real")], keepdims=1
        ),
        helper.make_node("Shape", [ids], [name("ids_shape")]),
        helper.make_node("Gather", [name("ids_shape"), name("zero")], [name("steps")], axis=0),
        helper.make_node("Sub", [name("steps"), name("real")], [name("k")]),
        # The masked part: one padding step, then steps [0, k).
        helper.make_node("Expand", [name("hold_id"), name("batch_row")], [name("pad_ids")]),
        helper.make_node("Slice", [ids, name("zero"), name("k")], [name("head_ids")]),
        helper.make_node(
            "Concat", [name("pad_ids"), name("head_ids")], [name("masked_ids")], axis=0
        ),
        helper.make_node("Expand", [name("no"), name("valid_row")], [name("pad_valid")]),
        helper.make_node("Slice", [valid, name("zero"), name("k")], [name("head_valid")]),
        helper.make_node(
            "Concat", [name("pad_valid"), name("head_valid")], [name("masked_valid")], axis=0
        ),
        # The unmasked part: steps [k, T), never empty (the last step is real for all).
        helper.make_node("Slice", [ids, name("k"), name("steps")], [name("tail_ids")]),
    ]
    masked = _scan(name, table, recurrent, hidden, states,
                   [name("masked_ids"), name("masked_valid")], "masked", "_head")  # fmt: skip
    head_states = [name("h_last_head"), name("c_last_head"), name("best_last_head")]
    unmasked = _scan(name, table, recurrent, hidden, head_states, [name("tail_ids")], "all")
    return nodes + masked + unmasked


def _body(table: str, recurrent: str, hidden: int, kind: str):
    """One step: (h, c[, best], ids_t[, valid_t]) -> (h, c[, best]). ``kind``: "last" (no
    max pooling), "masked" (the max over the steps ``valid_t`` marks) or "all" (the max
    over every step: the caller knows every review is real there)."""
    from onnx import TensorProto, helper, numpy_helper

    state = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", hidden])  # noqa: E731
    nodes = [
        helper.make_node("Gather", [table, "ids_t"], ["gates_x"], axis=0),
        helper.make_node("Gemm", ["h", recurrent, "gates_x"], ["gates"], transB=1),
        helper.make_node("Sigmoid", ["gates"], ["sig"]),
        helper.make_node("Split", ["sig", "split4"], ["i", "f", "o", "s"], axis=1),
        helper.make_node("Mul", ["s", "two"], ["s2"]),
        helper.make_node("Sub", ["s2", "one"], ["g"]),
        helper.make_node("Mul", ["f", "c"], ["fc"]),
        helper.make_node("Mul", ["i", "g"], ["ig"]),
        helper.make_node("Add", ["fc", "ig"], ["c_out"]),
        helper.make_node("Tanh", ["c_out"], ["tanh_c"]),
        helper.make_node("Mul", ["o", "tanh_c"], ["h_out"]),
    ]
    inputs = [state("h"), state("c")]
    outputs = [state("h_out"), state("c_out")]
    initializers = [
        numpy_helper.from_array(np.full(4, hidden, np.int64), "split4"),
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
    ]
    if kind != "last":
        inputs.append(state("best"))
        outputs.append(state("best_out"))
    if kind == "masked":
        initializers.append(numpy_helper.from_array(np.array(-np.inf, np.float32), "neg_inf"))
        nodes += [
            helper.make_node("Where", ["valid_t", "h_out", "neg_inf"], ["h_valid"]),
            helper.make_node("Max", ["best", "h_valid"], ["best_out"]),
        ]
    elif kind == "all":
        nodes.append(helper.make_node("Max", ["best", "h_out"], ["best_out"]))
    inputs.append(helper.make_tensor_value_info("ids_t", TensorProto.INT64, ["batch"]))
    if kind == "masked":
        inputs.append(helper.make_tensor_value_info("valid_t", TensorProto.BOOL, ["batch", 1]))
    return helper.make_graph(nodes, "folded_step", inputs, outputs, initializers)

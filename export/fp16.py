"""An fp16 twin of the *fused* graph for CUDA (cuDNN), and its validation without a GPU.

:func:`to_fp16` runs every ``LSTM`` node in float16 and leaves the rest of the graph (pooling,
head, softmax, expected rating) in float32, so probabilities stay accurate:

* the LSTMs' ``W``, ``R``, ``B`` initializers become float16;
* the embedding table becomes float16 where the gathered rows feed only LSTMs (through
  layout ops: ``Transpose``, ``Reshape``...), so no cast runs on the input; a layer's output
  feeding the next layer stays float16 the same way; a zero initial state
  (``ConstantOfShape``) is made float16 in place; any other float32 input gets a ``Cast``;
* each LSTM output read by float32 nodes is cast back to float32 right after the LSTM.

The contract (input and output names, types, dynamic axes) is unchanged.

onnxruntime's CPU provider has no float16 LSTM kernel, and ``onnx.reference``'s LSTM ignores
``sequence_lens`` (it runs every row over all steps), so :func:`run_reference` evaluates a
graph with :class:`LSTM` below in its place: ``sequence_lens`` honoured as onnxruntime does
(each row stops, or for the reverse direction starts, at its own length; outputs past it are
zero), and arithmetic in the graph's own element type. For float16 it models onnxruntime's
cuDNN settings (data and math type half, tensor-op math): every operand is a float16 value;
each matrix product has exact products, float32 accumulation (as tensor cores do) and one
rounding to float16 (``accumulate="fp16"`` rounds every partial sum instead: a pessimistic
bound, should cuDNN's half math accumulate in half); every elementwise operation (bias adds,
sigmoid, tanh, the cell update) is numpy float16 arithmetic, rounded after each operation;
``h`` and ``c`` stay float16 between steps. Nothing is computed in float32 but the matrix
products' accumulators.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scorer.export.validate import (
    BATCHES,
    Agreement,
    length_cases,
    make_batch,
    torch_outputs,
)
from scorer.runtime.config import ModelCard
from scorer.runtime.contract import META_PRECISION

# fp16 graph vs PyTorch fp32 over the full grid (reference evaluator, worst |probs diff|):
# random-weight variants 6e-4..2.9e-3 (fp32 accumulation) / 9e-4..4.9e-3 (fp16 accumulation);
# briefly trained tiny models 8e-4..1.8e-2 / 8e-4..1.4e-2; a trained default-size model
# (E100/H128, max_len 200) 9.2e-3 / 1.9e-2, the error growing with length. A model whose
# recurrence amplifies perturbations (a trained fixed-length model over its PAD tail: x1.75 a
# step) fails at any sensible tolerance (0.34): such a model should not ship in fp16.
FP16_TOLERANCE = 3e-2  # max |probs diff|
FP16_EXPECTED_TOLERANCE = 6e-2  # max |expected_rating diff|, in rating units
FP16_MIN_AGREEMENT = 0.99  # argmax agreement over all rows (worst measured: 99.93%)
# The reference evaluator runs the whole grid in 1-8 s for the tiny test models and ~17 s for
# the default-size model on 2 cores, so it keeps the full grid.
REFERENCE_BATCHES = BATCHES
REFERENCE_PROVIDER = "onnx.reference (fp16 LSTM emulation)"

_FLOAT = 1  # onnx.TensorProto.FLOAT
_FLOAT16 = 10  # onnx.TensorProto.FLOAT16
_LSTM_T_SLOTS = frozenset({0, 1, 2, 3, 5, 6, 7})  # X, W, R, B, initial_h, initial_c, P
_LAYOUT_OPS = frozenset({"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten"})
_SHAPE_OPS = frozenset({"Shape", "Size"})
_HALF_SUFFIX = "_fp16"


def to_fp16(model):
    """A copy of a fused fp32 graph whose LSTMs run in float16 (see the module docstring)."""
    import onnx

    if not any(node.op_type == "LSTM" for node in model.graph.node):
        raise ValueError(
            "to_fp16 needs the fused graph (export with graph='fused'): it has no LSTM node"
        )
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get(META_PRECISION, "fp32") != "fp32":
        raise ValueError(f"to_fp16 needs an fp32 graph, this one is {meta[META_PRECISION]!r}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _HalfLSTMs(out.graph).run()
    meta[META_PRECISION] = "fp16"
    del out.metadata_props[:]
    for key, value in meta.items():
        entry = out.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(out, full_check=True)
    return out


class _HalfLSTMs:
    """The graph pass of :func:`to_fp16`, in place on a GraphProto."""

    def __init__(self, graph) -> None:
        self.graph = graph
        self.nodes = list(graph.node)
        self.inits = {t.name: t for t in graph.initializer}
        self.graph_outputs = {o.name for o in graph.output}
        self.producer = {o: n for n in self.nodes for o in n.output if o}
        self.consumers: dict[str, list[tuple[Any, int]]] = {}
        for node in self.nodes:
            for index, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((node, index))
        self.lstms = [n for n in self.nodes if n.op_type == "LSTM"]
        self.lstm_outputs = {o for n in self.lstms for o in n.output if o}
        self.half: dict[str, str] = {}  # fp32 tensor -> the name of its fp16 version
        self.retyped: set[str] = set()  # tensors whose element type became fp16 in place
        self.casts_before: dict[int, list] = {}  # id(LSTM node) -> Cast nodes to insert before
        self._ok: dict[str, bool] = {}

    def run(self) -> None:
        for node in self.lstms:
            _check_lstm(node)
            for slot, name in enumerate(node.input):
                if slot in _LSTM_T_SLOTS and name:
                    node.input[slot] = self._half_input(name, node)
        read = {name for n in self.nodes for name in n.input} | self.graph_outputs
        order: list = []
        for node in self.nodes:
            order.extend(self.casts_before.get(id(node), ()))
            order.append(node)
            if node.op_type == "LSTM":
                order.extend(self._half_outputs(node, read))
        del self.graph.node[:]
        self.graph.node.extend(order)
        # Annotations: retyped tensors become fp16; an LSTM output nobody reads is gone.
        gone = self.lstm_outputs - read
        kept = [v for v in self.graph.value_info if v.name not in gone]
        for info in kept:
            if info.name in self.retyped:
                info.type.tensor_type.elem_type = _FLOAT16
        del self.graph.value_info[:]
        self.graph.value_info.extend(kept)

    # -- inputs ------------------------------------------------------------------------------

    def _half_input(self, name: str, lstm) -> str:
        """The name under which the LSTM reads ``name`` in fp16."""
        if name in self.retyped:
            return name
        if name in self.half:
            return self.half[name]
        path = [name]  # from the LSTM's input back through layout ops to a source
        while (p := self.producer.get(path[-1])) is not None and p.op_type in _LAYOUT_OPS:
            path.append(p.input[0])
        source = path[-1]
        ok = [self._fp16_ok(t) for t in path]
        if all(ok) and self._convert_source(source):
            return name if name in self.retyped else self.half[name]
        if source in self.lstm_outputs and len(path) > 1 and all(ok[:-1]):
            # A layer's output feeding the next layer through layout ops only: that chain
            # reads the fp16 output directly; the fp32 cast stays for the other readers.
            self.producer[path[-2]].input[0] = source + _HALF_SUFFIX
            self._retype_from(path[-2])
            return name
        return self._cast(name, lstm)

    def _fp16_ok(self, tensor: str) -> bool:
        """True when every reader of ``tensor`` takes fp16: an LSTM's T input, a Shape, or a
        layout op whose outputs are themselves fp16-ok."""
        if tensor in self._ok:
            return self._ok[tensor]
        ok = tensor not in self.graph_outputs
        for node, index in self.consumers.get(tensor, ()):
            if not ok:
                break
            if node.op_type == "LSTM":
                ok = index in _LSTM_T_SLOTS
            elif node.op_type in _SHAPE_OPS:
                ok = True
            else:
                ok = (
                    node.op_type in _LAYOUT_OPS
                    and index == 0
                    and all(self._fp16_ok(o) for o in node.output if o)
                )
        self._ok[tensor] = ok
        return ok

    def _convert_source(self, source: str) -> bool:
        """Make ``source`` itself fp16 where it can be: a float initializer, a Gather from a
        float initializer (the embedding), a zero state from ConstantOfShape, or an LSTM
        output (whose readers then read its fp16 version). False if none of these."""
        from onnx import numpy_helper

        if source in self.inits:
            init = self.inits[source]
            if init.data_type != _FLOAT:
                return False
            init.CopyFrom(_half_tensor(init, init.name))
            self._retype_from(source)
            return True
        node = self.producer.get(source)
        if node is None:
            return False
        if source in self.lstm_outputs:
            self.half[source] = source + _HALF_SUFFIX
            for reader, index in self.consumers.get(source, ()):
                reader.input[index] = source + _HALF_SUFFIX
                if reader.op_type in _LAYOUT_OPS:
                    for out in reader.output:
                        self._retype_from(out)
            return True
        if node.op_type == "Gather" and node.input[0] in self.inits:
            table = self.inits[node.input[0]]
            if table.data_type != _FLOAT:
                return False
            readers = self.consumers[table.name]
            if len(readers) == 1:
                table.CopyFrom(_half_tensor(table, table.name))
                self.retyped.add(table.name)
            else:
                copy = _half_tensor(table, table.name + _HALF_SUFFIX)
                self.graph.initializer.append(copy)
                node.input[0] = copy.name
            self._retype_from(source)
            return True
        if node.op_type == "ConstantOfShape":
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is None:  # the default value is a float32 zero
                from onnx import helper

                zero = numpy_helper.from_array(np.zeros(1, np.float32))
                value = helper.make_attribute("value", zero)
                node.attribute.append(value)
            if value.t.data_type != _FLOAT:
                return False
            value.t.CopyFrom(_half_tensor(value.t, value.t.name))
            self._retype_from(source)
            return True
        return False

    def _retype_from(self, tensor: str) -> None:
        """Mark ``tensor`` and everything layout ops derive from it as fp16."""
        self.retyped.add(tensor)
        for node, index in self.consumers.get(tensor, ()):
            if node.op_type in _LAYOUT_OPS and index == 0:
                for out in node.output:
                    if out:
                        self._retype_from(out)

    def _cast(self, name: str, lstm) -> str:
        from onnx import helper

        half = name + _HALF_SUFFIX
        cast = helper.make_node("Cast", [name], [half], name=half + "/Cast", to=_FLOAT16)
        self.casts_before.setdefault(id(lstm), []).append(cast)
        self.half[name] = half
        return half

    # -- outputs -----------------------------------------------------------------------------

    def _half_outputs(self, node, read: set[str]) -> list:
        """Rename the LSTM's outputs to their fp16 names; cast back those still read as fp32."""
        from onnx import helper

        casts = []
        for index, name in enumerate(node.output):
            if not name:
                continue
            half = name + _HALF_SUFFIX
            node.output[index] = half
            self.retyped.add(half)
            if name in read:
                casts.append(
                    helper.make_node("Cast", [half], [name], name=name + "/Cast", to=_FLOAT)
                )
        return casts


def _check_lstm(node) -> None:
    attrs = {a.name: a for a in node.attribute}
    if "layout" in attrs and attrs["layout"].i != 0:
        raise ValueError(f"LSTM {node.name!r}: layout=1 has no CUDA kernel")


def _half_tensor(tensor, name: str):
    from onnx import numpy_helper

    array = numpy_helper.to_array(tensor)
    if np.abs(array).max(initial=0.0) > np.finfo(np.float16).max:
        raise ValueError(f"{tensor.name or name}: values overflow float16")
    return numpy_helper.from_array(array.astype(np.float16), name)


# -- the reference evaluator ---------------------------------------------------------------


def _lstm_op(accumulate: str):
    from onnx.reference.op_run import OpRun

    class LSTM(OpRun):
        """ONNX LSTM (layout 0, default activations) honouring ``sequence_lens``, computed in
        the element type of its inputs (see the module docstring)."""

        op_domain = ""

        def _run(  # type: ignore[override]
            self,
            X,
            W,
            R,
            B=None,
            sequence_lens=None,
            initial_h=None,
            initial_c=None,
            P=None,
            **attributes,
        ):
            return _run_lstm(
                X, W, R, B, sequence_lens, initial_h, initial_c, P, attributes, accumulate
            )

    return LSTM


def _run_lstm(x, w, r, b, lens, h0, c0, p, attributes, accumulate):
    for unsupported in ("activations", "activation_alpha", "activation_beta", "clip"):
        if attributes.get(unsupported) is not None:
            raise NotImplementedError(f"LSTM attribute {unsupported} is not supported here")
    if attributes.get("layout") or attributes.get("input_forget"):
        raise NotImplementedError("LSTM layout=1 / input_forget are not supported here")
    dtype = x.dtype
    if not all(t.dtype == dtype for t in (w, r, b, h0, c0, p) if t is not None):
        raise TypeError("LSTM inputs must share one element type")
    steps, batch = x.shape[0], x.shape[1]
    directions, hidden = w.shape[0], r.shape[-1]
    lens = np.full(batch, steps) if lens is None else np.asarray(lens)
    zeros = np.zeros((directions, batch, hidden), dtype)
    h0 = zeros if h0 is None else h0
    c0 = zeros if c0 is None else c0
    ys, hs, cs = [], [], []
    for d in range(directions):
        reverse = attributes.get("direction") == "reverse" or d == 1
        bias = None if b is None else (b[d, : 4 * hidden], b[d, 4 * hidden :])
        peep = None if p is None else np.split(p[d], 3)
        y, h, c = _direction(x, w[d], r[d], bias, peep, h0[d], c0[d], lens, reverse, accumulate)
        ys.append(y)
        hs.append(h)
        cs.append(c)
    return np.stack(ys, axis=1), np.stack(hs), np.stack(cs)


def _direction(x, w, r, bias, peep, h, c, lens, reverse, accumulate):
    dtype = x.dtype
    steps = x.shape[0]
    w_t, r_t = _weight(w.T, accumulate), _weight(r.T, accumulate)
    projected = _matmul(x, w_t, accumulate)  # all steps' input projections, as cuDNN does
    if bias is not None:
        projected = projected + bias[0]
    y = np.zeros((steps, *h.shape), dtype)
    with np.errstate(over="ignore"):  # exp overflows to inf in fp16: sigmoid is then 0
        for t in range(steps - 1, -1, -1) if reverse else range(steps):
            gates = projected[t] + _matmul(h, r_t, accumulate)
            if bias is not None:
                gates = gates + bias[1]
            i, o, f, g = np.split(gates, 4, axis=-1)  # ONNX gate order: i, o, f, c
            if peep is not None:
                i, f = i + peep[0] * c, f + peep[2] * c
            i, f, g = _sigmoid(i), _sigmoid(f), np.tanh(g)
            c_new = f * c + i * g
            if peep is not None:
                o = o + peep[1] * c_new
            h_new = _sigmoid(o) * np.tanh(c_new)
            active = (t < lens)[:, None]  # rows past their length keep their state
            h = np.where(active, h_new, h)
            c = np.where(active, c_new, c)
            y[t] = np.where(active, h_new, 0)
    return y, h, c


def _sigmoid(x: np.ndarray) -> np.ndarray:
    one = x.dtype.type(1)
    return one / (one + np.exp(-x))


def _weight(matrix: np.ndarray, accumulate: str) -> np.ndarray:
    """A weight matrix as :func:`_matmul` takes it: fp16 weights for float32 accumulation are
    widened once (exactly: every fp16 value is a float32 value)."""
    if accumulate not in ("fp32", "fp16"):
        raise ValueError(f"accumulate must be 'fp32' or 'fp16', got {accumulate!r}")
    if matrix.dtype == np.float16 and accumulate == "fp32":
        return np.ascontiguousarray(matrix, dtype=np.float32)
    return matrix


def _matmul(a: np.ndarray, b: np.ndarray, accumulate: str) -> np.ndarray:
    """``a @ b`` in ``a``'s type (``b`` from :func:`_weight`). fp16: fp16 operands, exact
    products (an fp16 product fits float32's mantissa), float32 accumulation (BLAS) and one
    rounding to fp16, as tensor cores do; with ``accumulate="fp16"`` each product and each
    partial sum is rounded to fp16 instead."""
    if a.dtype != np.float16:
        return a @ b
    if accumulate == "fp32":
        return (a.astype(np.float32) @ b).astype(np.float16)
    total = np.zeros((*a.shape[:-1], b.shape[1]), np.float16)
    for k in range(a.shape[-1]):
        total = total + a[..., k : k + 1] * b[k]
    return total


def reference_session(path_or_model, accumulate: str = "fp32"):
    """An ``onnx.reference.ReferenceEvaluator`` with the sequence_lens-aware LSTM."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    model = (
        path_or_model
        if isinstance(path_or_model, onnx.ModelProto)
        else onnx.load(str(path_or_model))
    )
    return ReferenceEvaluator(model, new_ops=[_lstm_op(accumulate)])


def run_reference(
    path_or_model, feeds: dict[str, np.ndarray], *, accumulate: str = "fp32"
) -> list[np.ndarray]:
    """The graph's outputs (in graph order) from the reference evaluator (fp16 or fp32)."""
    return list(reference_session(path_or_model, accumulate).run(None, feeds))


# -- validation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fp16Report(Agreement):
    """Like ``validate.ValidationReport``, plus the expected-rating diff and the rows."""

    cases: int
    rows: int
    worst_diff: float  # max |probs diff|
    worst_case: str
    worst_expected_diff: float
    argmax_mismatches: int
    tolerance: float
    expected_tolerance: float
    min_agreement: float
    seconds: float
    failures: list[str] = field(default_factory=list)
    provider: str = REFERENCE_PROVIDER

    def line(self) -> str:
        return (
            f"fp16 validation {self.verdict} on {self.provider}: {self.cases} shape cases, "
            f"{self.rows} rows, worst |probs diff| {self.worst_diff:.2e} ({self.worst_case}), "
            f"worst |expected diff| {self.worst_expected_diff:.2e}, argmax agreement "
            f"{self.agreement:.2%} (tolerances {self.tolerance:g} / {self.expected_tolerance:g}"
            f" / {self.min_agreement:.0%}) in {self.seconds:.1f}s"
            + (f": {'; '.join(self.failures[:3])}" if self.failures else "")
        )


def fp16_runner(fp16_path, provider: str, accumulate: str = "fp32"):
    """``feeds -> [probs, expected_rating]`` for a graph (path or ModelProto) on onnxruntime
    CUDA (``provider="cuda"``) or the reference evaluator (anything else)."""
    if provider != "cuda":
        session = reference_session(fp16_path, accumulate)
        return lambda feeds: session.run(None, feeds)
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise RuntimeError(
            "provider='cuda' needs onnxruntime-gpu and a CUDA device; this onnxruntime has "
            f"{', '.join(ort.get_available_providers())}"
        )
    # The CPU provider is there for the shape ops onnxruntime keeps on the host; the LSTMs
    # have no fp16 CPU kernel, so a session that cannot place them on CUDA fails to load.
    source = fp16_path.SerializeToString() if hasattr(fp16_path, "graph") else str(fp16_path)
    session = ort.InferenceSession(
        source, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    if session.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError(f"onnxruntime did not load the CUDA provider: {session.get_providers()}")
    return lambda feeds: session.run(None, feeds)


def validate_fp16(
    fp16_path: Path,
    model,
    card: ModelCard,
    provider: str = "reference",
    *,
    tolerance: float = FP16_TOLERANCE,
    expected_tolerance: float = FP16_EXPECTED_TOLERANCE,
    min_agreement: float = FP16_MIN_AGREEMENT,
    batches: tuple[int, ...] | None = None,
    seed: int = 0,
    accumulate: str = "fp32",
) -> Fp16Report:
    """The fp16 graph against the PyTorch model on ``validate``'s grid (batches x lengths).

    ``provider="cuda"`` runs onnxruntime's CUDAExecutionProvider (cuDNN); anything else the
    reference evaluator on the CPU (``REFERENCE_BATCHES``; ``accumulate`` picks its matrix
    product accumulation, see :func:`_matmul`: "fp16" is ~50x slower, for measurements).
    """
    start = time.perf_counter()
    run = fp16_runner(fp16_path, provider, accumulate)
    if batches is None:
        batches = BATCHES if provider == "cuda" else REFERENCE_BATCHES
    rng = np.random.default_rng(seed)
    worst, worst_expected, worst_case, mismatches, cases, rows = 0.0, 0.0, "-", 0, 0, 0
    failures: list[str] = []
    for batch in batches:
        for name, lengths in length_cases(card.tokenizer.max_len, rng).items():
            ids, lens = make_batch(
                batch, lengths, card.model.vocab_size, card.tokenizer.max_len, rng
            )
            want_probs, want_expected = torch_outputs(model, card, ids, lens)
            got_probs, got_expected = run({"input_ids": ids, "lengths": lens})
            cases += 1
            rows += batch
            diff = float(np.abs(got_probs - want_probs).max())
            expected_diff = float(np.abs(got_expected - want_expected).max())
            case = f"batch={batch} {name}"
            if diff > worst:
                worst, worst_case = diff, case
            worst_expected = max(worst_expected, expected_diff)
            # Within the tolerance an argmax can flip only between labels within 2 *
            # tolerance of each other (near-ties): counted, and bounded over all rows below.
            mismatches += int((got_probs.argmax(1) != want_probs.argmax(1)).sum())
            if diff > tolerance or expected_diff > expected_tolerance:
                failures.append(
                    f"{case}: |probs diff| {diff:.2e}, |expected diff| {expected_diff:.2e}"
                )
    agreement = 1.0 - mismatches / max(rows, 1)
    if agreement < min_agreement:
        failures.append(f"argmax agreement {agreement:.2%} < {min_agreement:.0%}")
    return Fp16Report(
        cases,
        rows,
        worst,
        worst_case,
        worst_expected,
        mismatches,
        tolerance,
        expected_tolerance,
        min_agreement,
        time.perf_counter() - start,
        failures,
        "CUDAExecutionProvider" if provider == "cuda" else REFERENCE_PROVIDER,
    )

"""An export-friendly twin of ``ReviewLSTM`` with exact variable-length semantics.

``pack_padded_sequence`` does not export well (``enforce_sorted=False`` bakes the example
batch size into the graph, and onnxruntime's CUDA LSTM wants ``sequence_lens`` on the host).
Instead, for a packed model:

* the forward direction runs over the right-padded batch and is read at ``length - 1``
  (padding comes after the real tokens, so it cannot affect that step);
* the backward direction runs over each review reversed *within its length* (a gather), so
  it too starts at the real last token; its outputs are un-reversed with the same gather.

Each direction of each layer is a single-direction, time-major ``nn.LSTM`` (ONNX ``LSTM`` with
``layout=0``, which every onnxruntime provider accepts). With ``fold=True`` (one-layer models)
the embedding and the LSTM are instead the folded recurrence of ``export.fold``. The export's
validation checks either against the PyTorch model with ``pack_padded_sequence`` on a grid of
shapes.
"""

from __future__ import annotations

import torch
from torch import nn

from scorer.export.fold import FoldedLSTM, folded_factors, step_ids
from scorer.nn.model import ReviewLSTM


def _single_direction(lstm: nn.LSTM, layer: int, reverse: bool) -> nn.LSTM:
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    weight_ih = getattr(lstm, f"weight_ih{suffix}")
    cell = nn.LSTM(weight_ih.shape[1], lstm.hidden_size)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, f"{name}_l0").copy_(getattr(lstm, f"{name}{suffix}"))
    return cell


class RatingOutputs(nn.Module):
    """(probs [B, K], expected_rating [B]) from logits, or from a regression value."""

    def __init__(self, labels: tuple[float, ...], regression: bool) -> None:
        super().__init__()
        values = torch.tensor(labels, dtype=torch.float32)
        # Gaps to the neighbouring labels; a huge gap past either end keeps p there at 1.
        far = torch.full((1,), 1e30)
        gaps = values[1:] - values[:-1]
        self.regression = regression
        self.register_buffer("values", values)
        self.register_buffer("left", torch.cat([far, gaps]))
        self.register_buffer("right", torch.cat([gaps, far]))
        self.low, self.high = float(values[0]), float(values[-1])

    def forward(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.regression:
            probs = torch.softmax(output.float(), dim=1)
            return probs, probs @ self.values
        value = torch.clamp(output.float(), self.low, self.high)
        # Piecewise-linear weights on the two labels around the value: sum_k p_k v_k == value.
        delta = value[:, None] - self.values[None, :]
        distance = torch.where(delta <= 0, -delta / self.left, delta / self.right)
        return torch.relu(1.0 - distance), value


class InferenceGraph(nn.Module):
    """(input_ids [B, T] int32, lengths [B] int64) -> (probs [B, K], expected_rating [B])."""

    def __init__(
        self, model: ReviewLSTM, labels: tuple[float, ...], max_len: int, fold: bool = False
    ) -> None:
        super().__init__()
        config = model.config
        if fold and config.layers != 1:
            raise ValueError("only a one-layer model has its embedding folded")
        self.config = config
        self.max_len = max_len
        self.embedding = model.embedding
        self.head = model.head
        self.wide = model.wide
        self.linear = model.linear
        self.outputs = RatingOutputs(labels, config.regression)
        self.folded = (
            nn.ModuleList(
                _FoldedDirection(model, reverse)
                for reverse in ((False, True) if config.bidirectional else (False,))
            )
            if fold
            else nn.ModuleList()
        )
        self.fixed_lstm = None if config.packed else model.lstm
        self.layers = (
            nn.ModuleList(
                _Layer(model.lstm, layer, config.bidirectional) for layer in range(config.layers)
            )
            if config.packed
            else nn.ModuleList()
        )
        self.eval()

    def forward(
        self, input_ids: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ids = input_ids
        if self.fixed_lstm is not None:
            # A fixed-length model always reads exactly max_len steps, padding included.
            ids = ids[:, : self.max_len]
            ids = nn.functional.pad(ids, (0, self.max_len - ids.shape[1]))
        steps = ids.shape[1]
        lengths = torch.clamp(lengths, 1, steps)
        if len(self.folded):
            features = self._folded_features(ids, lengths)
        else:
            features = self._unfolded_features(ids, lengths, steps)
        output = self.head(features)
        if self.wide is not None:
            output = output + self.wide(ids, lengths)
        if self.linear is not None:
            output = output + self.linear(ids, lengths)
        if self.config.regression:
            output = output.squeeze(-1)
        return self.outputs(output)

    def _folded_features(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        want_max = self.config.pooling == "last+max"
        finals, maxima = [], []
        for direction in self.folded:
            arranged, valid = step_ids(
                ids, lengths, direction.hold, self.config.packed, direction.reverse
            )
            final, best = FoldedLSTM.apply(
                arranged,
                valid,
                direction.embedding,
                direction.w_in,
                direction.bias,
                direction.recurrent,
                want_max,
                self.config.packed,
            )
            finals.append(final)
            maxima.append(best)
        return torch.cat(finals + maxima if want_max else finals, dim=1)

    def _unfolded_features(
        self, ids: torch.Tensor, lengths: torch.Tensor, steps: int
    ) -> torch.Tensor:
        x = self.embedding(ids.long()).transpose(0, 1)  # [T, B, E]
        if self.fixed_lstm is not None:
            features = self._fixed_features(x, lengths, steps)
        else:
            features = self._packed_features(x, lengths, steps)
        return features

    def _fixed_features(self, x: torch.Tensor, lengths: torch.Tensor, steps: int) -> torch.Tensor:
        lstm = self.fixed_lstm
        assert lstm is not None
        out, (h, _) = lstm(x.transpose(0, 1))
        last = torch.cat([h[-2], h[-1]], dim=1) if self.config.bidirectional else h[-1]
        if self.config.pooling == "last":
            return last
        return torch.cat([last, _masked_max(out.transpose(0, 1), lengths, steps)], dim=1)

    def _packed_features(self, x: torch.Tensor, lengths: torch.Tensor, steps: int) -> torch.Tensor:
        last = x
        for layer in self.layers:
            x, last = _LengthAwareLSTM.apply(
                x,
                lengths,
                layer.w,
                layer.r,
                layer.b,
                layer.hidden,
                layer.direction,
                *layer.params(),
            )
        if self.config.pooling == "last":
            return last
        return torch.cat([last, _masked_max(x, lengths, steps)], dim=1)


class _FoldedDirection(nn.Module):
    """Layer 0 of one direction with its embedding folded in (see export.fold)."""

    def __init__(self, model: ReviewLSTM, reverse: bool) -> None:
        super().__init__()
        embedding, w_in, bias, recurrent = folded_factors(
            model.embedding.weight, model.lstm, reverse
        )
        self.reverse = reverse
        self.hold = embedding.shape[0]  # the table's extra all-zero row
        self.register_buffer("embedding", embedding)
        self.register_buffer("w_in", w_in)
        self.register_buffer("bias", bias)
        self.register_buffer("recurrent", recurrent)


# ONNX orders LSTM gates i, o, f, c; PyTorch orders them i, f, g(=c), o.
_ONNX_GATES = (0, 3, 1, 2)


def _onnx_gates(weight: torch.Tensor) -> torch.Tensor:
    return torch.cat([weight.chunk(4, dim=0)[k] for k in _ONNX_GATES], dim=0)


class _Layer(nn.Module):
    """One layer of a packed (bi)LSTM: its single-direction cells for the eager reference, and
    the same weights in ONNX layout (``W``, ``R``, ``B``) for the exported LSTM node."""

    def __init__(self, lstm: nn.LSTM, layer: int, bidirectional: bool) -> None:
        super().__init__()
        reverses = (False, True) if bidirectional else (False,)
        self.cells = nn.ModuleList(_single_direction(lstm, layer, rev) for rev in reverses)
        self.hidden = lstm.hidden_size
        self.direction = "bidirectional" if bidirectional else "forward"
        with torch.no_grad():
            self.register_buffer(
                "w", torch.stack([_onnx_gates(c.weight_ih_l0) for c in self.cells])
            )
            self.register_buffer(
                "r", torch.stack([_onnx_gates(c.weight_hh_l0) for c in self.cells])
            )
            self.register_buffer(
                "b",
                torch.stack(
                    [
                        torch.cat([_onnx_gates(c.bias_ih_l0), _onnx_gates(c.bias_hh_l0)])
                        for c in self.cells
                    ]
                ),
            )

    def params(self) -> list[torch.Tensor]:
        return [
            p
            for c in self.cells
            for p in (c.weight_ih_l0, c.weight_hh_l0, c.bias_ih_l0, c.bias_hh_l0)
        ]


def _reference(x: torch.Tensor, lengths: torch.Tensor, params: tuple[torch.Tensor, ...]):
    """(outputs [T, B, D*H], final states [B, D*H]) with packed semantics, by gathers: the
    forward direction is read at ``length - 1``; the backward one runs over each column
    reversed within its length and is un-reversed the same way."""
    steps, batch = x.shape[0], x.shape[1]
    time = torch.arange(steps, device=x.device)[:, None]
    reverse = torch.where(time < lengths[None, :], lengths[None, :] - 1 - time, time)
    last_step = (lengths - 1)[None, :, None]
    outputs, finals = [], []
    for direction in range(len(params) // 4):
        weights = params[4 * direction : 4 * direction + 4]
        hidden = weights[1].shape[1]
        zeros = x.new_zeros((1, batch, hidden))
        backward = direction == 1
        source = _gather_time(x, reverse) if backward else x
        out, _, _ = torch.lstm(
            source, (zeros, zeros), list(weights), True, 1, 0.0, False, False, False
        )
        finals.append(out.gather(0, last_step.expand(1, -1, hidden)).squeeze(0))
        outputs.append(_gather_time(out, reverse) if backward else out)
    return torch.cat(outputs, dim=2), torch.cat(finals, dim=1)


class _LengthAwareLSTM(torch.autograd.Function):
    """Eagerly the gather formulation above; exported, one ONNX ``LSTM`` with
    ``sequence_lens``, whose semantics are exactly those (each direction starts or stops at a
    row's own length) and which spares onnxruntime the gathers and the unread outputs."""

    @staticmethod
    def forward(ctx, x, lengths, w, r, b, hidden, direction, *params):  # type: ignore[override]
        return _reference(x, lengths, params)

    @staticmethod
    def symbolic(g, x, lengths, w, r, b, hidden, direction, *params):
        seq = g.op("Cast", lengths, to_i=6)  # INT32
        y, y_h, _ = g.op(
            "LSTM", x, w, r, b, seq, hidden_size_i=hidden, direction_s=direction, outputs=3
        )
        # Y [T, D, B, H] -> [T, B, D*H]; Y_h [D, B, H] -> [B, D*H] (forward first, as in torch).
        out = g.op(
            "Reshape",
            g.op("Transpose", y, perm_i=[0, 2, 1, 3]),
            g.op("Constant", value_t=torch.tensor([0, 0, -1], dtype=torch.int64)),
        )
        final = g.op(
            "Reshape",
            g.op("Transpose", y_h, perm_i=[1, 0, 2]),
            g.op("Constant", value_t=torch.tensor([0, -1], dtype=torch.int64)),
        )
        return out, final


def _gather_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x.gather(0, index[:, :, None].expand(-1, -1, x.shape[2]))


def _masked_max(out: torch.Tensor, lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """Max over time [T, B, D] -> [B, D], over each column's first ``length`` steps only."""
    valid = torch.arange(steps, device=out.device)[:, None] < lengths[None, :]
    return out.masked_fill(~valid[:, :, None], float("-inf")).amax(dim=0)


class ReferenceOutputs(nn.Module):
    """The trained PyTorch model (with pack_padded_sequence) plus the same output head."""

    def __init__(self, model: ReviewLSTM, labels: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model.eval()
        self.outputs = RatingOutputs(labels, model.config.regression)

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor):
        return self.outputs(self.model(input_ids.long(), lengths, pack=True))

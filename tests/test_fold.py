"""The folded first layer (export.fold): step arrangement, eager recurrence, ONNX graph."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from scorer.cli import main
from scorer.errors import UserError
from scorer.export.fold import folded_weights, recur, step_ids
from scorer.export.onnx_export import export_model
from tests.helpers import make_model_dir

HOLD = 99
IDS = torch.tensor([[5, 6, 7, 0], [8, 0, 0, 0], [1, 2, 3, 4]])
LENGTHS = torch.tensor([3, 1, 4])


@pytest.mark.parametrize(
    ("packed", "reverse", "want_ids", "want_valid"),
    [
        # Packed: right-aligned, padding steps first and reading HOLD.
        (True, False, [[HOLD, 5, 6, 7], [HOLD, HOLD, HOLD, 8], [1, 2, 3, 4]],
         [[0, 1, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1]]),
        # ...and reversed within each review's own length.
        (True, True, [[HOLD, 7, 6, 5], [HOLD, HOLD, HOLD, 8], [4, 3, 2, 1]],
         [[0, 1, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1]]),
        # Fixed: every position as given; valid marks the real tokens.
        (False, False, [[5, 6, 7, 0], [8, 0, 0, 0], [1, 2, 3, 4]],
         [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]]),
        (False, True, [[0, 7, 6, 5], [0, 0, 0, 8], [4, 3, 2, 1]],
         [[0, 1, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1]]),
    ],
)  # fmt: skip
def test_step_ids(packed, reverse, want_ids, want_valid) -> None:
    arranged, valid = step_ids(IDS, LENGTHS, HOLD, packed, reverse)
    assert arranged.T.tolist() == want_ids
    assert valid[:, :, 0].T.int().tolist() == want_valid


@pytest.mark.parametrize("bidirectional", [False, True])
def test_eager_recurrence_equals_packed_lstm(bidirectional) -> None:
    torch.manual_seed(0)
    vocab, emb, hidden, steps = 30, 6, 5, 9
    embedding = torch.randn(vocab, emb)
    lstm = torch.nn.LSTM(emb, hidden, batch_first=True, bidirectional=bidirectional).eval()
    ids = torch.randint(1, vocab, (7, steps))
    lengths = torch.tensor([1, steps, 4, 2, steps, 7, 3])
    with torch.no_grad():
        packed = pack_padded_sequence(embedding[ids], lengths, True, enforce_sorted=False)
        out, (h_n, _) = lstm(packed)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, True, total_length=steps)
    valid = torch.arange(steps)[None, :, None] < lengths[:, None, None]
    want_max = out.masked_fill(~valid, float("-inf")).amax(1)
    for direction, reverse in enumerate((False, True) if bidirectional else (False,)):
        table, recurrent = folded_weights(embedding, lstm, reverse)
        arranged, steps_valid = step_ids(ids, lengths, vocab, True, reverse)
        h, best = recur(arranged, steps_valid, table, recurrent)
        torch.testing.assert_close(h, h_n[direction], atol=1e-5, rtol=0)
        columns = slice(direction * hidden, (direction + 1) * hidden)
        torch.testing.assert_close(best, want_max[:, columns], atol=1e-5, rtol=0)


def test_padding_row_keeps_the_state_exactly_zero() -> None:
    torch.manual_seed(1)
    lstm = torch.nn.LSTM(4, 3).eval()
    table, recurrent = folded_weights(torch.randn(10, 4), lstm, reverse=False)
    hold = torch.full((50, 2), table.shape[0] - 1)
    h, _ = recur(hold, torch.zeros(50, 2, 1, dtype=torch.bool), table, recurrent)
    assert torch.equal(h, torch.zeros_like(h))


def _ops(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize(
    ("variant", "options"),
    [
        ("packed", {}),
        ("packed", {"bidirectional": True, "pooling": "last+max"}),
        ("fixed", {"pooling": "last+max"}),
        ("regression", {"packed": True}),
    ],
)
def test_folded_and_fused_graphs_agree(tmp_path, variant, options) -> None:
    model_dir = make_model_dir(tmp_path / "m", variant=variant, **options)
    result = export_model(model_dir.path)
    folded, fused = result.graphs  # the CPU graph (folded) and the CUDA graph (fused)
    assert (folded.device, folded.kind, fused.device, fused.kind) == (
        "cpu",
        "folded",
        "cuda",
        "fused",
    )
    assert "Scan" in _ops(folded.path) and "LSTM" not in _ops(folded.path)
    assert "LSTM" in _ops(fused.path) and "Scan" not in _ops(fused.path)
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 25, size=300)
    ids = rng.integers(2, model_dir.card.model.vocab_size, size=(300, 24)).astype(np.int32)
    ids[np.arange(24)[None, :] >= lengths[:, None]] = 0
    feeds = {"input_ids": ids, "lengths": lengths}
    outputs = [
        ort.InferenceSession(str(r.path), providers=["CPUExecutionProvider"]).run(None, feeds)
        for r in (folded, fused)
    ]
    for a, b in zip(*outputs, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_auto_folds_one_layer_models_only(tmp_path) -> None:
    one = make_model_dir(tmp_path / "one")
    two = make_model_dir(tmp_path / "two", layers=2)
    assert "Scan" in _ops(export_model(one.path).path)
    assert "LSTM" in _ops(export_model(two.path).path)


def test_auto_keeps_the_fused_graph_below_opset_13(tmp_path) -> None:
    model_dir = make_model_dir(tmp_path / "m")
    result = export_model(model_dir.path, opset=12)
    assert "LSTM" in _ops(result.path) and result.graphs[0].kind == "fused"


@pytest.mark.parametrize(
    ("graph", "layers", "opset", "message"),
    [
        ("folded", 2, 17, "needs a one-layer model and --opset >= 13; this is a 2-layer model"),
        ("folded", 1, 12, "needs a one-layer model and --opset >= 13; this is a 1-layer model"),
        ("scan", 1, 17, "--graph must be one of auto, folded, fused, got 'scan'"),
    ],
)
def test_bad_graph_choice_is_refused(tmp_path, capsys, graph, layers, opset, message) -> None:
    model_dir = make_model_dir(tmp_path / "m", layers=layers)
    with pytest.raises(UserError, match=message):
        export_model(model_dir.path, graph=graph, opset=opset)
    argv = ["export", str(model_dir.path), "--graph", graph, "--opset", str(opset)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (model_dir.path / "model.onnx").exists()

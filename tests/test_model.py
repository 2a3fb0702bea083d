"""The forward-only LSTM's padded path computes what pack_padded_sequence does."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scorer.nn.model import ReviewLSTM
from scorer.runtime.config import ModelConfig

VOCAB, STEPS = 40, 9


def _model(layers: int, pooling: str, bidirectional: bool = False) -> ReviewLSTM:
    torch.manual_seed(0)
    config = ModelConfig(
        variant="packed",
        vocab_size=VOCAB,
        num_labels=5,
        embedding_dim=6,
        hidden_dim=5,
        layers=layers,
        packed=True,
        bidirectional=bidirectional,
        pooling=pooling,
        dropout=0.0,
        wide_buckets=16,
    )
    return ReviewLSTM(config)


def _logits_and_grads(model, ids, lengths, host, pack):
    model.zero_grad()
    logits = model(ids, lengths, host, pack=pack)
    # Weighted so that every logit's gradient differs, not just their sum's.
    weights = torch.arange(1, logits.numel() + 1, device=logits.device).view_as(logits)
    (logits * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(0, STEPS), min_size=1, max_size=6),
    layers=st.sampled_from([1, 2]),
    pooling=st.sampled_from(["last", "last+max"]),
    host_lengths=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_forward_only_matches_pack_padded_sequence(lengths, layers, pooling, host_lengths, seed):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (len(lengths), STEPS), generator=generator)
    lengths_t = torch.tensor(lengths)
    ids[torch.arange(STEPS)[None, :] >= lengths_t[:, None]] = 0
    host = lengths_t.clone() if host_lengths else None
    model = _model(layers, pooling)
    packed, packed_grads = _logits_and_grads(model, ids, lengths_t, host, pack=True)
    fast, fast_grads = _logits_and_grads(model, ids, lengths_t, host, pack=False)
    torch.testing.assert_close(fast, packed, rtol=1e-5, atol=1e-6)
    assert fast_grads.keys() == packed_grads.keys()
    for name, grad in packed_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("pooling", ["last", "last+max"])
@pytest.mark.parametrize("host_lengths", [True, False])
def test_tokens_after_a_reviews_length_change_nothing(pooling, host_lengths) -> None:
    model = _model(1, pooling).eval()
    ids = torch.randint(1, VOCAB, (3, STEPS))
    lengths = torch.tensor([4, 1, 7])
    clean = ids.clone()
    clean[torch.arange(STEPS)[None, :] >= lengths[:, None]] = 0
    host = lengths.clone() if host_lengths else None
    with torch.no_grad():
        torch.testing.assert_close(
            model(ids, lengths, host), model(clean, lengths, host), rtol=0, atol=0
        )


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(
                not torch.cuda.is_available(), reason="needs a CUDA device (none here)"
            ),
        ),
    ],
)
def test_forward_only_matches_pack_padded_sequence_on_the_device(device) -> None:
    """cuDNN runs both paths on a GPU: the same check there, with host-side lengths."""
    model = _model(2, "last+max").to(device)
    ids = torch.randint(1, VOCAB, (5, STEPS), device=device)
    lengths = torch.tensor([STEPS, 1, 0, 4, 7])
    ids[(torch.arange(STEPS)[None, :] >= lengths[:, None]).to(device)] = 0
    on_device = lengths.to(device)
    packed, packed_grads = _logits_and_grads(model, ids, on_device, lengths, pack=True)
    fast, fast_grads = _logits_and_grads(model, ids, on_device, lengths, pack=False)
    # cuDNN may run its RNNs in TF32 and pick other kernels per layout; a wrong step or
    # position moves them by far more.
    tol = {"rtol": 1e-2, "atol": 1e-3} if device == "cuda" else {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(fast, packed, **tol)
    for name, grad in packed_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, **tol, msg=name)


def test_a_bidirectional_model_always_packs() -> None:
    model = _model(1, "last+max", bidirectional=True).eval()
    ids = torch.randint(1, VOCAB, (3, STEPS))
    lengths = torch.tensor([STEPS, 2, 5])
    ids[torch.arange(STEPS)[None, :] >= lengths[:, None]] = 0
    with torch.no_grad():
        assert torch.equal(model(ids, lengths), model(ids, lengths, pack=True))

"""The linear model over idf-weighted n-grams that ``scorer.train.blend`` fits: the features'
(``scorer.nn.ngrams``) smoothed idf, the sparse design matrix, and a
multinomial logistic regression fitted to convergence by full-batch L-BFGS."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from scorer.nn.ngrams import Positions
from scorer.text.vocab import PAD_ID, UNK_ID

MIN_DF = 2
BUCKETS = 262_144


def fit_idf(train: Positions, vocab: int, buckets: int) -> np.ndarray:
    """Smoothed idf per feature (scikit-learn's), zero below ``MIN_DF`` reviews and for
    ``<pad>`` and ``<unk>``."""
    width = vocab + buckets
    distinct = np.unique(train.rows * width + train.columns) % width
    df = np.bincount(distinct, minlength=width)
    idf = np.where(df >= MIN_DF, np.log((1 + train.n) / (1 + df)) + 1.0, 0.0)
    idf[[PAD_ID, UNK_ID]] = 0.0
    return idf


def design(pos: Positions, idf: np.ndarray, *, compact: bool = False) -> torch.Tensor:
    """Sparse ``[n, V + buckets]`` float64: each position's idf, summed per feature, each row
    divided by the root of its positions' summed squared idfs (as ``IdfNgrams`` computes).
    ``compact``: only the features of nonzero idf, in order (``np.flatnonzero(idf)``): the
    others' columns are empty, so their weights stay at zero and the fit need not carry them
    (most of the buckets: dense L-BFGS steps over them cost more than the sparse products)."""
    weight = idf[pos.columns]
    square = np.bincount(pos.rows, weights=weight * weight, minlength=pos.n)
    values = weight / np.sqrt(np.maximum(square, 1e-12))[pos.rows]
    rows, columns, width = pos.rows, pos.columns, len(idf)
    if compact:
        kept = weight != 0
        active = np.flatnonzero(idf)
        renumber = np.zeros(len(idf), dtype=np.int64)
        renumber[active] = np.arange(len(active))
        rows, columns, values, width = (
            rows[kept],
            renumber[columns[kept]],
            values[kept],
            len(active),
        )
    index = torch.from_numpy(np.stack([rows, columns]))
    coo = torch.sparse_coo_tensor(
        index, torch.from_numpy(values), (pos.n, width), check_invariants=True
    )
    return coo.coalesce()


def expand(weight: torch.Tensor, idf: np.ndarray) -> torch.Tensor:
    """Weights fitted on ``design(..., compact=True)`` at full width: zero where idf is zero."""
    full = torch.zeros(len(idf), weight.shape[1], dtype=weight.dtype)
    full[torch.from_numpy(np.flatnonzero(idf))] = weight
    return full


def products(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (sparse COO) and its transpose as CSR, the two products L-BFGS repeats: the same
    optimum as COO products, faster (``python -m benchmarks.blend_fit``)."""
    with warnings.catch_warnings():
        # torch calls its CSR support beta; the two products used here are long-standing.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return x.to_sparse_csr(), x.t().coalesce().to_sparse_csr()


def _softmax_ce(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy, its gradient with respect to the logits)."""
    log_p = torch.log_softmax(logits, dim=1)
    loss = -log_p.gather(1, target[:, None]).mean()
    grad = log_p.exp()
    grad[torch.arange(len(target)), target] -= 1.0
    return loss, grad / len(target)


def fit_logistic(
    x: torch.Tensor,
    xt: torch.Tensor,
    target: torch.Tensor,
    classes: int,
    c: float,
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
    iterations: int = 500,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression, scikit-learn's objective (C times the summed
    cross-entropy plus half the squared weights; intercept not penalized), by L-BFGS.
    ``xt`` is ``x`` transposed (the gradient's product); see ``products``."""
    n, width = x.shape
    weight = torch.zeros(width, classes, dtype=torch.float64) if start is None else start[0]
    bias = torch.zeros(classes, dtype=torch.float64) if start is None else start[1]
    weight = weight.clone().requires_grad_(True)
    bias = bias.clone().requires_grad_(True)
    penalty = 1.0 / (c * n)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        max_iter=iterations,
        history_size=20,
        tolerance_grad=1e-7,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        with torch.no_grad():
            logits = torch.sparse.mm(x, weight) + bias
            loss, grad = _softmax_ce(logits, target)
            loss = loss + 0.5 * penalty * (weight * weight).sum()
            weight.grad = torch.sparse.mm(xt, grad) + penalty * weight
            bias.grad = grad.sum(dim=0)
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()

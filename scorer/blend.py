"""Fit ``scorer.linear``'s model on the training rows and blend it into a trained model.

After the search, a multinomial logistic regression over the idf-weighted n-grams is fitted
to convergence (full-batch L-BFGS, for each C of ``C_GRID``, warm-started), C chosen on the
validation rows by the training objective; then the blend ``a * model + b * linear`` is
fitted there too, and a and b are folded into the weights: the graph stays one model.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from scorer.fit import Objective
from scorer.linear import IdfNgrams
from scorer.model import ReviewLSTM
from scorer.train_data import Dataset, make_batch
from scorer.vocab import PAD_ID, UNK_ID
from scorer.wide import PRIME

C_GRID = (1.0, 4.0, 16.0)
MIN_DF = 2
BUCKETS = 262_144


@dataclass(frozen=True)
class Positions:
    """The features at each position of n reviews: (row, column) pairs, columns being
    unigram ids, then ``V +`` bigram buckets."""

    rows: np.ndarray
    columns: np.ndarray
    n: int


def word_mask(tokens: Sequence[str]) -> np.ndarray:
    """Which vocabulary ids are words (features): not whitespace tokens, ``<pad>`` or ``<unk>``."""
    word = np.array([not t.isspace() for t in tokens])
    word[[PAD_ID, UNK_ID]] = False
    return word


def positions(ids: np.ndarray, lengths: np.ndarray, word: np.ndarray, buckets: int) -> Positions:
    n, steps = ids.shape
    ids = ids.astype(np.int64)
    lengths = np.clip(lengths, 1, steps)
    real = np.arange(steps)[None, :] < lengths[:, None]
    words = real & word[ids]
    r1, c1 = np.nonzero(words)
    pairs = (ids[:, :-1] * PRIME + ids[:, 1:]) % buckets
    r2, c2 = np.nonzero(words[:, :-1] & words[:, 1:])
    vocab = len(word)
    return Positions(
        np.concatenate([r1, r2]), np.concatenate([ids[r1, c1], vocab + pairs[r2, c2]]), n
    )


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


def fit_weights(
    model_logits: torch.Tensor, linear_logits: torch.Tensor, loss, iterations: int = 100
) -> tuple[float, float]:
    """(a, b) minimizing ``loss(a * model_logits + b * linear_logits)`` on the validation
    rows, from (1, 0): the model alone."""
    ab = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([ab], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = loss(ab[0] * model_logits + ab[1] * linear_logits)
        value.backward()
        return value

    optimizer.step(closure)
    a, b = ab.detach().tolist()
    return a, b


def linear_path(
    vocab: int, buckets: int, idf: np.ndarray, word: np.ndarray, weight: torch.Tensor, b: float
) -> IdfNgrams:
    """The fitted linear model as a graph path, ``b`` folded into its tables (rows hold
    weight times idf: the path sums them over positions)."""
    path = IdfNgrams(vocab, buckets, weight.shape[1])
    rows = (weight * torch.from_numpy(idf)[:, None] * b).float()
    with torch.no_grad():
        path.unigram.weight.copy_(rows[:vocab])
        path.bigram.weight.copy_(rows[vocab:])
        path.unigram_idf.copy_(torch.from_numpy(idf[:vocab]))
        path.bigram_idf.copy_(torch.from_numpy(idf[vocab:]))
        path.word.copy_(torch.from_numpy(word.astype(np.float32)))
    return path


@torch.no_grad()
def _logits(model: ReviewLSTM, data: Dataset, batch_size: int = 1024) -> torch.Tensor:
    """The model's logits for every row, float64 on the host, in row order."""
    model.eval()
    device = next(model.parameters()).device
    out = torch.zeros(len(data), model.config.outputs, dtype=torch.float64)
    order = np.argsort(data.host_lengths, kind="stable")
    for start in range(0, len(data), batch_size):
        batch = make_batch(data, order[start : start + batch_size], not model.config.packed, device)
        logits = model(batch.ids, batch.lengths, batch.cpu_lengths).double().cpu()
        out[batch.index.cpu()] = logits
    return out


@dataclass(frozen=True)
class LinearFit:
    """``linear_fits``' result: per C of the grid, the validation loss, the weights and the
    validation logits; the features' idf and word mask; and where the seconds went."""

    fits: list[tuple[float, float, torch.Tensor, torch.Tensor, torch.Tensor]]
    idf: np.ndarray
    word: np.ndarray
    features_seconds: float
    fit_seconds: float

    def best(self) -> tuple[float, float, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(validation loss, C, weight, bias, validation logits) of the best C."""
        return min(self.fits, key=lambda f: f[0])


def linear_fits(
    sets: dict[str, Dataset],
    tokens: Sequence[str],
    judge: Objective,
    grid: Sequence[float] = C_GRID,
    buckets: int = BUCKETS,
) -> LinearFit:
    """The linear model fitted on ``sets["train"]`` for each C of ``grid`` (warm-started in
    order), each judged on ``sets["val"]`` by ``judge``."""
    began = time.perf_counter()
    word = word_mask(tokens)
    pos = {
        name: positions(sets[name].ids.cpu().numpy(), sets[name].host_lengths, word, buckets)
        for name in ("train", "val")
    }
    idf = fit_idf(pos["train"], len(tokens), buckets)
    x = {name: design(pos[name], idf, compact=True) for name in pos}
    train, xt = products(x["train"])
    train_target = torch.from_numpy(sets["train"].label_index.astype(np.int64))
    val_target = sets["val"].target.cpu()
    host_judge = replace(judge, values=judge.values.cpu())
    classes = len(judge.values)
    fits, start = [], None
    features = time.perf_counter() - began
    for c in grid:
        weight, bias = fit_logistic(train, xt, train_target, classes, c, start)
        start = (weight, bias)
        linear = torch.sparse.mm(x["val"], weight) + bias
        fits.append((float(host_judge(linear, val_target)), c, weight, bias, linear))
    return LinearFit(fits, idf, word, features, time.perf_counter() - began - features)


def blend_into(
    model: ReviewLSTM,
    sets: dict[str, Dataset],
    tokens: Sequence[str],
    judge: Objective,
    buckets: int = BUCKETS,
) -> dict[str, object]:
    """Fit the linear path on the training rows, choose C and then the blend (a, b) on the
    validation rows by ``judge`` (the objective the search compares by), and fold it into
    ``model`` in place. Returns what metrics.json records of it."""
    began = time.perf_counter()
    fitted = linear_fits(sets, tokens, judge, C_GRID, buckets)
    linear_loss, c, weight, bias, linear = fitted.best()
    val_target = sets["val"].target.cpu()
    host_judge = replace(judge, values=judge.values.cpu())
    vocab = len(tokens)
    deep = _logits(model, sets["val"])
    a, b = fit_weights(deep, linear, lambda z: host_judge(z, val_target))
    with torch.no_grad():
        model.head.weight.mul_(a)
        model.head.bias.mul_(a).add_((b * bias).to(model.head.bias))
        if model.wide is not None:
            model.wide.unigram.weight.mul_(a)
            model.wide.bigram.weight.mul_(a)
    device = model.head.weight.device
    model.config = replace(model.config, linear_buckets=buckets)
    model.linear = linear_path(
        vocab, buckets, fitted.idf, fitted.word, expand(weight, fitted.idf), b
    ).to(device)
    return {
        "c": c,
        "a": a,
        "b": b,
        "val_loss": {
            "model": float(host_judge(deep, val_target)),
            "linear": linear_loss,
            "blend": float(host_judge(a * deep + b * linear, val_target)),
        },
        "c_grid": {str(f[1]): f[0] for f in fitted.fits},
        # Where the blend's time goes (not part of any result: timings vary by host and load).
        "seconds": {
            "features": fitted.features_seconds,
            "fit": fitted.fit_seconds,
            "total": time.perf_counter() - began,
        },
    }

"""Fit ``scorer.nn.linear``'s model on the training rows and blend it into a trained model.

After the search, a multinomial logistic regression over the idf-weighted n-grams is fitted
to convergence (full-batch L-BFGS, for each C of ``C_GRID``, warm-started), C chosen on the
validation rows by the training objective; then the blend ``a * model + b * linear`` is
fitted there too, and a and b are folded into the weights: the graph stays one model. Where
the linear model does not pay for its weight on validation, only the scale a is kept, and the
graph has no linear path. The refit (``scorer.train.refit``) fits the linear model again at that C
on more rows (``refit_linear``). The features and the fit itself: ``scorer.train.ngram_fit``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from scorer.nn.linear import IdfNgrams
from scorer.nn.model import ReviewLSTM
from scorer.nn.ngrams import positions, word_mask
from scorer.train.data import Dataset
from scorer.train.fit import Objective, logits
from scorer.train.ngram_fit import BUCKETS, design, expand, fit_idf, fit_logistic, products

C_GRID = (1.0, 4.0, 16.0)


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


@dataclass(frozen=True)
class Blend:
    """The blend chosen on validation: ``a * model + b * linear``, the linear model's C,
    weights (full width: ``expand``), bias, features' idf and word mask. Without
    ``linear`` the blend is ``a * model`` alone (a scale of the logits): the linear path did
    not earn its place on validation (``choose_blend``), and the graph has none."""

    a: float
    b: float
    c: float
    weight: torch.Tensor
    bias: torch.Tensor
    idf: np.ndarray
    word: np.ndarray
    buckets: int
    linear: bool = True


def fold(model: ReviewLSTM, blend: Blend) -> None:
    """``blend`` folded into ``model`` in place: its head and wide path scaled by a, and
    (with ``blend.linear``) the linear path added with b folded into its tables. The graph
    stays one model."""
    a, b = blend.a, blend.b
    with torch.no_grad():
        model.head.weight.mul_(a)
        model.head.bias.mul_(a)
        if blend.linear:
            model.head.bias.add_((b * blend.bias).to(model.head.bias))
        if model.wide is not None:
            model.wide.unigram.weight.mul_(a)
            model.wide.bigram.weight.mul_(a)
    if not blend.linear:
        return
    device = model.head.weight.device
    model.config = replace(model.config, linear_buckets=blend.buckets)
    vocab = len(blend.word)
    model.linear = linear_path(vocab, blend.buckets, blend.idf, blend.word, blend.weight, b).to(
        device
    )


def choose_blend(
    model: ReviewLSTM,
    sets: dict[str, Dataset],
    tokens: Sequence[str],
    judge: Objective,
    buckets: int = BUCKETS,
) -> tuple[Blend, dict[str, object]]:
    """Fit the linear model on the training rows, choose C and then the blend (a, b) with
    ``model`` on the validation rows by ``judge`` (the objective the search compares by).
    The linear path is kept only if it pays for its weight there: its blend's validation
    loss must beat the model's logits scaled alone (``a`` fitted without b) by more than
    ``1 / validation rows``, Akaike's price of one more fitted weight per row, since b is
    fitted on those very rows. Returns the blend and what metrics.json records of it."""
    began = time.perf_counter()
    fitted = linear_fits(sets, tokens, judge, C_GRID, buckets)
    linear_loss, c, weight, bias, linear = fitted.best()
    val_target = sets["val"].target.cpu()
    host_judge = replace(judge, values=judge.values.cpu())

    def loss(z: torch.Tensor) -> torch.Tensor:
        return host_judge(z, val_target)

    deep = logits(model, sets["val"])
    a, b = fit_weights(deep, linear, loss)
    scale = fit_weights(deep, torch.zeros_like(linear), loss)[0]
    blended, scaled = float(loss(a * deep + b * linear)), float(loss(scale * deep))
    keep = blended + 1.0 / len(val_target) < scaled
    if not keep:
        a, b = scale, 0.0
    blend = Blend(a, b, c, expand(weight, fitted.idf), bias, fitted.idf, fitted.word, buckets, keep)
    return blend, {
        "c": c,
        "a": a,
        "b": b,
        "linear_kept": keep,
        "val_loss": {
            "model": float(loss(deep)),
            "linear": linear_loss,
            "scaled": scaled,
            "with_linear": blended,
            "blend": blended if keep else scaled,
        },
        "c_grid": {str(f[1]): f[0] for f in fitted.fits},
        # Where the blend's time goes (not part of any result: timings vary by host and load).
        "seconds": {
            "features": fitted.features_seconds,
            "fit": fitted.fit_seconds,
            "total": time.perf_counter() - began,
        },
    }


def refit_linear(blend: Blend, data: Dataset, classes: int) -> Blend:
    """``blend``'s linear model fitted again on ``data`` at its C (warm-started from its
    weights), the idf counted on ``data``; a and b stay those chosen on validation. A blend
    without its linear path is returned as it is."""
    if not blend.linear:
        return blend
    pos = positions(data.ids.cpu().numpy(), data.host_lengths, blend.word, blend.buckets)
    idf = fit_idf(pos, len(blend.word), blend.buckets)
    x, xt = products(design(pos, idf, compact=True))
    active = torch.from_numpy(np.flatnonzero(idf))
    start = (blend.weight[active], blend.bias)
    target = torch.from_numpy(data.label_index.astype(np.int64))
    weight, bias = fit_logistic(x, xt, target, classes, blend.c, start)
    return replace(blend, weight=expand(weight, idf), bias=bias, idf=idf)

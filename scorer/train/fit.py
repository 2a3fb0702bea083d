"""The optimization loop: batches, AdamW with a one-cycle rate, validation each epoch, early
stopping, checkpoint averaging; and prediction. The host reads from the device once per epoch
(the loss sum) plus once per validation pass, never per step."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from scorer.nn.device import Runtime
from scorer.nn.model import ReviewLSTM
from scorer.progress import Progress
from scorer.runtime.config import ModelConfig, TrainConfig
from scorer.runtime.metrics import nearest_label, rating_metrics
from scorer.text.vocab import PAD_ID, UNK_ID
from scorer.train.batching import bucket_batches
from scorer.train.data import Batch, Dataset, make_batch


@dataclass(frozen=True)
class Prediction:
    expected: np.ndarray
    pred_index: np.ndarray
    loss: float
    nll: float = 0.0  # cross-entropy (regression: squared error), whatever the objective


@dataclass(frozen=True)
class Objective:
    """Cross-entropy (or MSE for regression), plus ``expected_weight`` times the squared
    error of the expected rating: ratings are ordered, and this term teaches the model that
    saying 4 for a 5 is better than saying 1.

    Distillation (``distill_weight`` > 0): where a batch carries a teacher's probabilities,
    the cross-entropy becomes ``(1 - w) * CE + w * T^2 * KL(teacher_T || model_T)``, both
    softened by the temperature T (Hinton et al.'s soft targets; T^2 keeps the soft term's
    gradients at the hard one's scale). Without them (validation rows, whatever ``w``) the
    loss is the plain one: every candidate is judged by the same yardstick."""

    config: ModelConfig
    values: torch.Tensor
    expected_weight: float = 0.0
    label_smoothing: float = 0.0
    distill_weight: float = 0.0
    temperature: float = 1.0

    @classmethod
    def of(
        cls, model: ModelConfig, train: TrainConfig, values: Sequence[float], device: torch.device
    ) -> Objective:
        """The objective ``train`` asks for, over the rating ``values`` (on ``device``)."""
        tensor = torch.tensor(values, dtype=torch.float32, device=device)
        return cls(
            model,
            tensor,
            train.expected_loss_weight,
            train.label_smoothing,
            train.distill_weight,
            train.distill_temperature,
        )

    def __call__(
        self, output: torch.Tensor, target: torch.Tensor, soft: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The mean loss of a batch; ``soft``: the teacher's probabilities of its rows."""
        output = output.float()
        if self.config.regression:
            return nn.functional.mse_loss(output, target[:, 1])
        loss = nn.functional.cross_entropy(
            output, target[:, 0].long(), label_smoothing=self.label_smoothing
        )
        if soft is not None and self.distill_weight:
            loss = (1 - self.distill_weight) * loss + self.distill_weight * soft_loss(
                output, soft, self.temperature
            )
        if self.expected_weight:
            expected = torch.softmax(output, dim=1) @ self.values
            loss = loss + self.expected_weight * nn.functional.mse_loss(expected, target[:, 1])
        return loss


def soft_loss(output: torch.Tensor, soft: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(teacher_T || model_T)``, batch mean: the teacher's probabilities and the
    model's logits both softened by ``temperature``."""
    # The teacher's log-probabilities are its logits up to a constant per row, which the
    # softmax removes; clamped so that a probability rounded to 0 stays finite.
    teacher = torch.log_softmax(torch.log(soft.float().clamp_min(1e-12)) / temperature, dim=1)
    model = torch.log_softmax(output / temperature, dim=1)
    kl = nn.functional.kl_div(model, teacher, reduction="batchmean", log_target=True)
    return temperature * temperature * kl


def drop_tokens(batch: Batch, rate: float) -> Batch:
    """``batch`` with each real token replaced by ``<unk>`` with probability ``rate``, drawn
    on the batch's device from torch's seeded generator (no host round trip)."""
    ids = batch.ids
    hit = (torch.rand(ids.shape, device=ids.device) < rate) & (ids != PAD_ID)
    return batch._replace(ids=ids.masked_fill(hit, UNK_ID))


def _forward(model: ReviewLSTM, batch: Batch, runtime: Runtime) -> torch.Tensor:
    with runtime.autocast():
        return model(
            batch.ids, batch.lengths, batch.cpu_lengths, lstm_fp32=runtime.precision.lstm_fp32
        )


@torch.no_grad()
def predict(
    model: ReviewLSTM,
    data: Dataset,
    labels: Sequence[float],
    runtime: Runtime,
    objective: Objective,
    batch_size: int = 1024,
) -> Prediction:
    """Expected rating and argmax (or nearest label) per row, in row order, plus mean loss.

    Results stay on the device until one copy at the end: a copy per batch would make the
    host wait for the GPU each time.
    """
    model.eval()
    device, n = runtime.device, len(data)
    values = torch.tensor(labels, dtype=torch.float32, device=device)
    order = np.argsort(data.host_lengths, kind="stable")
    expected = torch.zeros(n, dtype=torch.float64, device=device)
    pred_index = torch.zeros(n, dtype=torch.float64, device=device)
    loss_sum = torch.zeros(1, dtype=torch.float64, device=device)
    nll_sum = torch.zeros(1, dtype=torch.float64, device=device)
    for start in range(0, n, batch_size):
        rows = order[start : start + batch_size]
        batch = make_batch(data, rows, not model.config.packed, device)
        output = _forward(model, batch, runtime).float()
        loss_sum += objective(output, batch.target).double() * len(rows)
        if model.config.regression:
            nll = nn.functional.mse_loss(output, batch.target[:, 1], reduction="sum")
        else:
            nll = nn.functional.cross_entropy(output, batch.target[:, 0].long(), reduction="sum")
        nll_sum += nll.double()
        if model.config.regression:
            value = output.clamp(min(labels), max(labels))
        else:
            value = torch.softmax(output, dim=1) @ values
            pred_index[batch.index] = output.argmax(dim=1).double()
        expected[batch.index] = value.double()
    host = torch.cat([expected, pred_index, loss_sum, nll_sum]).cpu().numpy()
    expected_np = host[:n]
    if model.config.regression:
        pred_np = nearest_label(expected_np, labels)
    else:
        pred_np = host[n : 2 * n].astype(np.int64)
    return Prediction(
        expected_np, pred_np, float(host[-2]) / max(n, 1), float(host[-1]) / max(n, 1)
    )


@torch.no_grad()
def logits(model: ReviewLSTM, data: Dataset, batch_size: int = 1024) -> torch.Tensor:
    """The model's logits for every row of ``data``, float64 on the host, in row order."""
    model.eval()
    device = next(model.parameters()).device
    out = torch.zeros(len(data), model.config.outputs, dtype=torch.float64)
    order = np.argsort(data.host_lengths, kind="stable")
    for start in range(0, len(data), batch_size):
        batch = make_batch(data, order[start : start + batch_size], not model.config.packed, device)
        out[batch.index.cpu()] = model(batch.ids, batch.lengths, batch.cpu_lengths).double().cpu()
    return out


def _param_groups(model: ReviewLSTM, cfg: TrainConfig) -> list[dict]:
    """The wide path's tables learn at ``wide_lr_scale`` times the rate: each weight moves
    a logit by only weight / sqrt(tokens), and Adam's step is about the rate whatever the
    gradient, so at the LSTM's rate a linear model would need tens of thousands of steps."""
    wide = [p for p in (model.wide.parameters() if model.wide is not None else [])]
    ids = {id(p) for p in wide}
    deep = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    groups = [{"params": deep, "lr": cfg.lr}]
    if wide:
        decay = cfg.weight_decay if cfg.wide_weight_decay is None else cfg.wide_weight_decay
        groups.append({"params": wide, "lr": cfg.lr * cfg.wide_lr_scale, "weight_decay": decay})
    return groups


@dataclass(frozen=True)
class Fitted:
    """What ``fit`` returns: each epoch's record, the weights kept, the epoch they end at,
    and how many epochs' weights were averaged into them (1: the best epoch's alone)."""

    history: list[dict[str, float]]
    state: dict[str, torch.Tensor]
    best_epoch: int
    averaged: int = 1


@dataclass
class _Steps:
    """A run's optimizer state: AdamW over the trainable parameters, the one-cycle rate over
    ``cfg.epochs`` epochs of ``rows`` rows, and the gradient scaler."""

    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler

    @classmethod
    def of(cls, model: ReviewLSTM, cfg: TrainConfig, rows: int, runtime: Runtime) -> _Steps:
        groups = _param_groups(model, cfg)
        # The fused step never asks the host whether gradients were finite (the unfused one
        # calls .item() per step under a GradScaler).
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[g["lr"] for g in groups],
            total_steps=math.ceil(rows / cfg.batch_size) * cfg.epochs,
            pct_start=0.2,
        )
        params = [p for p in model.parameters() if p.requires_grad]
        return cls(params, optimizer, scheduler, runtime.grad_scaler())


def _train_epoch(
    model: ReviewLSTM,
    data: Dataset,
    batches: list[np.ndarray],
    cfg: TrainConfig,
    runtime: Runtime,
    objective: Objective,
    steps: _Steps,
    progress: Progress,
) -> float:
    """One pass over ``batches``; the mean training loss (the epoch's one host read)."""
    model.train()
    total = torch.zeros((), dtype=torch.float64, device=runtime.device)
    fixed_len = not model.config.packed
    for rows in batches:
        batch = make_batch(data, rows, fixed_len, runtime.device)
        if cfg.token_dropout:
            batch = drop_tokens(batch, cfg.token_dropout)
        loss = objective(_forward(model, batch, runtime), batch.target, batch.soft)
        steps.optimizer.zero_grad(set_to_none=True)
        steps.scaler.scale(loss).backward()
        steps.scaler.unscale_(steps.optimizer)
        nn.utils.clip_grad_norm_(steps.params, cfg.grad_clip)
        steps.scaler.step(steps.optimizer)
        steps.scaler.update()
        steps.scheduler.step()
        total += loss.detach().double() * len(rows)
        progress.update(1)
    return float(total) / len(data)


def _snapshot(model: ReviewLSTM) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _mean(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {
        k: torch.stack([state[k].float() for state in states]).mean(dim=0).to(v.dtype)
        for k, v in states[-1].items()
    }


def fit(
    model: ReviewLSTM,
    sets: dict[str, Dataset],
    labels: tuple[float, ...],
    cfg: TrainConfig,
    runtime: Runtime,
    objective: Objective,
) -> Fitted:
    """Epochs of bucketed batches with AdamW and a one-cycle rate; early stopping on the
    validation loss keeps the best weights. The host reads from the device once per epoch
    (the loss sum) plus once per validation pass."""
    train_set, val_set = sets["train"], sets["val"]
    steps = _Steps.of(model, cfg, len(train_set), runtime)
    rng = np.random.default_rng(cfg.seed)
    history: list[dict[str, float]] = []
    best_loss, best_epoch, best_state, stale = math.inf, 0, None, 0
    recent: list[dict[str, torch.Tensor]] = []  # the last average_epochs epochs' weights
    window: list[dict[str, torch.Tensor]] = []  # those ending at the best epoch
    for epoch in range(1, cfg.epochs + 1):
        began = time.perf_counter()
        batches = bucket_batches(train_set.host_lengths, cfg.batch_size, rng)
        with Progress(len(batches), "batches", f"epoch {epoch}") as progress:
            train_loss = _train_epoch(
                model, train_set, batches, cfg, runtime, objective, steps, progress
            )
            seconds = time.perf_counter() - began
            pred = predict(model, val_set, labels, runtime, objective)
            val = rating_metrics(val_set.label_index, pred.pred_index, pred.expected, labels)
            record = {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": pred.loss,
                "val_accuracy": val.accuracy,
                "val_rmse": val.rmse,
                "val_rmse_expected": val.rmse_expected,
                "seconds": seconds,
                "batches_per_s": len(batches) / seconds,
            }
            history.append(record)
            progress.write(
                f"epoch {epoch:2d}  loss {train_loss:.4f}  val loss {pred.loss:.4f}  "
                f"val acc {val.accuracy:.4f}  val RMSE {val.rmse:.4f}  "
                f"val RMSE(exp) {val.rmse_expected:.4f}  {seconds:.1f}s "
                f"({record['batches_per_s']:.1f} batches/s)"
            )
            state = _snapshot(model)
            recent = [*recent, state][-cfg.average_epochs :]
            if pred.loss < best_loss:
                best_loss, best_epoch, stale = pred.loss, epoch, 0
                best_state, window = state, list(recent)
            else:
                stale += 1
                if stale >= cfg.patience:
                    progress.write(
                        f"early stop: val loss has not improved for {cfg.patience} epochs"
                    )
                    break
    assert best_state is not None
    averaged = 1
    if len(window) > 1:
        kept = _averaged_if_better(
            model, window, best_state, best_loss, val_set, labels, runtime, objective
        )
        averaged = len(window) if kept is not best_state else 1
        best_state = kept
    return Fitted(history, best_state, best_epoch, averaged)


def fit_epochs(
    model: ReviewLSTM,
    data: Dataset,
    cfg: TrainConfig,
    runtime: Runtime,
    objective: Objective,
    epochs: int,
    averaged: int = 1,
) -> dict[str, torch.Tensor]:
    """``fit``'s schedule (``cfg.epochs`` epochs of one-cycle rate over ``data``) stopped
    after ``epochs`` with no validation rows to judge by: the mean weights of the last
    ``averaged`` epochs. The refit runs it with what early stopping chose on validation."""
    steps = _Steps.of(model, cfg, len(data), runtime)
    rng = np.random.default_rng(cfg.seed)
    recent: list[dict[str, torch.Tensor]] = []
    for epoch in range(1, epochs + 1):
        began = time.perf_counter()
        batches = bucket_batches(data.host_lengths, cfg.batch_size, rng)
        with Progress(len(batches), "batches", f"refit epoch {epoch}") as progress:
            loss = _train_epoch(model, data, batches, cfg, runtime, objective, steps, progress)
            seconds = time.perf_counter() - began
            progress.write(f"refit epoch {epoch:2d}  loss {loss:.4f}  {seconds:.1f}s")
        if epoch > epochs - averaged:
            recent.append(_snapshot(model))
    return _mean(recent) if len(recent) > 1 else recent[-1]


def _averaged_if_better(model, window, best_state, best_loss, val_set, labels, runtime, objective):
    """The mean of the weights of the epochs up to the best one (checkpoint averaging: a
    flatter optimum), kept only if its validation loss is lower than the best epoch's."""
    averaged = _mean(window)
    model.load_state_dict(averaged)
    loss = predict(model, val_set, labels, runtime, objective).loss
    print(
        f"averaged the last {len(window)} epochs' weights: val loss {loss:.4f} "
        f"({'kept' if loss < best_loss else 'not kept'}; best epoch {best_loss:.4f})",
        file=sys.stderr,
        flush=True,
    )
    return averaged if loss < best_loss else best_state

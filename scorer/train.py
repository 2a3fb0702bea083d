"""`scorer train`: fit a rating model, pick the epoch on validation, score test once, save."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from scorer.batching import bucket_batches
from scorer.config import ModelConfig, TokenizerConfig, TrainConfig
from scorer.cpus import available_cpus
from scorer.data import read_labels, read_split_file, read_table, read_texts, stratified_split
from scorer.device import Runtime, choose_runtime
from scorer.errors import UserError
from scorer.metrics import Metrics, nearest_label, rating_metrics
from scorer.model import ReviewLSTM, load_vectors
from scorer.model_dir import ModelDir, prepare_output
from scorer.presets import apply_batch_preset
from scorer.progress import Progress
from scorer.text import row_hashes
from scorer.train_data import (
    Batch,
    Dataset,
    make_batch,
    padding_stats,
    to_dataset,
    training_fingerprint,
)
from scorer.vocab import Vocab


@dataclass(frozen=True)
class Prediction:
    expected: np.ndarray
    pred_index: np.ndarray
    loss: float


@dataclass(frozen=True)
class TrainResult:
    model_dir: ModelDir
    val: Metrics
    test: Metrics | None
    best_epoch: int
    seconds: float

    def line(self) -> str:
        test = f"test {self.test.line()}" if self.test else "no test rows"
        return (
            f"trained in {self.seconds:.0f}s, best epoch {self.best_epoch}; {test} "
            f"-> {self.model_dir.path}"
        )


def seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Objective:
    """Cross-entropy (or MSE for regression), plus ``expected_weight`` times the squared
    error of the expected rating: ratings are ordered, and this term teaches the model that
    saying 4 for a 5 is better than saying 1."""

    config: ModelConfig
    values: torch.Tensor
    expected_weight: float = 0.0

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        output = output.float()
        if self.config.regression:
            return nn.functional.mse_loss(output, target[:, 1])
        loss = nn.functional.cross_entropy(output, target[:, 0].long())
        if self.expected_weight:
            expected = torch.softmax(output, dim=1) @ self.values
            loss = loss + self.expected_weight * nn.functional.mse_loss(expected, target[:, 1])
        return loss


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
    for start in range(0, n, batch_size):
        rows = order[start : start + batch_size]
        batch = make_batch(data, rows, not model.config.packed, device)
        output = _forward(model, batch, runtime).float()
        loss_sum += objective(output, batch.target).double() * len(rows)
        if model.config.regression:
            value = output.clamp(min(labels), max(labels))
        else:
            value = torch.softmax(output, dim=1) @ values
            pred_index[batch.index] = output.argmax(dim=1).double()
        expected[batch.index] = value.double()
    host = torch.cat([expected, pred_index, loss_sum]).cpu().numpy()
    expected_np = host[:n]
    if model.config.regression:
        pred_np = nearest_label(expected_np, labels)
    else:
        pred_np = host[n : 2 * n].astype(np.int64)
    return Prediction(expected_np, pred_np, float(host[-1]) / max(n, 1))


def _split_rows(split_file: Path | None, label_index: np.ndarray, seed: int) -> np.ndarray:
    if split_file is not None:
        return read_split_file(split_file, len(label_index))
    return stratified_split(label_index, seed=seed)


@dataclass(frozen=True)
class TrainJob:
    data: Path
    out: Path
    model: ModelConfig
    tokenizer: TokenizerConfig
    train: TrainConfig
    text_columns: tuple[str, ...]
    label_column: str = "Rating"
    split_file: Path | None = None
    vectors: Path | None = None
    overwrite: bool = False


def train_model(job: TrainJob) -> TrainResult:
    start = time.perf_counter()
    prepare_output(job.out, overwrite=job.overwrite)
    if job.model.variant == "vectors" and job.vectors is None:
        raise UserError("--variant vectors needs --vectors FILE (GloVe text format)")
    # The CPUs this process may use (affinity, cgroup quota), not the host's count: more
    # threads than CPUs make torch's OpenMP threads wait on each other.
    threads = job.train.threads or available_cpus()
    torch.set_num_threads(threads)
    runtime = choose_runtime(job.train.device, job.train.precision)
    # Batch size and rate left to presets depend on the device, known only now.
    cfg = apply_batch_preset(job.train, runtime.device.type)
    seed_everything(cfg.seed)

    frame = read_table(job.data)
    texts = read_texts(frame, job.text_columns, job.data)
    labels = read_labels(frame, job.label_column, job.data)
    split = _split_rows(job.split_file, labels.index, cfg.seed)
    rows = {name: np.flatnonzero(split == name) for name in ("train", "val", "test")}
    if len(rows["train"]) < cfg.batch_size:
        raise UserError(
            f"{len(rows['train'])} training rows is fewer than one batch ({cfg.batch_size}, "
            f"{cfg.batch_source}); lower --batch-size or add data"
        )
    if len(rows["val"]) == 0:
        raise UserError("no validation rows: the split needs 'val' rows for early stopping")
    print(
        f"training on {runtime.device}, {runtime.precision.line()}, {threads} CPU threads; "
        f"batch {cfg.batch_size}, lr {cfg.lr:g} ({cfg.batch_source})",
        file=sys.stderr,
        flush=True,
    )

    tok = job.tokenizer
    vocab = Vocab.build(
        texts.gather(rows["train"]), min_count=tok.min_count, keep_whitespace=tok.keep_whitespace
    )
    model_cfg = replace(job.model, vocab_size=len(vocab), num_labels=len(labels.values))
    sets = {
        name: to_dataset(vocab, texts.gather(r), labels.index[r], labels.values, tok, runtime)
        for name, r in rows.items()
        if len(r)
    }
    model = ReviewLSTM(model_cfg)
    if job.vectors is not None:
        matrix = load_vectors(job.vectors, vocab.tokens, model_cfg.embedding_dim, cfg.seed)
        model.embedding.weight.data.copy_(torch.from_numpy(matrix))
    if model_cfg.regression:
        # Start at the mean training rating rather than 0, so early steps learn signal.
        mean_rating = float(np.asarray(labels.values)[labels.index[rows["train"]]].mean())
        with torch.no_grad():
            model.head.bias.fill_(mean_rating)
    model.to(runtime.device)

    objective = Objective(
        model_cfg,
        torch.tensor(labels.values, dtype=torch.float32, device=runtime.device),
        cfg.expected_loss_weight,
    )
    history, best_state, best_epoch = _fit(model, sets, labels.values, cfg, runtime, objective)
    model.load_state_dict(best_state)
    val_pred = predict(model, sets["val"], labels.values, runtime, objective)
    val = rating_metrics(
        sets["val"].label_index, val_pred.pred_index, val_pred.expected, labels.values
    )
    test = None
    if "test" in sets:
        test_pred = predict(model, sets["test"], labels.values, runtime, objective)
        test = rating_metrics(
            sets["test"].label_index, test_pred.pred_index, test_pred.expected, labels.values
        )
    seconds = time.perf_counter() - start
    model_dir = ModelDir.write(
        job.out,
        model=model.cpu(),
        vocab=vocab,
        tokenizer=tok,
        train=cfg,
        labels=labels.values,
        text_columns=job.text_columns,
        metrics={
            "val": val.to_dict(),
            "test": test.to_dict() if test else None,
            "best_epoch": best_epoch,
            "history": history,
            "seconds": seconds,
            "device": str(runtime.device),
            # What really ran, per op (see scorer.device).
            "precision": runtime.precision.to_dict(),
            "batch": {"batch_size": cfg.batch_size, "lr": cfg.lr, "source": cfg.batch_source},
            "threads": threads,
            "padding_fraction": padding_stats(sets["train"].host_lengths, cfg.batch_size, cfg.seed),
            "rows": {name: len(r) for name, r in rows.items()},
        },
        overwrite=job.overwrite,
        training=training_fingerprint(job.data, job.split_file, rows),
        fingerprint=row_hashes(texts.gather(rows["train"])),
    )
    return TrainResult(model_dir, val, test, best_epoch, seconds)


def _param_groups(model: ReviewLSTM, cfg: TrainConfig) -> list[dict]:
    """The wide path's tables learn at ``wide_lr_scale`` times the rate: each weight moves
    a logit by only weight / sqrt(tokens), and Adam's step is about the rate whatever the
    gradient, so at the LSTM's rate a linear model would need tens of thousands of steps."""
    wide = [p for p in (model.wide.parameters() if model.wide is not None else [])]
    ids = {id(p) for p in wide}
    deep = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    groups = [{"params": deep, "lr": cfg.lr}]
    if wide:
        groups.append({"params": wide, "lr": cfg.lr * cfg.wide_lr_scale})
    return groups


def _fit(
    model: ReviewLSTM,
    sets: dict[str, Dataset],
    labels: tuple[float, ...],
    cfg: TrainConfig,
    runtime: Runtime,
    objective: Objective,
) -> tuple[list[dict[str, float]], dict[str, torch.Tensor], int]:
    """Epochs of bucketed batches with AdamW and a one-cycle rate; early stopping on the
    validation loss keeps the best weights. The host reads from the device once per epoch
    (the loss sum) plus once per validation pass."""
    train_set, val_set = sets["train"], sets["val"]
    params = [p for p in model.parameters() if p.requires_grad]
    groups = _param_groups(model, cfg)
    # The fused step never asks the host whether gradients were finite (the unfused one
    # calls .item() per step under a GradScaler).
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[g["lr"] for g in groups],
        total_steps=steps_per_epoch * cfg.epochs,
        pct_start=0.2,
    )
    scaler = runtime.grad_scaler()
    rng = np.random.default_rng(cfg.seed)
    fixed_len = not model.config.packed
    history: list[dict[str, float]] = []
    best_loss, best_epoch, best_state, stale = math.inf, 0, None, 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        began = time.perf_counter()
        total = torch.zeros((), dtype=torch.float64, device=runtime.device)
        batches = bucket_batches(train_set.host_lengths, cfg.batch_size, rng)
        with Progress(len(batches), "batches", f"epoch {epoch}") as progress:
            for rows in batches:
                batch = make_batch(train_set, rows, fixed_len, runtime.device)
                loss = objective(_forward(model, batch, runtime), batch.target)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                total += loss.detach().double() * len(rows)
                progress.update(1)
            train_loss = float(total) / len(train_set)  # the epoch's one read
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
            if pred.loss < best_loss:
                best_loss, best_epoch, stale = pred.loss, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
                if stale >= cfg.patience:
                    progress.write(
                        f"early stop: val loss has not improved for {cfg.patience} epochs"
                    )
                    break
    assert best_state is not None
    return history, best_state, best_epoch

"""Distillation's teacher: trained first by the recipe, or read from a model directory.

The default recipe trains a larger model first (``TrainConfig.teacher_hidden_dim``) on the
training rows, early-stopped on validation, and the smaller model that is kept learns from
its probabilities too (soft targets, ``scorer.train.fit.Objective``): it scores at the small
model's cost with most of the large one's quality (README, *Model quality*).

``scorer train --teacher MODEL_DIR`` takes the teacher from any exported model directory
whose labels are the data's: it scores the reviews through the production path (its own
tokenizer, vocabulary and checked CPU graph, torch-free), so it may have been trained with
another recipe, length or vocabulary.

Either way the teacher scores the training rows, which the model learns from, and the
validation rows, which only the refit learns from (``scorer.train.refit``): validation still
judges every choice by the true ratings alone.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl
import torch

from scorer.errors import UserError
from scorer.nn.device import Runtime
from scorer.nn.model import ReviewLSTM
from scorer.runtime.config import ModelConfig, TrainConfig
from scorer.runtime.metrics import rating_metrics
from scorer.text.encode import row_hashes
from scorer.train.data import Dataset
from scorer.train.fit import Objective, fit, logits

SPLITS = ("train", "val")


@dataclass(frozen=True)
class Taught:
    """The datasets with the teacher's probabilities attached, and what metrics.json
    records of the teacher."""

    sets: dict[str, Dataset]
    record: dict[str, object]


def train_teacher(
    new_model: Callable[[ModelConfig, TrainConfig], ReviewLSTM],
    cfg: TrainConfig,
    model_cfg: ModelConfig,
    sets: dict[str, Dataset],
    labels: tuple[float, ...],
    runtime: Runtime,
) -> Taught:
    """A model of ``cfg.teacher_hidden_dim`` trained on the training rows with ``cfg`` (no
    teacher of its own), early-stopped on validation; its probabilities on the training and
    validation rows attached to ``sets``."""
    began = time.perf_counter()
    plain = replace(cfg, teacher_hidden_dim=0, distill_weight=0.0)
    shape = replace(model_cfg, hidden_dim=cfg.teacher_hidden_dim)
    print(
        f"teacher: hidden {shape.hidden_dim}, embedding {shape.embedding_dim}, trained first on "
        f"the {len(sets['train']):,} training rows",
        file=sys.stderr,
        flush=True,
    )
    model = new_model(shape, plain)
    objective = Objective.of(shape, plain, labels, runtime.device)
    fitted = fit(model, sets, labels, plain, runtime, objective)
    model.load_state_dict(fitted.state)
    probs = {name: torch.softmax(logits(model, sets[name]), dim=1).numpy() for name in SPLITS}
    record = {
        "trained": True,
        "model": _sizes(shape),
        "best_epoch": fitted.best_epoch,
        "averaged": fitted.averaged,
        "history": fitted.history,
        **_agreement(probs, sets, labels),
        "seconds": time.perf_counter() - began,
    }
    return Taught(_attach(sets, probs, runtime), record)


def read_teacher(
    path: Path,
    texts: pl.Series,
    rows: dict[str, np.ndarray],
    sets: dict[str, Dataset],
    labels: tuple[float, ...],
    runtime: Runtime,
    threads: int | None = None,
) -> Taught:
    """The teacher in ``path`` (CPU, fp32) scoring the training and validation rows of
    ``texts``. Refused unless its labels are ``labels``. A teacher trained on the validation
    rows makes what is chosen there favour it (its knowledge of them reaches the model):
    warned about, and recorded."""
    from scorer.runtime.scoring import open_model

    began = time.perf_counter()
    check_labels(path, labels)
    model = open_model(Path(path), device="cpu", precision="fp32", threads=threads)
    try:
        card = model.card
        tok = card.tokenizer
        probs = {}
        for name in SPLITS:
            enc = model.vocab.encode(
                texts.gather(rows[name]),
                max_len=tok.max_len,
                keep_whitespace=tok.keep_whitespace,
                tail=tok.tail,
                marks=tok.marks,
                threads=threads,
            )
            probs[name] = model.scorer.score(enc.ids, enc.lengths)[0]
        graph = card.graphs.get(model.scorer.path.name, {})
    finally:
        model.scorer.close()
    seen_val = 0
    training = model.directory.training_rows()
    if training is not None:
        seen_val = int(np.isin(row_hashes(texts.gather(rows["val"])), training).sum())
    if seen_val > len(rows["val"]) // 2:
        print(
            f"scorer: warning: --teacher {path} was trained on {seen_val:,} of the "
            f"{len(rows['val']):,} validation rows: what is chosen on them favours it",
            file=sys.stderr,
            flush=True,
        )
    record = {
        "trained": False,
        "path": str(path),
        "graph_sha256": graph.get("sha256"),
        "model": _sizes(card.model),
        "val_rows_seen": seen_val,
        **_agreement(probs, sets, labels),
        "seconds": time.perf_counter() - began,
    }
    return Taught(_attach(sets, probs, runtime), record)


def check_labels(path: Path, labels: Sequence[float]) -> None:
    """Refuse a teacher directory whose labels are not ``labels`` (before any training)."""
    from scorer.runtime.model_dir import ModelDir

    card = ModelDir.open(Path(path)).card
    if tuple(float(v) for v in card.labels) != tuple(float(v) for v in labels):
        raise UserError(
            f"--teacher {path}: its labels {list(card.labels)} are not the data's {list(labels)}"
        )


def _sizes(model: ModelConfig) -> dict[str, int]:
    return {k: getattr(model, k) for k in ("embedding_dim", "hidden_dim", "layers")}


def _agreement(
    probs: dict[str, np.ndarray], sets: dict[str, Dataset], labels: Sequence[float]
) -> dict[str, object]:
    """The teacher's accuracy and expected-rating RMSE on each split (on the training rows
    they show how much of them it memorized); printed too."""
    found = {}
    for name in SPLITS:
        truth = sets[name].label_index
        p = np.asarray(probs[name], dtype=np.float64)
        metrics = rating_metrics(truth, p.argmax(axis=1), p @ np.asarray(labels), labels)
        found[name] = {"accuracy": metrics.accuracy, "rmse_expected": metrics.rmse_expected}
    print(
        f"teacher: accuracy {found['train']['accuracy']:.4f} on the training rows, "
        f"{found['val']['accuracy']:.4f} on validation (expected-rating RMSE "
        f"{found['val']['rmse_expected']:.4f})",
        file=sys.stderr,
        flush=True,
    )
    return {"scores": found}


def _attach(
    sets: dict[str, Dataset], probs: dict[str, np.ndarray], runtime: Runtime
) -> dict[str, Dataset]:
    out = dict(sets)
    for name in SPLITS:
        soft = torch.from_numpy(np.asarray(probs[name], dtype=np.float32))
        out[name] = replace(sets[name], soft=soft.to(runtime.device))
    return out

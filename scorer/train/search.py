"""The search on validation: the recipe's candidates trained one after another, each judged
by the same objective on the validation rows, the lowest loss kept.

How many candidates run is planned from the data's size before the first starts
(``presets.search_plan``), never from the clock: the same data, seed and CPU train the same
candidates on a fast machine and on a slow one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from scorer.nn.device import Runtime
from scorer.nn.model import ReviewLSTM
from scorer.runtime.config import ModelConfig, TrainConfig
from scorer.runtime.metrics import rating_metrics
from scorer.train.data import Dataset
from scorer.train.fit import Objective, fit, predict

# What metrics.json["search"] records of each candidate on the validation rows; ``val_loss``
# (under the user's objective) is the search's criterion.
TRIAL_KEYS = ("variant", "val_loss", "val_nll", "val_accuracy", "val_rmse_expected")

NewModel = Callable[[ModelConfig, TrainConfig], ReviewLSTM]


def run_search(
    candidates: list[TrainConfig],
    new_model: NewModel,
    model_cfg: ModelConfig,
    sets: dict[str, Dataset],
    labels: tuple[float, ...],
    runtime: Runtime,
    judge: Objective,
) -> list[dict]:
    """Each candidate trained on the training rows and early-stopped on validation; their
    trials, in order (``kept_trial`` picks one)."""
    trials = []
    for candidate in candidates:
        began = time.perf_counter()
        trial = train_candidate(candidate, new_model, model_cfg, sets, labels, runtime, judge)
        trial["seconds"] = time.perf_counter() - began
        trials.append(trial)
    if len(trials) > 1:
        chosen = kept_trial(trials)
        print(
            "search on validation: "
            + ", ".join(f"{t['variant'] or 'default'} loss {t['val_loss']:.4f}" for t in trials)
            + f"; kept {chosen['variant'] or 'default'}",
            file=sys.stderr,
            flush=True,
        )
    return trials


def kept_trial(trials: list[dict]) -> dict:
    """The candidate the search keeps: the lowest ``val_loss`` (under the user's objective),
    the earliest on a tie, so the default wins ties."""
    return min(trials, key=lambda t: t["val_loss"])


def train_candidate(
    cfg: TrainConfig,
    new_model: NewModel,
    model_cfg: ModelConfig,
    sets: dict[str, Dataset],
    labels: tuple[float, ...],
    runtime: Runtime,
    judge: Objective,
) -> dict:
    """One model trained with ``cfg``: its best weights, and how it does on the validation
    rows, ``val_loss`` under ``judge`` (the objective all candidates are compared by)."""
    model = new_model(model_cfg, cfg)
    objective = Objective.of(model_cfg, cfg, labels, runtime.device)
    fitted = fit(model, sets, labels, cfg, runtime, objective)
    model.load_state_dict(fitted.state)
    prediction = predict(model, sets["val"], labels, runtime, judge)
    val = rating_metrics(
        sets["val"].label_index, prediction.pred_index, prediction.expected, labels
    )
    return {
        "model": model,
        "cfg": cfg,
        "objective": objective,
        "fitted": fitted,
        "best_epoch": fitted.best_epoch,
        "variant": cfg.search_variant,
        "val": val,
        "val_loss": prediction.loss,
        "val_nll": prediction.nll,
        "val_accuracy": val.accuracy,
        "val_rmse_expected": val.rmse_expected,
    }

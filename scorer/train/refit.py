"""The refit: once the search, the epochs and the blend are chosen on the validation rows,
the kept candidate is trained again on the training and validation rows together.

Nothing is chosen by the refit: it runs the kept config's schedule to the epoch early
stopping chose (averaging the epochs the checkpoint averaging kept), and fits the blend's
linear model again at its chosen C; the blend's weights a and b stay those fitted on
validation. The validation rows then hold no more information about the final model, so
the validation metrics reported are those of the model before the refit.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from scorer.nn.device import Runtime
from scorer.nn.model import ReviewLSTM
from scorer.runtime.config import TrainConfig
from scorer.train.blend import Blend, fold, refit_linear
from scorer.train.data import Dataset, join
from scorer.train.fit import Fitted, Objective, fit_epochs


def refit(
    new_model: Callable[[], ReviewLSTM],
    sets: dict[str, Dataset],
    cfg: TrainConfig,
    fitted: Fitted,
    runtime: Runtime,
    objective: Objective,
    blend: Blend | None,
    classes: int,
) -> tuple[ReviewLSTM, dict[str, object]]:
    """A fresh model from ``new_model`` (seeded as the kept candidate was), trained on
    ``sets["train"]`` and ``sets["val"]`` for ``fitted.best_epoch`` epochs of ``cfg``'s
    schedule, with ``blend`` refitted and folded in. Returns it and what metrics.json
    records of the refit."""
    began = time.perf_counter()
    data = join(sets["train"], sets["val"])
    print(
        f"refit on {len(data):,} training + validation rows: {fitted.best_epoch} epochs"
        + (f", the last {fitted.averaged} averaged" if fitted.averaged > 1 else ""),
        file=sys.stderr,
        flush=True,
    )
    model = new_model()
    state = fit_epochs(model, data, cfg, runtime, objective, fitted.best_epoch, fitted.averaged)
    model.load_state_dict(state)
    record: dict[str, object] = {
        "rows": len(data),
        "epochs": fitted.best_epoch,
        "averaged": fitted.averaged,
    }
    if blend is not None:
        fold(model, refit_linear(blend, data, classes))
        if blend.linear:
            record["linear_c"] = blend.c
    record["seconds"] = time.perf_counter() - began
    return model, record

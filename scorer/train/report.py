"""The training report people look at: learning curves and the test confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def write_report(path: Path, metrics: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = metrics["history"]
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    ax.plot(epochs, [h["val_loss"] for h in history], "o-", label="val loss")
    ax.axvline(metrics["best_epoch"], color="grey", linestyle=":", label="kept epoch")
    ax.set_xlabel("epoch")
    ax.set_title("loss")
    ax.legend()
    ax = axes[1]
    ax.plot(epochs, [h["val_accuracy"] for h in history], "o-", label="val accuracy")
    ax.plot(epochs, [h["val_rmse"] for h in history], "o-", label="val RMSE")
    ax.plot(epochs, [h["val_rmse_expected"] for h in history], "o-", label="val RMSE (expected)")
    ax.set_xlabel("epoch")
    ax.set_title("validation")
    ax.legend()
    ax = axes[2]
    final = metrics.get("test") or metrics["val"]
    name = "test" if metrics.get("test") else "val"
    confusion = np.asarray(final["confusion"])
    labels = [f"{v:g}" for v in final["labels"]]
    ax.imshow(confusion, cmap="Blues")
    for (i, j), count in np.ndenumerate(confusion):
        dark = count > confusion.max() / 2
        ax.text(j, i, str(count), ha="center", va="center", color="white" if dark else "black")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(
        f"{name} confusion (acc {final['accuracy']:.3f}, RMSE {final['rmse']:.3f}, "
        f"RMSE exp {final['rmse_expected']:.3f})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

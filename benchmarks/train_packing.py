"""CPU training of the default (forward-only, packed) model: ``pack_padded_sequence`` against
the padded LSTM read at each review's length (``ReviewLSTM._recur_forward_only``).

    python -m benchmarks.train_packing [--epochs 1] [--repeats 2] [--threads 2]

Each case is its own ``scorer train`` process (``benchmarks.train_child``); "packed" runs it
through this module with the model's LSTM forced through ``pack_padded_sequence``, as every
packed model trained before. The two sides alternate. Both compute the same function, so
their validation losses must agree to float rounding (the sums run in another order), not
bit for bit.
"""

from __future__ import annotations

import os
import sys

from benchmarks import train_child
from benchmarks.common import REPO, save

SIDES = ("packed", "forward-only")


def _child(argv: list[str]) -> None:
    """``scorer train`` with every model's LSTM run through ``pack_padded_sequence``."""
    import scorer.train.job
    from scorer.cli import app

    class Packed(scorer.train.job.ReviewLSTM):
        def forward(self, *args, **kwargs):
            return super().forward(*args, **kwargs, pack=True)

    scorer.train.job.ReviewLSTM = Packed
    app(argv, prog_name="scorer")


def train_once(side: str, epochs: int, threads: int) -> dict[str, float]:
    # Set here for both sides: the packed child imports torch before scorer train would.
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    runner = ("-m", "benchmarks.train_packing", "--child") if side == "packed" else ("-m", "scorer")
    out = REPO / "runs" / "bench" / "train-packing"
    return train_child.train_once(side, out, epochs=epochs, threads=threads, env=env, runner=runner)


def main(argv: list[str] | None = None) -> dict:
    result, summary = train_child.alternate(SIDES, train_once, argv, __doc__.splitlines()[0])
    before, after = summary["packed"], summary["forward-only"]
    result = {
        **result,
        "epoch_speedup": before["epoch_seconds"] / after["epoch_seconds"],
        "val_loss_difference": after["val_loss"] - before["val_loss"],
    }
    print(
        f"median epoch time {before['epoch_seconds']:.1f} s -> {after['epoch_seconds']:.1f} s "
        f"({result['epoch_speedup']:.2f}x); validation loss {before['val_loss']:.6f} -> "
        f"{after['val_loss']:.6f}"
    )
    print(f"saved {save('train-packing', result)}")
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2:])
    else:
        main()

"""CPU training with glibc's default malloc against ``scorer.runtime.malloc.keep_freed_memory``.

    python -m benchmarks.train_malloc [--epochs 1] [--repeats 2] [--threads 2]

Each case is its own ``scorer train`` process (``benchmarks.train_child``). The two sides
alternate. "glibc default" runs with ``GLIBC_TUNABLES`` set empty, which leaves
glibc's own settings in force and makes ``keep_freed_memory`` stand aside, as it does for
any user who tunes malloc through the environment. Kernel (system) CPU seconds and minor
page faults are the child's own (``os.wait4``); both sides must end on the same validation
loss: the setting changes where memory comes from, never the arithmetic.
"""

from __future__ import annotations

import os

from benchmarks import train_child
from benchmarks.common import REPO, save

SIDES = {"glibc default": {"GLIBC_TUNABLES": ""}, "heap kept": {}}


def train_once(side: str, epochs: int, threads: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUN"))}
    env.update(SIDES[side])
    out = REPO / "runs" / "bench" / "train-malloc"
    return train_child.train_once(side, out, epochs=epochs, threads=threads, env=env)


def main(argv: list[str] | None = None) -> dict:
    result, summary = train_child.alternate(list(SIDES), train_once, argv, __doc__.splitlines()[0])
    losses = {r["val_loss"] for rs in result["runs"].values() for r in rs}
    before, after = summary["glibc default"], summary["heap kept"]
    result = {
        **result,
        "epoch_speedup": before["epoch_seconds"] / after["epoch_seconds"],
        "same_val_loss": len(losses) == 1,
    }
    print(
        f"median epoch time {before['epoch_seconds']:.1f} s -> {after['epoch_seconds']:.1f} s "
        f"({result['epoch_speedup']:.2f}x); system CPU {before['system_cpu_s']:.1f} s -> "
        f"{after['system_cpu_s']:.1f} s; same validation loss: {result['same_val_loss']}"
    )
    print(f"saved {save('train-malloc', result)}")
    return result


if __name__ == "__main__":
    main()

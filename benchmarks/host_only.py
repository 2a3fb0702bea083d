"""The host side of `scorer run` alone: read + tokenize + write, with the model a no-op.

    python -m benchmarks.host_only CORPUS MODEL_DIR OUT --workers N

The scorer returns uniform probabilities at once, so what is timed is what a GPU host's CPUs
must do to keep its GPU fed: reading Parquet, the tokenizer kernel, assembling the output
and writing it. Prints the run's summary as one JSON line (benchmarks.e2e runs it).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class NoopScorer:
    """Stands in for OnnxScorer: right shapes, no work."""

    card: dict
    path: Path
    sha256: str = "0" * 64
    precision: str = "none"
    device: str = "none"
    provider: str = "no-op (host only)"
    batch_size: int = 2048
    notes: tuple[str, ...] = ()

    def score(self, ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        labels = len(self.card["labels"])
        probs = np.full((len(lengths), labels), 1.0 / labels, dtype=np.float32)
        return probs, np.full(len(lengths), 3.0, dtype=np.float32)


def main(argv: list[str] | None = None) -> None:
    import dataclasses

    from scorer.engines.local.run import RunJob, run_scoring
    from scorer.runtime.model_dir import ModelDir
    from scorer.runtime.scoring import LoadedModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    directory = ModelDir.open(args.model_dir)
    card = json.loads(directory.card.embedded_json())
    model = LoadedModel(directory, directory.vocab(), NoopScorer(card, directory.path / "none"))
    job = RunJob(args.corpus, args.model_dir, args.out, workers=args.workers, quiet=True)
    job = dataclasses.replace(job, overwrite=True)
    summary = run_scoring(job, model=model)
    print(
        json.dumps(
            {
                "rows": summary.rows,
                "seconds": summary.seconds,
                "stage_seconds": summary.stage_seconds,
                "workers": args.workers,
            }
        )
    )


if __name__ == "__main__":
    main()

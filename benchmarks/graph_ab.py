"""Model alone on real reviews: the CPU graphs of several model directories, interleaved.

    python -m benchmarks.graph_ab NAME=MODEL_DIR [NAME=MODEL_DIR ...] [--batches 256 1024]
        [--repeats 3] [--rounds 2] [--save-as graph-ab]

Unlike ``benchmarks.model`` (random ids at full length), the inputs are the reference
reviews encoded by each model's own vocabulary and tokenizer, sorted by length and cut into
batches as ``scorer run`` cuts them, so the padding a batch carries plays its real part. One
inference thread; run it pinned to one core (``taskset -c 1``) for a per-core figure. Each
contender's figure is the median over rounds x repeats of the whole pass, in microseconds
per review. To compare two exporters, export one trained model twice, once per checkout.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import DEFAULT_REVIEWS, machine, save

TEXT_COLUMNS = ("Title", "Review Text")


def batches(model_dir: Path, width_step: int = 8) -> tuple[object, list[dict[str, np.ndarray]]]:
    """An fp32 CPU session of ``model_dir`` and its feeds over the reference reviews."""
    import onnxruntime as ort

    from scorer.io.labelled import read_table, read_texts
    from scorer.runtime.model_dir import ModelDir

    model = ModelDir.open(model_dir)
    tok = model.card.tokenizer
    texts = read_texts(read_table(DEFAULT_REVIEWS), TEXT_COLUMNS, DEFAULT_REVIEWS)
    encoded = model.vocab().encode(
        texts, max_len=tok.max_len, keep_whitespace=tok.keep_whitespace, tail=tok.tail,
        marks=tok.marks,
    )  # fmt: skip
    order = np.argsort(encoded.lengths, kind="stable")
    ids, lengths = encoded.ids[order], encoded.lengths[order].astype(np.int64)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    return session, [ids, lengths, width_step]


def one_pass(session: object, feeds: list, batch: int) -> float:
    ids, lengths, step = feeds
    start = time.perf_counter()
    for a in range(0, len(ids), batch):
        b = min(a + batch, len(ids))
        width = int(-(-lengths[a:b].max() // step) * step)
        session.run(None, {"input_ids": ids[a:b, :width], "lengths": lengths[a:b]})
    return (time.perf_counter() - start) / len(ids) * 1e6


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", metavar="NAME=MODEL_DIR")
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--save-as", default="graph-ab")
    args = parser.parse_args(argv)
    contenders = {
        name: batches(Path(path)) for name, path in (m.split("=", 1) for m in args.models)
    }
    times: dict[str, dict[int, list[float]]] = {
        name: {b: [] for b in args.batches} for name in contenders
    }
    for session, feeds in contenders.values():  # warm-up
        for b in args.batches:
            one_pass(session, feeds, b)
    for _ in range(args.rounds):
        for name, (session, feeds) in contenders.items():
            for b in args.batches:
                times[name][b] += [one_pass(session, feeds, b) for _ in range(args.repeats)]
    result = {
        "machine": machine(),
        "models": dict(m.split("=", 1) for m in args.models),
        "us_per_review": {
            name: {str(b): float(np.median(v)) for b, v in per.items()}
            for name, per in times.items()
        },
        "runs": {name: {str(b): v for b, v in per.items()} for name, per in times.items()},
    }
    for name, per in result["us_per_review"].items():
        print(name, "  ".join(f"batch {b}: {us:.1f} us/review" for b, us in per.items()))
    print(f"saved {save(args.save_as, result)}")
    return result


if __name__ == "__main__":
    main()

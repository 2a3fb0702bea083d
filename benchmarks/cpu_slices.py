"""The CPU path's slicing, measured where 16 cores are not: the model alone on one chunk of
real reviews, as `scorer run` scores it, under three plans, on 1 and 2 threads.

    python -m benchmarks.cpu_slices [--rows 50000] [--repeats 3] [--model DIR ...]

* ``per batch, 16 workers``: what 16 workers got before: each 2,048-row batch cut into 16
  slices (128 rows), and a wait for the slowest slice after every batch;
* ``chunk plan, 16 workers``: ``scorer.runtime.session.plan_slices`` for 16 workers: the same
  rows cut for 16 workers (two slices each, never below 256 rows), one wait per chunk;
* ``chunk plan, T workers``: the plan for the threads that run here (what `scorer run` does).

Each plan runs on T threads (1, 2), interleaved, median of ``--repeats``; reviews/s are for
all T threads together, and per thread.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from benchmarks.common import median, save
from benchmarks.e2e import corpus
from scorer.runtime.model_dir import bundled_model_dir
from scorer.runtime.scoring import encode_table, open_model
from scorer.runtime.session import _bind_host, cpu_slices, plan_slices, slice_rows_for

OLD_WORKERS = 16
BATCH = 2048


def _batches(model, ids: np.ndarray, lengths: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The chunk's batches as OnnxScorer.score forms them (sorted by length, width to 8)."""
    order = np.argsort(lengths, kind="stable")
    batches = []
    for start in range(0, len(order), BATCH):
        picked = order[start : start + BATCH]
        width = min(-(-max(int(lengths[picked].max()), 1) // 8) * 8, ids.shape[1])
        batches.append((ids[picked, :width], lengths[picked].astype(np.int64)))
    return batches


def per_batch(session, batches, pool, slice_rows: int) -> None:
    for ids, lengths in batches:
        count = max(OLD_WORKERS, -(-len(ids) // slice_rows))
        pieces = cpu_slices(len(ids), count)
        list(pool.map(lambda s, i=ids, n=lengths: _bind_host(session, i[s], n[s]), pieces))


def chunk_plan(session, batches, pool, slice_rows: int, workers: int) -> None:
    plan = plan_slices([len(b[0]) for b in batches], [b[0].shape[1] for b in batches], workers,
                       slice_rows)  # fmt: skip
    list(pool.map(lambda p: _bind_host(session, batches[p[0]][0][p[1]], batches[p[0]][1][p[1]]),
                  plan))  # fmt: skip


def measure_model(path: Path, rows: int, repeats: int) -> dict[str, object]:
    model = open_model(path, "cpu", "fp32", 1, None)
    table = pq.read_table(corpus(rows), columns=list(model.card.text_columns))
    ids, lengths, _ = encode_table(table, model.card.text_columns, model)
    batches = _batches(model, ids, lengths)
    session = model.scorer.runner.session
    hidden = int(model.card.model.hidden_dim)
    slice_rows = slice_rows_for(hidden)
    results: dict[str, dict[str, list[float]]] = {}
    for _ in range(repeats):
        for threads in (1, 2):
            with ThreadPoolExecutor(threads) as pool:
                plans = {
                    "per batch, 16 workers": lambda p=pool: per_batch(session, batches, p,
                                                                      slice_rows),
                    "chunk plan, 16 workers": lambda p=pool: chunk_plan(
                        session, batches, p, slice_rows, OLD_WORKERS),
                    "chunk plan, T workers": lambda p=pool, t=threads: chunk_plan(
                        session, batches, p, slice_rows, t),
                }  # fmt: skip
                for name, run in plans.items():
                    began = time.perf_counter()
                    run()
                    seconds = time.perf_counter() - began
                    results.setdefault(f"{name} | {threads} threads", {"s": []})["s"].append(
                        seconds
                    )
                    print(f"{path.name} {name}, {threads} threads: {rows / seconds:,.0f}/s")
    table_out = {}
    for key, value in results.items():
        seconds = median(value["s"])
        threads = int(key.split("|")[1].split()[0])
        table_out[key] = {
            "seconds": value["s"],
            "reviews_per_s": rows / seconds,
            "reviews_per_s_per_thread": rows / seconds / threads,
        }
    return {"model": str(path), "hidden_dim": hidden, "slice_rows": slice_rows, "plans": table_out}


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", type=Path, action="append")
    args = parser.parse_args(argv)
    models = args.model or [bundled_model_dir()]
    result = {
        "rows": args.rows,
        "batch": BATCH,
        "models": [measure_model(m, args.rows, args.repeats) for m in models],
    }
    from benchmarks.common import machine

    result["machine"] = machine()
    print(f"saved {save('cpu-slices', result)}")
    return result


if __name__ == "__main__":
    main()

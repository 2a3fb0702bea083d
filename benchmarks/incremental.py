"""A nightly job's incremental run against a full run of the same night, in one run.

    python -m benchmarks.incremental --rows 1000000 10000000 [--repeats 2]

For each size N: last night is a corpus of N real reviews (``benchmarks.corpus``, ids
0..N-1); tonight has the same rows in the same order with ``--edited`` of them edited (a
sentence appended), ``--deleted`` removed, and ``--new`` x N new reviews appended with new
ids. Last night is scored once with ``--id-col``; then, alternating, each its own process:
tonight scored in full (``--id-col``) and tonight scored ``--since`` last night's output.
Both outputs are compared byte for byte. Peak RSS is each process's (sampled every 20 ms).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from benchmarks.common import machine, median, save
from benchmarks.e2e import WORK, corpus, measure

ROW_GROUP = 65_536


def tonight(last: Path, out: Path, *, new: float, edited: float, deleted: float, seed: int) -> dict:
    """Write tonight's table from last night's, slice by slice; what changed."""
    rng = np.random.default_rng(seed)
    source = pq.ParquetFile(last)
    total = source.metadata.num_rows
    counts = {"edited": 0, "deleted": 0, "new": round(new * total)}
    tmp = out.with_name(out.name + ".tmp")
    writer = None
    try:
        for batch in source.iter_batches(batch_size=ROW_GROUP):
            frame = pl.from_arrow(batch)
            n = len(frame)
            # An edit appends to the body; a null body stays null, so those are no edits.
            edit = pl.Series(rng.random(n) < edited) & frame["Review Text"].is_not_null()
            drop = pl.Series(rng.random(n) < deleted)
            frame = frame.with_columns(
                pl.when(edit)
                .then(pl.col("Review Text") + " Edited: it faded after one wash.")
                .otherwise(pl.col("Review Text"))
                .alias("Review Text")
            ).filter(~drop)
            counts["edited"] += int((edit & ~drop).sum())
            counts["deleted"] += int(drop.sum())
            table = frame.to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
            writer.write_table(table, row_group_size=ROW_GROUP)
        # New reviews: earlier texts again (real reviews), with ids never seen.
        picked = np.sort(rng.choice(total, counts["new"], replace=False))
        fresh = (
            pl.scan_parquet(last)
            .with_row_index("position")
            .filter(pl.col("position").is_in(pl.Series(picked, dtype=pl.UInt32).implode()))
            .drop("position")
            .collect()
            .with_columns(review_id=pl.int_range(total, total + len(picked), dtype=pl.Int64))
        )
        assert writer is not None
        writer.write_table(fresh.to_arrow().cast(writer.schema), row_group_size=ROW_GROUP)
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(out)
    return counts


def run(args: list[str]) -> dict:
    command = [sys.executable, "-m", "scorer", "run", *args, "--quiet", "--overwrite"]
    seconds, rss, _ = measure(command)
    out = Path(args[args.index("--out") + 1])
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    return {
        "seconds": seconds,
        "peak_rss_mb": rss,
        "run_seconds": manifest["seconds"],
        "stage_seconds": manifest["stage_seconds"],
        "incremental": manifest["incremental"],
    }


def measure_size(rows: int, repeats: int, rates: dict[str, float], model: list[str]) -> dict:
    work = WORK / "incremental" / str(rows)
    work.mkdir(parents=True, exist_ok=True)
    last = corpus(rows)
    now = work / "tonight.parquet"
    changes_file = work / "changes.json"
    if not now.is_file() or not changes_file.is_file():
        changes = tonight(last, now, seed=0, **rates)
        changes_file.write_text(json.dumps(changes))
    changes = json.loads(changes_file.read_text())
    previous = work / "last.scores.parquet"
    earlier = previous.with_name(previous.name + ".manifest.json")
    if previous.is_file() and earlier.is_file() and not model:
        # Last night's output is an input here, not a figure: kept from an earlier run.
        first = {"seconds": json.loads(earlier.read_text())["seconds"]}
    else:
        first = run([str(last), "--id-col", "review_id", "--out", str(previous), *model])
    print(f"{rows:,}: last night scored in {first['seconds']:.1f}s", flush=True)
    full_out, inc_out = work / "full.scores.parquet", work / "incremental.scores.parquet"
    sides: dict[str, list[dict]] = {"full": [], "incremental": []}
    for _ in range(repeats):
        sides["full"].append(
            run([str(now), "--id-col", "review_id", "--out", str(full_out), *model])
        )
        sides["incremental"].append(
            run(
                [
                    str(now),
                    "--id-col",
                    "review_id",
                    "--since",
                    str(previous),
                    "--out",
                    str(inc_out),
                    *model,
                ]
            )
        )
        for name in sides:
            last_run = sides[name][-1]
            print(
                f"{rows:,} {name}: {last_run['seconds']:.1f}s, {last_run['peak_rss_mb']:.0f} MB",
                flush=True,
            )
    identical = filecmp.cmp(full_out, inc_out, shallow=False)
    full_s = median([r["seconds"] for r in sides["full"]])
    inc_s = median([r["seconds"] for r in sides["incremental"]])
    result = {
        "rows_last_night": rows,
        "rows_tonight": pq.ParquetFile(now).metadata.num_rows,
        "changes": changes,
        "last_night_seconds": first["seconds"],
        "full": {
            "seconds": [r["seconds"] for r in sides["full"]],
            "median_s": full_s,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in sides["full"]),
            "stage_seconds": sides["full"][-1]["stage_seconds"],
        },
        "incremental": {
            "seconds": [r["seconds"] for r in sides["incremental"]],
            "median_s": inc_s,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in sides["incremental"]),
            "stage_seconds": sides["incremental"][-1]["stage_seconds"],
            "counts": sides["incremental"][-1]["incremental"],
        },
        "incremental_over_full": inc_s / full_s,
        "outputs_identical": identical,
    }
    print(
        f"{rows:,}: incremental {inc_s:.1f}s = {inc_s / full_s:.1%} of full {full_s:.1f}s; "
        f"peak RSS {result['incremental']['peak_rss_mb']:.0f} vs "
        f"{result['full']['peak_rss_mb']:.0f} MB; identical bytes: {identical}",
        flush=True,
    )
    return result


def profile_cost(rows: int, repeats: int) -> dict:
    """What the drift profile adds to scoring a chunk: counting unknown tokens and the
    profile's counts, against tokenizing and scoring the same rows (one thread each)."""
    import time

    from scorer.runtime.model_dir import bundled_model_dir
    from scorer.runtime.profile import Profile
    from scorer.runtime.scoring import encode_table, open_model
    from scorer.text.vocab import UNK_ID

    model = open_model(bundled_model_dir(), "cpu", "fp32", 1)
    table = pq.read_table(corpus(rows), columns=list(model.card.text_columns))
    card = model.card
    scoring, profiling = [], []
    for _ in range(repeats):
        began = time.perf_counter()
        ids, lengths, _ = encode_table(table, card.text_columns, model)
        probs, expected = model.scorer.score(ids, lengths)
        scoring.append(time.perf_counter() - began)
        began = time.perf_counter()
        unknown = int(np.count_nonzero(ids == UNK_ID))
        Profile.of(card.labels, card.tokenizer.max_len, lengths, unknown, probs.argmax(1), expected)
        profiling.append(time.perf_counter() - began)
    result = {
        "rows": rows,
        "scoring_s": median(scoring),
        "profile_s": median(profiling),
        "share": median(profiling) / median(scoring),
    }
    print(f"profile: {result['profile_s'] * 1e3:.1f} ms against {result['scoring_s']:.2f}s of "
          f"scoring {rows:,} rows ({result['share']:.2%})", flush=True)  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--new", type=float, default=0.01)
    parser.add_argument("--edited", type=float, default=0.005)
    parser.add_argument("--deleted", type=float, default=0.001)
    parser.add_argument("--model", type=Path, default=None, help="default: the bundled model")
    parser.add_argument("--name", default="incremental")
    args = parser.parse_args(argv)
    rates = {"new": args.new, "edited": args.edited, "deleted": args.deleted}
    model = ["--model", str(args.model)] if args.model else []
    sizes = [measure_size(rows, args.repeats, rates, model) for rows in args.rows]
    result = {
        "machine": machine(),
        "command": "python -m benchmarks.incremental " + " ".join(argv or sys.argv[1:]),
        "rates": rates,
        "sizes": sizes,
        "profile_cost": profile_cost(50_000, 5),
    }
    print(f"saved {save(args.name, result)}")
    return result


if __name__ == "__main__":
    main()

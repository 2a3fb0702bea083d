"""Corpus builder: N real reviews sampled with replacement (seeded), as Parquet.

    python -m benchmarks.corpus --rows 1000000 --out runs/corpus-1m.parquet

Written in slices with small row groups, so building 8M rows needs little memory.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from benchmarks.common import DEFAULT_REVIEWS
from scorer.io.labelled import read_table

ROW_GROUP = 65_536


def build_corpus(
    reviews: Path, rows: int, out: Path, *, seed: int = 0, row_group: int = ROW_GROUP
) -> Path:
    source = read_table(reviews).select(
        pl.col("Title").cast(pl.String),
        pl.col("Review Text").cast(pl.String),
        pl.col("Rating").cast(pl.Int64),
    )
    rng = np.random.default_rng(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    writer = None
    try:
        for start in range(0, rows, row_group):
            size = min(row_group, rows - start)
            picked = source[rng.integers(0, len(source), size=size)]
            table = (
                picked.with_columns(review_id=pl.int_range(start, start + size, dtype=pl.Int64))
                .select("review_id", "Title", "Review Text", "Rating")
                .to_arrow()
            )
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
            writer.write_table(table, row_group_size=row_group)
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reviews", type=Path, default=DEFAULT_REVIEWS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = build_corpus(args.reviews, args.rows, args.out, seed=args.seed)
    print(f"wrote {args.rows:,} rows to {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()

"""Normalize the other review datasets of benchmarks/DATASETS.md to Parquet (text, rating).

    python -m benchmarks.datasets RAW_DIR OUT_DIR

RAW_DIR holds the raw files as DATASETS.md says where to get them (none may be committed
here: their licences do not allow it). Each becomes OUT_DIR/<name>.parquet with ``text``
(the review) and ``rating`` (1-5): whitespace stripped, rows without text or with another
rating dropped, exact duplicate texts dropped (the first kept).
"""

from __future__ import annotations

import argparse
import html
from collections.abc import Callable
from pathlib import Path

import polars as pl


def _alexa(raw: Path) -> pl.DataFrame:
    # TSV with CSV-style quoting; the text holds HTML entities (&#34;).
    frame = pl.read_csv(raw / "amazon_alexa.tsv", separator="\t", infer_schema_length=0)
    text = pl.col("verified_reviews").map_elements(html.unescape, return_dtype=pl.String)
    return frame.select(text=text, rating=pl.col("rating"))


def _yelp(raw: Path) -> pl.DataFrame:
    frame = pl.read_csv(raw / "yelp.csv", infer_schema_length=0)
    return frame.select(text=pl.col("text"), rating=pl.col("stars"))


def _flipkart(raw: Path) -> pl.DataFrame:
    # Every scraped review ends with the page's "READ MORE" link text.
    frame = pl.read_csv(raw / "flipkart_data.csv", infer_schema_length=0)
    text = pl.col("review").str.replace(r"\s*READ MORE\s*$", "")
    return frame.select(text=text, rating=pl.col("rating"))


def _sandisk(raw: Path) -> pl.DataFrame:
    frame = pl.read_csv(raw / "amazon_reviews_sandisk.csv", infer_schema_length=0)
    return frame.select(text=pl.col("Review_Text"), rating=pl.col("overall_rating"))


DATASETS: dict[str, Callable[[Path], pl.DataFrame]] = {
    "yelp_10k": _yelp,
    "flipkart_reviews": _flipkart,
    "amazon_sandisk": _sandisk,
    "amazon_alexa": _alexa,
}


def normalize(frame: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    raw = frame.height
    frame = frame.with_columns(
        text=pl.col("text").str.strip_chars(),
        rating=pl.col("rating").str.strip_chars().cast(pl.Float64, strict=False),
    )
    frame = frame.filter(pl.col("text").is_not_null() & (pl.col("text").str.len_chars() > 0))
    with_text = frame.height
    frame = frame.filter(pl.col("rating").is_in([1.0, 2.0, 3.0, 4.0, 5.0]))
    rated = frame.height
    frame = frame.unique(subset="text", keep="first", maintain_order=True)
    frame = frame.select("text", pl.col("rating").cast(pl.Int8))
    counts = {
        "raw": raw,
        "no_text": raw - with_text,
        "bad_rating": with_text - rated,
        "duplicates": rated - frame.height,
        "kept": frame.height,
    }
    return frame, counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, load in DATASETS.items():
        frame, counts = normalize(load(args.raw))
        frame.write_parquet(args.out / f"{name}.parquet")
        print(f"{name}: {counts}")


if __name__ == "__main__":
    main()

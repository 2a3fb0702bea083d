"""Reading labelled review data: text columns, an ordered label set, train/val/test splits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from scorer.errors import UserError
from scorer.io.source import open_source, require_columns

DEFAULT_TEXT_COLUMNS = ("Title", "Review Text")
DEFAULT_LABEL_COLUMN = "Rating"
SPLITS = ("train", "val", "test")


def read_table(
    path: Path | str, columns: Sequence[str] | None = None, text: Sequence[str] = ()
) -> pl.DataFrame:
    """A whole input (any that ``scorer.io.source`` reads); ``columns`` must all exist, and
    ``text`` columns are read as text, as scoring reads them."""
    return open_source(path).frame(columns, text)


def text_expr(columns: Sequence[str], schema: pl.Schema) -> pl.Expr:
    """The review text: the columns joined by one space, nulls as "" (lossless casts only)."""
    if not columns:
        raise UserError("at least one text column is needed")
    parts = []
    for name in columns:
        dtype = schema[name]
        if dtype == pl.String:
            parts.append(pl.col(name).fill_null(""))
        elif _castable_to_text(dtype):
            parts.append(pl.col(name).cast(pl.String).fill_null(""))
        else:
            raise UserError(f"text column {name!r} has type {dtype}, which is not text")
    return pl.concat_str(parts, separator=" ").alias("text")


def _castable_to_text(dtype: pl.DataType) -> bool:
    """Types whose string form loses nothing (numbers, booleans, dates, categories)."""
    simple = dtype.is_numeric() or dtype.is_temporal() or dtype in (pl.Boolean, pl.Null)
    return simple or isinstance(dtype, pl.Categorical | pl.Enum)


def read_texts(frame: pl.DataFrame, columns: Sequence[str], source: Path | str) -> pl.Series:
    require_columns(frame.columns, columns, source)
    return frame.select(text_expr(columns, frame.schema)).to_series()


@dataclass(frozen=True)
class Labels:
    """Per-row class index into ``values`` (the ordered label set, e.g. ratings 1..5)."""

    index: np.ndarray
    values: tuple[float, ...]


def read_labels(frame: pl.DataFrame, column: str, source: Path | str) -> Labels:
    """Numeric integral labels; bad rows are named (0-based positions), never silently dropped."""
    require_columns(frame.columns, [column], source)
    raw = frame[column]
    numeric = raw.cast(pl.Float64, strict=False) if raw.dtype != pl.Float64 else raw
    values = numeric.to_numpy()
    bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
    if len(bad):
        shown = ", ".join(str(int(i)) for i in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise UserError(
            f"{source}: label column {column!r} needs whole numbers; rows {shown}{more} are "
            f"missing or not integral (e.g. {raw[int(bad[0])]!r}); fix or drop them"
        )
    label_set, index = np.unique(values, return_inverse=True)
    if len(label_set) < 2:
        raise UserError(f"{source}: label column {column!r} has a single class; need at least 2")
    return Labels(index.astype(np.int64), tuple(float(v) for v in label_set))


def read_split_file(path: Path, n_rows: int) -> np.ndarray:
    """Per-row split name from a ``row,split`` file (``row``: 0-based input position)."""
    frame = read_table(Path(path), ["row", "split"])
    rows = frame["row"].cast(pl.Int64, strict=False).to_numpy()
    names = frame["split"].cast(pl.String).to_numpy()
    unknown = sorted({str(s) for s in names} - set(SPLITS))
    if unknown:
        raise UserError(f"{path}: unknown split names {unknown}; use {', '.join(SPLITS)}")
    if len(rows) != n_rows or not np.array_equal(np.sort(rows), np.arange(n_rows)):
        raise UserError(
            f"{path}: must name each of the {n_rows} input rows (0..{n_rows - 1}) exactly once; "
            f"it has {len(rows)} entries"
        )
    split = np.empty(n_rows, dtype=object)
    split[rows] = names
    return split.astype(str)


def stratified_split(
    labels: np.ndarray, *, seed: int, fractions: tuple[float, float] = (0.1, 0.1)
) -> np.ndarray:
    """Seeded per-class shuffle into train / val / test with the given val and test fractions."""
    rng = np.random.default_rng(seed)
    split = np.full(len(labels), "train", dtype="<U5")
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = round(len(members) * fractions[0])
        n_test = round(len(members) * fractions[1])
        split[members[:n_val]] = "val"
        split[members[n_val : n_val + n_test]] = "test"
    return split

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from scorer.errors import UserError
from scorer.io.labelled import (
    read_labels,
    read_split_file,
    read_table,
    read_texts,
    stratified_split,
)

FRAME = pl.DataFrame(
    {
        "Title": ["Nice", None, "Bad", "Ok"],
        "Review Text": ["soft fabric", "runs small", None, None],
        "Rating": [5.0, 3.0, 1.0, 4.0],
    }
)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".ndjson"])
def test_reads_every_format_and_joins_text_columns(tmp_path, suffix: str) -> None:
    path = tmp_path / f"reviews{suffix}"
    {".csv": FRAME.write_csv, ".parquet": FRAME.write_parquet, ".ndjson": FRAME.write_ndjson}[
        suffix
    ](path)
    frame = read_table(path)
    texts = read_texts(frame, ["Title", "Review Text"], path)
    assert texts.to_list() == ["Nice soft fabric", " runs small", "Bad ", "Ok "]
    labels = read_labels(frame, "Rating", path)
    assert labels.values == (1.0, 3.0, 4.0, 5.0)
    assert labels.index.tolist() == [3, 1, 0, 2]


def test_csv_with_line_breaks_in_fields(tmp_path) -> None:
    path = tmp_path / "r.csv"
    path.write_text('Title,Review Text,Rating\n"a","line one\r\nline two",5\n"b","x",1\n')
    assert read_texts(read_table(path), ["Title", "Review Text"], path).to_list() == [
        "a line one\r\nline two",
        "b x",
    ]


def test_missing_column_names_the_columns_that_exist(tmp_path) -> None:
    path = tmp_path / "r.parquet"
    FRAME.write_parquet(path)
    with pytest.raises(UserError, match=r"no column 'text'; columns are: 'Title', 'Review Text'"):
        read_texts(read_table(path), ["text"], path)


def test_numeric_text_column_is_cast_and_list_column_refused() -> None:
    frame = pl.DataFrame({"n": [1, None], "l": [["a"], ["b"]]})
    assert read_texts(frame, ["n"], "x").to_list() == ["1", ""]
    with pytest.raises(UserError, match="'l' has type List"):
        read_texts(frame, ["l"], "x")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([5, None, 3], "rows 1 are missing"),
        (["5", "good", "1"], "rows 1 are missing"),
        ([4.5, 5.0, 1.0], "rows 0 are missing"),
        ([5, 5, 5], "single class"),
    ],
)
def test_bad_labels_are_named(values, message: str) -> None:
    with pytest.raises(UserError, match=message):
        read_labels(pl.DataFrame({"y": values}), "y", "f.csv")


def test_split_file(tmp_path) -> None:
    path = tmp_path / "split.csv"
    pl.DataFrame({"row": [2, 0, 1], "split": ["test", "train", "val"]}).write_csv(path)
    assert read_split_file(path, 3).tolist() == ["train", "val", "test"]
    with pytest.raises(UserError, match="exactly once"):
        read_split_file(path, 4)
    pl.DataFrame({"row": [0], "split": ["dev"]}).write_csv(path)
    with pytest.raises(UserError, match="unknown split names"):
        read_split_file(path, 1)


def test_stratified_split_is_seeded_and_per_class() -> None:
    labels = np.repeat([0, 1, 2], [100, 50, 30])
    split = stratified_split(labels, seed=3)
    assert np.array_equal(split, stratified_split(labels, seed=3))
    assert not np.array_equal(split, stratified_split(labels, seed=4))
    for label, size in [(0, 100), (1, 50), (2, 30)]:
        members = split[labels == label]
        assert (members == "val").sum() == round(size * 0.1)
        assert (members == "test").sum() == round(size * 0.1)


def test_reference_dataset_shape(reference_data) -> None:
    reviews, split_csv = reference_data
    frame = read_table(reviews)
    labels = read_labels(frame, "Rating", reviews)
    split = read_split_file(split_csv, len(frame))
    assert len(frame) == 23_486
    assert np.bincount(labels.index).tolist() == [842, 1565, 2871, 5077, 13131]
    assert {s: int((split == s).sum()) for s in ("train", "val", "test")} == {
        "train": 18_790,
        "val": 2_347,
        "test": 2_349,
    }

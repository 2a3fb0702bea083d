"""What `scorer run` reads: text columns, invalid UTF-8, schema drift, name clashes, huge cells."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scorer.cli import main
from scorer.engines.local.run import partial_dir
from scorer.export.onnx_export import export_model
from tests.helpers import make_model_dir, make_reviews


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    directory = make_model_dir(tmp_path_factory.mktemp("model") / "m", variant="packed")
    export_model(directory.path)
    return directory.path


def _cli(model, source, out, *extra) -> int:
    return main(["run", str(source), "--model", str(model), "--out", str(out), "--quiet", *extra])


def _scores(path) -> np.ndarray:
    return pl.read_parquet(path).select(pl.col("^prob_.*$")).to_numpy()


def _lossy(out) -> int:
    return json.loads(out.with_name(out.name + ".manifest.json").read_text())["lossy_utf8_rows"]


def _raw_strings(values: list[bytes]) -> pa.Array:
    """A string array holding these exact bytes (pyarrow does not validate them)."""
    binary = pa.array(values, type=pa.large_binary())
    return pa.Array.from_buffers(pa.large_string(), len(binary), binary.buffers())


# --- finding the text columns ------------------------------------------------------------


@pytest.mark.parametrize(
    ("columns", "used"),
    [
        ({"id": [1, 2], "review": ["love it", "awful"]}, "review"),
        ({"id": [1, 2], "Review_Text": ["love it", "awful"]}, "Review_Text"),
        ({"BODY": ["love it", "awful"], "stars": [5, 1]}, "BODY"),
    ],
)
def test_one_common_text_column_is_used_and_named(tmp_path, model, capsys, columns, used):
    source = tmp_path / "r.parquet"
    pl.DataFrame(columns).write_parquet(source)
    out = tmp_path / "o.parquet"
    assert _cli(model, source, out) == 0
    err = capsys.readouterr().err
    assert f"scoring column {used!r}" in err and err.count("\n") == 1
    manifest = json.loads(out.with_name("o.parquet.manifest.json").read_text())
    assert manifest["text_columns"] == [used]
    # The same scores as naming the column explicitly.
    assert _cli(model, source, tmp_path / "x.parquet", "--text-col", used) == 0
    np.testing.assert_array_equal(_scores(out), _scores(tmp_path / "x.parquet"))


@pytest.mark.parametrize(
    ("columns", "listed"),
    [
        ({"text": ["a"], "body": ["b"]}, "'text', 'body'"),  # two common names: ambiguous
        ({"comment": ["a"], "n": [1]}, "'comment'"),
        ({"n": [1]}, "none"),
    ],
)
def test_no_unambiguous_text_column_lists_the_string_columns(
    tmp_path, model, capsys, columns, listed
):
    source = tmp_path / "r.parquet"
    pl.DataFrame(columns).write_parquet(source)
    out = tmp_path / "o.parquet"
    assert _cli(model, source, out) == 1
    err = capsys.readouterr().err
    assert f"its string columns are {listed}" in err and "--text-col" in err
    assert err.count("\n") == 1 and not out.exists()


def test_default_output_is_beside_the_input(tmp_path, model, capsys) -> None:
    source = tmp_path / "reviews.parquet"
    make_reviews(50).write_parquet(source)
    assert main(["run", str(source), "--model", str(model), "--quiet"]) == 0
    out = tmp_path / "reviews.scores.parquet"
    assert pl.read_parquet(out).height == 50
    assert str(out) in capsys.readouterr().out
    assert main(["run", str(source), "--model", str(model), "--quiet"]) == 1  # exists
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("spec", "cwd", "want"),
    [
        ("in/reviews.parquet", ".", "in/reviews.scores.parquet"),
        ("in", ".", "in.scores.parquet"),  # a folder, even of one file: beside it
        ("in/", ".", "in.scores.parquet"),
        ("in/*.parquet", ".", "in.scores.parquet"),
        (".", "in", "in.scores.parquet"),  # relative, from inside the folder
        ("*.parquet", "in", "in.scores.parquet"),
    ],
)
def test_the_default_output_is_never_inside_the_input_folder(
    tmp_path, model, monkeypatch, spec, cwd, want
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    make_reviews(20).write_parquet(folder / "reviews.parquet")
    monkeypatch.chdir(tmp_path / cwd)
    assert main(["run", spec, "--model", str(model), "--quiet"]) == 0
    assert (tmp_path / want).is_file()
    if not spec.endswith("reviews.parquet"):  # a folder or glob: nothing written inside it
        assert sorted(p.name for p in folder.iterdir()) == ["reviews.parquet"]


# --- invalid UTF-8 ------------------------------------------------------------------------

ROWS = [b"lovely dress", b"caf\xe9 \xff broken", b"genuine \xef\xbf\xbd mark", b"\xc3\x28 x"]


def test_invalid_utf8_in_csv_is_decoded_lossily_and_counted(tmp_path, model, capsys) -> None:
    source = tmp_path / "r.csv"
    source.write_bytes(b"Title,Review Text\n" + b"".join(r + b",x\n" for r in ROWS))
    out = tmp_path / "o.parquet"
    assert _cli(model, source, out) == 0
    # Rows 1 and 3 hold invalid bytes; row 2's U+FFFD is in the input, and counts alike:
    # after decoding the two cannot be told apart.
    assert "3 rows had invalid UTF-8" in capsys.readouterr().out
    assert _lossy(out) == 3 and pl.read_parquet(out).height == 4
    # Scored as the lossily decoded text would be.
    decoded = tmp_path / "d.parquet"
    texts = [r.decode("utf-8", "replace") for r in ROWS]
    pl.DataFrame({"Title": texts, "Review Text": ["x"] * 4}).write_parquet(decoded)
    assert _cli(model, decoded, tmp_path / "d_out.parquet") == 0
    np.testing.assert_array_equal(_scores(out), _scores(tmp_path / "d_out.parquet"))
    # Parquet is never decoded lossily: a U+FFFD there is the input's own, not counted.
    assert _lossy(tmp_path / "d_out.parquet") == 0


@pytest.mark.parametrize("kind", ["parquet", "ndjson"])
def test_invalid_utf8_breaks_parquet_and_json_and_is_refused_in_one_line(
    tmp_path, model, capsys, kind
) -> None:
    if kind == "parquet":
        source = tmp_path / "r.parquet"
        pq.write_table(pa.table({"Title": _raw_strings(ROWS), "Review Text": ["x"] * 4}), source)
    else:
        source = tmp_path / "r.ndjson"
        source.write_bytes(b"".join(b'{"Title": "' + r + b'", "Review Text": "x"}\n' for r in ROWS))
    out = tmp_path / "o.parquet"
    assert _cli(model, source, out) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"scorer: error: cannot read {source}") and err.count("\n") == 1
    # Found while reading, as any read error: nothing published (the partial state stays).
    assert not out.exists()


def test_invalid_utf8_in_a_kept_column_is_decoded_in_the_output(tmp_path, model) -> None:
    source = tmp_path / "r.csv"
    source.write_bytes(b"id,Title,Review Text\nok,a,x\nb\xffd,b,y\n")
    out = tmp_path / "o.parquet"
    assert _cli(model, source, out, "--keep-col", "id") == 0
    assert pl.read_parquet(out)["id"].to_list() == ["ok", "b\ufffdd"]
    assert _lossy(out) == 1


# --- schema drift and name clashes --------------------------------------------------------


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ({"id": [2], "Title": ["t"]}, "no column 'Review Text'"),
        ({"id": [2], "Title": ["t"], "Review Text": [[1]]}, "text column 'Review Text' has type"),
        (
            {"id": [2], "Title": ["t"], "Review Text": [7]},
            "text column 'Review Text' has type int64",
        ),
        ({"id": ["2"], "Title": ["t"], "Review Text": ["r"]}, "column 'id' has type"),
    ],
)
def test_schema_drift_names_the_file_before_anything_is_written(
    tmp_path, model, capsys, second, message
):
    folder = tmp_path / "in"
    folder.mkdir()
    pl.DataFrame({"id": [1], "Title": ["a"], "Review Text": ["b"]}).write_parquet(
        folder / "a.parquet"
    )
    pl.DataFrame(second).write_parquet(folder / "b.parquet")
    out = tmp_path / "o.parquet"
    assert _cli(model, folder, out) == 1
    err = capsys.readouterr().err
    assert "b.parquet" in err and message in err and err.count("\n") == 1
    assert not out.exists() and not partial_dir(out).exists()


@pytest.mark.parametrize("name", ["row", "predicted_rating", "expected_rating", "prob_3"])
def test_a_kept_column_named_like_an_output_column_is_refused(tmp_path, model, capsys, name):
    source = tmp_path / "r.parquet"
    make_reviews(20).with_columns(pl.lit(1).alias(name)).write_parquet(source)
    assert _cli(model, source, tmp_path / "o.parquet", "--keep-col", name) == 1
    err = capsys.readouterr().err
    assert f"kept column {name!r} has the name of an output column" in err
    assert err.count("\n") == 1 and "cannot read" not in err


def test_a_kept_column_named_text_is_fine(tmp_path, model) -> None:
    source = tmp_path / "r.parquet"
    make_reviews(20).with_columns(pl.col("Title").alias("text")).write_parquet(source)
    out = tmp_path / "o.parquet"
    assert _cli(model, source, out, "--keep-col", "text") == 0
    assert pl.read_parquet(out)["text"].to_list() == pl.read_parquet(source)["text"].to_list()


# --- huge cells ---------------------------------------------------------------------------

_PEAK = """
import sys
from pathlib import Path
import pyarrow.parquet as pq
from scorer.cli import main
if sys.argv[1] == "read":  # pyarrow reading the file, and nothing else
    rc = sum(b.num_rows for b in pq.ParquetFile(sys.argv[2]).iter_batches()) * 0
else:
    rc = main(sys.argv[1:])
peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
print('PEAK', int(peak) * 1024, file=sys.stderr)
sys.exit(rc)
"""


def _peak_rss(*argv) -> int:
    """Peak RSS of a fresh process running `scorer ARGV` (or only reading, for "read")."""
    argv = tuple(map(str, argv))
    done = subprocess.run([sys.executable, "-c", _PEAK, *argv], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return int(done.stderr.split("PEAK")[-1])


@pytest.fixture(scope="module")
def tail_model(tmp_path_factory):
    """Reads the head and the tail of long reviews: the whole cell is scanned."""
    directory = make_model_dir(tmp_path_factory.mktemp("tail") / "m", variant="packed", tail=8)
    export_model(directory.path)
    return directory.path


@pytest.mark.slow
@pytest.mark.parametrize("which", ["model", "tail_model"])
def test_a_200_mb_cell_is_scored_like_its_first_part_within_bounded_memory(
    tmp_path, which, request
):
    model = request.getfixturevalue(which)
    cell = 200_000_000
    words = b"lovely dress "
    huge = words * (cell // len(words))
    pq.write_table(
        pa.table({"Title": ["a", "a"], "Review Text": _raw_strings([huge, words * 40])}),
        tmp_path / "big.parquet",
        compression="zstd",
        use_dictionary=False,  # else pyarrow's own dictionary decoding peaks above all else
    )
    del huge
    small_table = pa.table({"Title": ["a"], "Review Text": ["fine"]})
    pq.write_table(small_table, tmp_path / "small.parquet")
    options = ("--model", model, "--quiet", "--out")
    small = _peak_rss("run", tmp_path / "small.parquet", *options, tmp_path / "s.parquet")
    big = _peak_rss("run", tmp_path / "big.parquet", *options, tmp_path / "b.parquet")
    reading = _peak_rss("read", tmp_path / "big.parquet") - _peak_rss(
        "read", tmp_path / "small.parquet"
    )
    # pyarrow's reader alone holds a few copies of the cell (decompressed dictionary page,
    # builder, array); scoring adds no copy of its own: no joined or cleaned text, and no
    # token beyond max_len is kept (the old string-kernel tokenizer held about ten copies);
    # a tail is a ring of `tail` ids, whatever the length of the cell.
    assert big - small < reading + 0.25 * cell
    scores = _scores(tmp_path / "b.parquet")
    np.testing.assert_array_equal(scores[0], scores[1])  # both fill max_len with the same words

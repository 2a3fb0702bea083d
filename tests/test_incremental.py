"""Incremental scoring (--since, --id-col): equal to a full run, refusals, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from scorer.cli import main
from scorer.engines.local.run import RunJob, partial_dir, run_scoring
from scorer.export.onnx_export import export_model
from tests.helpers import make_model_dir, make_reviews
from tests.test_run import _scorer_cmd, _wait_for_parts


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    directory = make_model_dir(tmp_path_factory.mktemp("model") / "m", variant="packed")
    export_model(directory.path)
    return directory.path


def run(input, out, model=None, **options):
    return run_scoring(RunJob(input=str(input), model_dir=model, out=out, quiet=True, **options))


def manifest(out) -> dict:
    return json.loads(out.with_name(out.name + ".manifest.json").read_text())


def next_night(frame: pl.DataFrame, *, seed: int, id_col: str = "id") -> tuple[pl.DataFrame, dict]:
    """Tonight's table: some rows deleted, some texts edited (title, body, or set to null),
    new rows appended (texts of other rows, new ids); the order of the rest kept."""
    rng = np.random.default_rng(seed)
    n = len(frame)
    deleted = rng.choice(n, n // 50, replace=False)
    edited = np.setdiff1d(rng.choice(n, n // 25, replace=False), deleted)
    kinds = np.arange(len(edited)) % 3
    body = pl.col("Review Text")
    position = pl.int_range(pl.len())
    night = frame.with_columns(
        pl.when(position.is_in(edited[kinds == 0]))
        .then(body + " Edited: the seams split.")
        .when(position.is_in(edited[kinds == 1]))
        .then(None)
        .otherwise(body)
        .alias("Review Text"),
        pl.when(position.is_in(edited[kinds == 2]))
        .then(pl.lit("Changed my mind"))
        .otherwise(pl.col("Title"))
        .alias("Title"),
    ).filter(~position.is_in(deleted))
    # An edit that leaves the text the model reads as it was (a null body set to null) is
    # no edit: count the rows whose joined text changed.
    text = pl.concat_str(
        [pl.col("Title").fill_null(""), pl.col("Review Text").fill_null("")], separator=" "
    )
    kept = frame.filter(~position.is_in(deleted)).select(text)
    changed = int((kept.to_series() != night.select(text).to_series()).sum())
    new = frame.sample(n // 20, seed=seed)
    if frame.schema[id_col] == pl.String:
        new = new.with_columns(pl.format("new-{}", pl.int_range(pl.len())).alias(id_col))
    else:
        new = new.with_columns((pl.col(id_col) + 10 * n).alias(id_col))
    changes = {"deleted": len(deleted), "edited": changed, "new": len(new)}
    return pl.concat([night, new]), changes


def test_incremental_run_equals_a_full_run_on_real_reviews(tmp_path, reference_data) -> None:
    reviews, _ = reference_data
    frame = (
        pl.read_csv(reviews, n_rows=3000, infer_schema_length=0)
        .select("Title", "Review Text")
        .with_row_index("review_id")
    )
    last, now = tmp_path / "last.parquet", tmp_path / "now.parquet"
    frame.write_parquet(last)
    tonight, changes = next_night(frame, seed=0, id_col="review_id")
    tonight.write_parquet(now)
    run(last, tmp_path / "last.scores.parquet", id_column="review_id")
    full = tmp_path / "full.scores.parquet"
    run(now, full, id_column="review_id")
    inc = tmp_path / "inc.scores.parquet"
    summary = run(now, inc, id_column="review_id", since=tmp_path / "last.scores.parquet")
    assert inc.read_bytes() == full.read_bytes()
    counts = manifest(inc)["incremental"]
    assert counts == {
        "since": str((tmp_path / "last.scores.parquet").resolve()),
        "reused_rows": 3000 - changes["deleted"] - changes["edited"],
        "edited_rows": changes["edited"],
        "new_rows": changes["new"],
        "deleted_rows": changes["deleted"],
    }
    # Only the new and edited rows were tokenized and scored, and profiled.
    assert manifest(inc)["profile"]["rows"] == changes["edited"] + changes["new"]
    assert "kept from --since" in summary.line()


@pytest.mark.parametrize("ids", ["int", "int, earlier output shuffled", "text"])
def test_reordered_table_and_text_ids(tmp_path, model, ids) -> None:
    frame = make_reviews(1500, seed=4)
    if ids == "text":
        frame = frame.with_columns(pl.format("r{}", pl.col("id")).alias("id"))
    last, now = tmp_path / "last.parquet", tmp_path / "now.parquet"
    # Ids that do not ascend through the earlier output take the sorted-keys index.
    (
        frame.sample(fraction=1.0, shuffle=True, seed=5) if "shuffled" in ids else frame
    ).write_parquet(last)
    tonight, changes = next_night(frame, seed=1)
    tonight.sample(fraction=1.0, shuffle=True, seed=2).write_parquet(now)
    run(last, tmp_path / "last.scores.parquet", model, id_column="id", chunk_rows=200)
    full, inc = tmp_path / "full.parquet", tmp_path / "inc.parquet"
    run(now, full, model, id_column="id")
    run(now, inc, model, id_column="id", since=tmp_path / "last.scores.parquet", chunk_rows=300)
    assert inc.read_bytes() == full.read_bytes()
    assert manifest(inc)["incremental"]["new_rows"] == changes["new"]
    out = pl.read_parquet(inc)
    assert out.columns[0] == "id" and out.columns[-1] == "text_hash"


def test_rescore_all_scores_every_row(tmp_path, model) -> None:
    data = tmp_path / "r.parquet"
    make_reviews(600, seed=5).write_parquet(data)
    other = make_model_dir(tmp_path / "other", variant="packed", seed=9).path
    export_model(other)
    run(data, tmp_path / "last.parquet", other, id_column="id")
    want = tmp_path / "want.parquet"
    run(data, want, model, id_column="id")
    out = tmp_path / "out.parquet"
    run(data, out, model, id_column="id", since=tmp_path / "last.parquet", rescore_all=True)
    assert out.read_bytes() == want.read_bytes()
    assert manifest(out)["incremental"] is None and manifest(out)["profile"]["rows"] == 600


def test_csv_input_with_invalid_utf8_counts_alike(tmp_path, model) -> None:
    frame = make_reviews(2000, seed=9)
    last, now = tmp_path / "last.csv", tmp_path / "now.csv"
    frame.write_csv(last)
    tonight, _ = next_night(frame, seed=4)
    tonight.write_csv(now)
    # An invalid byte in one review: polars decodes CSV lossily, the row is counted.
    now.write_bytes(now.read_bytes().replace(b"dress", b"dr\xffss", 1))
    run(last, tmp_path / "last.scores.parquet", model, id_column="id")
    full, inc = tmp_path / "full.parquet", tmp_path / "inc.parquet"
    run(now, full, model, id_column="id")
    run(now, inc, model, id_column="id", since=tmp_path / "last.scores.parquet")
    assert inc.read_bytes() == full.read_bytes()
    assert manifest(inc)["lossy_utf8_rows"] == manifest(full)["lossy_utf8_rows"] == 1


def test_an_empty_input_keeps_nothing_and_counts_every_earlier_row_deleted(tmp_path, model):
    frame = make_reviews(300, seed=10)
    last, now = tmp_path / "last.parquet", tmp_path / "now.parquet"
    frame.write_parquet(last)
    frame.head(0).write_parquet(now)
    run(last, tmp_path / "last.scores.parquet", model, id_column="id")
    out = tmp_path / "out.parquet"
    summary = run(now, out, model, id_column="id", since=tmp_path / "last.scores.parquet")
    assert summary.rows == 0 and pq.ParquetFile(out).metadata.num_rows == 0
    counts = manifest(out)["incremental"]
    assert (counts["reused_rows"], counts["new_rows"], counts["deleted_rows"]) == (0, 0, 300)


def _write(path, frame: pl.DataFrame):
    frame.write_parquet(path)
    return path


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("plain", ["--since", "{last}"], "--since needs --id-col"),
        ("plain", ["--id-col", "nope"], "--id-col nope: {data} has no such column"),
        ("dup_int", ["--id-col", "id"], "ids are not unique in {data} (repeated: 7)"),
        ("dup_text", ["--id-col", "id"], "ids are not unique in {data} (repeated: 'a7')"),
        ("null_id", ["--id-col", "id"], "--id-col id: 1 rows have no id (null)"),
        ("float_id", ["--id-col", "id"], "ids must be integers or text"),
        ("plain", ["--rescore-all", "--id-col", "id"], "--rescore-all is for --since"),
        ("plain", ["--id-col", "id", "--since", "{data}"], "is not a scorer output"),
        ("no_ids", ["--id-col", "id", "--since", "{last}"], "was not scored with --id-col id"),
        ("other_model", ["--id-col", "id", "--since", "{last}"], "was scored by another model"),
        ("other_text", ["--id-col", "id", "--since", "{last}"], "from other text columns"),
        ("plain", ["--id-col", "id", "--since", "{tmp}/missing.parquet"], "no such file"),
        ("plain", ["--id-col", "id", "--engine", "ray"], "work on the local engine only"),
        ("plain", ["--drift", "psi"], "expected KEY=VALUE"),
        ("text_ids_before", ["--id-col", "id", "--since", "{last}"], "ids are text, this input"),
        ("int8", ["--id-col", "id", "--since", "{last}", "--precision", "int8"], "int8 graph"),
    ],
)
def test_refusals_are_one_line_and_write_nothing(tmp_path, model, capsys, setup, args, message):
    frame = make_reviews(300, seed=6)
    data = tmp_path / "data.parquet"
    last = tmp_path / "last.parquet"
    if setup == "dup_int":
        frame = frame.with_columns(
            pl.when(pl.col("id") == 8).then(7).otherwise(pl.col("id")).alias("id")
        )
    elif setup == "dup_text":
        frame = frame.with_columns(
            pl.format("a{}", pl.when(pl.col("id") == 8).then(7).otherwise(pl.col("id"))).alias("id")
        )
    elif setup == "null_id":
        frame = frame.with_columns(
            pl.when(pl.col("id") == 3).then(None).otherwise(pl.col("id")).alias("id")
        )
    elif setup == "float_id":
        frame = frame.with_columns(pl.col("id").cast(pl.Float64))
    _write(data, frame)
    if setup == "no_ids":
        run(data, last, model)
    elif setup == "other_model":
        other = make_model_dir(tmp_path / "other", variant="packed", seed=9).path
        export_model(other)
        run(data, last, other, id_column="id")
    elif setup == "other_text":
        run(data, last, model, id_column="id", text_columns=("Review Text",))
    elif setup == "text_ids_before":
        text_ids = _write(
            tmp_path / "t.parquet", frame.with_columns(pl.format("r{}", pl.col("id")).alias("id"))
        )
        run(text_ids, last, model, id_column="id")
    elif setup == "int8":
        model = make_model_dir(tmp_path / "int8", variant="packed").path
        export_model(model, int8=True)
        run(data, last, model, id_column="id")
    out = tmp_path / "out.parquet"
    argv = [a.format(last=last, data=data, tmp=tmp_path) for a in args]
    capsys.readouterr()  # what the set-up runs said
    code = main(["run", str(data), "--model", str(model), "--out", str(out), "--quiet", *argv])
    err = capsys.readouterr().err
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message.format(data=data) in lines[0], err
    assert "Traceback" not in err and not out.exists() and not partial_dir(out).exists()


def test_an_interrupted_incremental_run_resumes_to_identical_bytes(tmp_path, model) -> None:
    frame = make_reviews(40_000, seed=7)
    last, now = tmp_path / "last.parquet", tmp_path / "now.parquet"
    frame.write_parquet(last)
    tonight, _ = next_night(frame, seed=3)
    tonight.write_parquet(now)
    previous = tmp_path / "last.scores.parquet"
    run(last, previous, model, id_column="id")
    want = tmp_path / "want.parquet"
    run(now, want, model, id_column="id")
    out = tmp_path / "out.parquet"
    command = _scorer_cmd(model, now, out, "--id-col", "id", "--since", str(previous))
    process = subprocess.Popen(command, stderr=subprocess.PIPE)
    _wait_for_parts(out, process, 3)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    assert not out.exists()
    # Resuming with another --since (here none: --rescore-all) would mix scores: refused.
    done = subprocess.run([*command, "--resume", "--rescore-all"], capture_output=True)
    assert done.returncode == 1 and b"--since" in done.stderr
    done = subprocess.run([*command, "--resume"], capture_output=True)
    assert done.returncode == 0, done.stderr
    assert b"from an earlier run" in done.stdout
    assert out.read_bytes() == want.read_bytes()
    assert pq.ParquetFile(out).metadata.num_rows == len(tonight)

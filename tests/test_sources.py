"""The one reader (scorer.io.source): every input kind and shape gives the same rows in the same
order, resumed reads start exactly where asked, and an object-store URL is read by the local
engine (against moto's S3 server on loopback)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scorer.cli import main
from scorer.errors import UserError
from scorer.export.onnx_export import export_model
from scorer.io.source import open_source
from tests.helpers import make_model_dir, make_reviews

TEXT = ["Title", "Review Text"]
FRAME = make_reviews(230, seed=3)


def _write(frame: pl.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(frame.to_arrow(), path, row_group_size=40)  # several row groups
    elif path.suffix == ".csv":
        frame.write_csv(path)
    else:
        frame.write_ndjson(path)
    return path


@pytest.fixture(scope="module", params=[".parquet", ".csv", ".ndjson"])
def inputs(request, tmp_path_factory) -> Path:
    """FRAME in three files of one kind (a folder), in a sorted order unlike write order."""
    folder = tmp_path_factory.mktemp("in")
    for name, rows in (("b", slice(100, 180)), ("c", slice(180, 230)), ("a", slice(0, 100))):
        _write(FRAME[rows], folder / f"{name}{request.param}")
    return folder


@given(chunk=st.integers(1, 260), skip=st.integers(0, 240))
def test_batches_are_the_rows_in_order_from_any_resume_point(inputs, chunk, skip) -> None:
    source = open_source(inputs)
    tables = list(source.batches(["id", *TEXT], TEXT, chunk_rows=chunk, skip_rows=skip))
    assert all(t.num_rows == chunk for t in tables[:-1])
    got = pl.concat([pl.from_arrow(t) for t in tables]) if tables else None
    want = FRAME.select("id", *TEXT).slice(skip)
    assert (got is None and want.height == 0) or got.equals(want.cast({"id": got["id"].dtype}))


def test_every_kind_reads_the_same_rows_and_types(inputs) -> None:
    source = open_source(inputs)
    assert [Path(f.location).name for f in source.files] == [
        f"{n}{inputs.glob('a*').__next__().suffix}" for n in "abc"
    ]
    frame = source.frame(["id", *TEXT])
    assert frame.equals(FRAME.select("id", *TEXT))
    assert source.count_rows() == (230 if source.kind == "parquet" else None)
    assert source.file_rows() == [100, 80, 50]


def test_a_hive_partitioned_folder_adds_its_partition_column(tmp_path) -> None:
    for year, rows in ((2025, slice(0, 60)), (2024, slice(60, 100))):
        _write(FRAME[rows], tmp_path / "t" / f"year={year}" / "part-0.parquet")
    source = open_source(tmp_path / "t")
    assert source.hive and "year" in source.schema.names
    frame = source.frame(["id", "year"])
    # Folders in sorted order: 2024's rows first.
    assert frame["year"].to_list() == [2024] * 40 + [2025] * 60
    assert frame["id"].to_list() == list(range(60, 100)) + list(range(60))


@pytest.mark.parametrize(
    ("layout", "spec", "message"),
    [
        ({"a.parquet": ".parquet", "b.csv": ".csv"}, "", "mixes file types"),
        ({"a.txt": ".csv"}, "a.txt", "unsupported input type '.txt'"),
        ({}, "none.parquet", "no such file"),
        ({"a.parquet": ".parquet"}, "*.csv", "no file matches"),
        ({"notes.txt": ".csv"}, "", "holds no Parquet, CSV or NDJSON files"),
    ],
)
def test_unreadable_inputs_are_one_line(tmp_path, layout, spec, message) -> None:
    for name, suffix in layout.items():
        path = _write(FRAME[:5], tmp_path / f"x{suffix}")
        path.rename(tmp_path / name)
    with pytest.raises(UserError, match=message):
        open_source(str(tmp_path / spec) if spec else tmp_path)


def test_other_tools_files_and_literal_names(tmp_path) -> None:
    """Hidden and "_" folders are skipped (Spark's _temporary/, .ipynb_checkpoints/); a "["
    in a name is a name, not a pattern; files may differ in columns nobody reads."""
    folder = tmp_path / "in"
    _write(FRAME[:60], folder / "part[1].parquet")
    _write(FRAME[60:100].with_columns(extra=pl.lit(1)), folder / "part[2].parquet")
    _write(FRAME[:5], folder / "_temporary" / "0" / "part-0.parquet")
    _write(FRAME[:5], folder / ".ipynb_checkpoints" / "x.parquet")
    source = open_source(folder)
    assert [Path(f.location).name for f in source.files] == ["part[1].parquet", "part[2].parquet"]
    tables = list(source.batches(["id", *TEXT], TEXT, chunk_rows=32))
    assert pl.concat([pl.from_arrow(t) for t in tables])["id"].to_list() == list(range(100))


@pytest.mark.parametrize("suffix", [".csv", ".ndjson"])
def test_text_reads_the_same_for_training_and_scoring(tmp_path, suffix) -> None:
    """A text column that looks numeric ("007") is text wherever it is read."""
    frame = pl.DataFrame({"id": [1, 2, 3], "Title": ["007", "1.50", "x"], "Rating": [1, 2, 3]})
    path = tmp_path / f"r{suffix}"
    frame.write_csv(path) if suffix == ".csv" else frame.write_ndjson(path)
    source = open_source(path)
    whole = source.frame(["Title"], text=["Title"])["Title"].to_list()
    streamed = pl.from_arrow(next(source.batches(["Title"], ["Title"], chunk_rows=10)))
    assert whole == streamed["Title"].to_list() == ["007", "1.50", "x"]


def test_the_input_hash_covers_every_file(tmp_path) -> None:
    from scorer.io.files import file_sha256

    one = _write(FRAME[:50], tmp_path / "a" / "one.csv")
    assert open_source(one).sha256() == file_sha256(one)  # one file: its own sha256
    _write(FRAME[50:], tmp_path / "a" / "two.csv")
    before = open_source(tmp_path / "a").sha256()
    _write(FRAME[51:], tmp_path / "a" / "two.csv")
    assert open_source(tmp_path / "a").sha256() != before


# --- an object store ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on a loopback port, and the environment polars takes credentials
    and the endpoint from (as it would a real store's)."""
    server_module = pytest.importorskip("moto.server", reason="moto is not installed")
    boto3 = pytest.importorskip("boto3", reason="boto3 is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }
    patch = pytest.MonkeyPatch()
    for key, value in env.items():
        patch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket="reviews")
    folder = tmp_path_factory.mktemp("s3")
    for name, rows in (("b", slice(100, 230)), ("a", slice(0, 100))):
        for suffix in (".parquet", ".csv"):
            path = _write(FRAME[rows], folder / f"{name}{suffix}")
            client.upload_file(str(path), "reviews", f"{suffix[1:]}/{name}{suffix}")
    yield folder
    patch.undo()
    server.stop()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    directory = make_model_dir(tmp_path_factory.mktemp("model") / "m", variant="packed")
    export_model(directory.path)
    return directory.path


@pytest.mark.parametrize("spec", ["s3://reviews/parquet/", "s3://reviews/csv/*.csv"])
def test_the_local_engine_scores_an_object_store_input_as_a_local_one(
    s3, model, tmp_path, spec
) -> None:
    suffix = ".parquet" if "parquet" in spec else ".csv"
    local, remote = tmp_path / "local.parquet", tmp_path / "remote.parquet"
    common = ["--model", str(model), "--quiet", "--chunk-rows", "64"]
    assert main(["run", str(s3 / f"*{suffix}"), "--out", str(local), *common]) == 0
    assert main(["run", spec, "--out", str(remote), *common]) == 0
    got, want = pl.read_parquet(remote), pl.read_parquet(local)
    assert got.equals(want) and got["id"].to_list() == list(range(230))
    source = open_source(spec)
    assert all(f.remote for f in source.files)
    if suffix == ".parquet":
        assert [f.rows for f in source.files] == [100, 130]


def test_an_object_store_input_needs_an_output_name(s3, model, capsys) -> None:
    assert main(["run", "s3://reviews/parquet/", "--model", str(model), "--quiet"]) == 1
    assert "name the output with --out" in capsys.readouterr().err


def test_a_missing_object_store_input_is_one_line(s3) -> None:
    with pytest.raises(UserError, match="cannot read s3://reviews/nothing/"):
        open_source("s3://reviews/nothing/")


def test_scores_do_not_depend_on_the_input_kind(tmp_path, model) -> None:
    outs = []
    for suffix in (".parquet", ".csv", ".ndjson"):
        source = _write(FRAME, tmp_path / f"r{suffix}")
        out = tmp_path / f"o{suffix}.parquet"
        assert main(["run", str(source), "--model", str(model), "--out", str(out), "--quiet"]) == 0
        outs.append(pl.read_parquet(out).select("expected_rating").to_numpy())
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])

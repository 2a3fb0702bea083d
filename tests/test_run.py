from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from scorer.cli import main
from scorer.engines.local.evaluate import EvalJob, evaluate
from scorer.engines.local.run import RunJob, partial_dir, run_scoring
from scorer.errors import UserError
from scorer.export.onnx_export import export_model
from scorer.runtime.session import open_scorer
from tests.helpers import make_model_dir, make_reviews, write_reviews


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    directory = make_model_dir(
        tmp_path_factory.mktemp("model") / "m", variant="packed", bidirectional=True
    )
    export_model(directory.path)
    return directory.path


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    return write_reviews(tmp_path_factory.mktemp("data") / "reviews.parquet", n=3000, seed=1)


def run(model, input, out, **options) -> object:
    return run_scoring(RunJob(input=str(input), model_dir=model, out=out, quiet=True, **options))


def test_output_rows_columns_order_and_metadata(tmp_path, model, reviews) -> None:
    out = tmp_path / "scores.parquet"
    summary = run(model, reviews, out, device="cpu")
    assert summary.rows == 3000 and summary.device == "cpu"
    frame = pl.read_parquet(out)
    assert frame.columns == [
        "id",
        "row",
        "predicted_rating",
        "expected_rating",
        "prob_1",
        "prob_2",
        "prob_3",
        "prob_4",
        "prob_5",
    ]
    assert (
        frame["id"].to_list() == list(range(3000))
        and frame["row"].to_list() == frame["id"].to_list()
    )
    probs = frame.select(pl.col("^prob_.*$")).to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(frame["expected_rating"], probs @ np.arange(1, 6), atol=1e-4)
    assert (frame["predicted_rating"].to_numpy() == probs.argmax(1) + 1).all()
    meta = pq.read_schema(out).metadata
    assert meta[b"scorer.model_sha256"].decode() == open_scorer(model, device="cpu").sha256
    assert json.loads(meta[b"scorer.model_card"])["model"]["bidirectional"] is True
    manifest = json.loads(out.with_name("scores.parquet.manifest.json").read_text())
    assert manifest["rows"] == 3000 and manifest["device"] == "cpu"
    assert set(manifest["stage_seconds"]) == {"read", "tokenize", "infer", "write", "assemble"}
    assert not partial_dir(out).exists()


def test_scores_match_direct_session_on_encoded_rows(tmp_path, model, reviews) -> None:
    from scorer.runtime.model_dir import ModelDir

    out = tmp_path / "s.parquet"
    run(model, reviews, out)
    directory = ModelDir.open(model)
    texts = (
        pl.read_parquet(reviews)
        .select(
            pl.concat_str([pl.col("Title").fill_null(""), pl.col("Review Text")], separator=" ")
        )
        .to_series()[:50]
    )
    enc = directory.vocab().encode(texts, max_len=24, keep_whitespace=True)
    probs, _ = open_scorer(model).run(enc.ids, enc.lengths.astype(np.int64))
    got = pl.read_parquet(out).head(50).select(pl.col("^prob_.*$")).to_numpy()
    np.testing.assert_allclose(got, probs, atol=1e-5)


def test_a_model_that_keeps_marks_is_scored_with_them(tmp_path, reviews) -> None:
    directory = make_model_dir(tmp_path / "m", variant="packed", marks="!?")
    export_model(directory.path)
    out = tmp_path / "s.parquet"
    run(directory.path, reviews, out)
    texts = (
        pl.read_parquet(reviews)
        .select(
            pl.concat_str([pl.col("Title").fill_null(""), pl.col("Review Text")], separator=" ")
        )
        .to_series()[:50]
    )
    vocab = directory.vocab()
    enc = vocab.encode(texts, max_len=24, keep_whitespace=True, marks="!?")
    plain = vocab.encode(texts, max_len=24, keep_whitespace=True)
    assert "!" in vocab.index and (enc.ids != plain.ids).any()
    probs, _ = open_scorer(directory.path).run(enc.ids, enc.lengths.astype(np.int64))
    got = pl.read_parquet(out).head(50).select(pl.col("^prob_.*$")).to_numpy()
    np.testing.assert_allclose(got, probs, atol=1e-5)


@pytest.mark.parametrize("kind", ["csv", "ndjson", "dir", "glob"])
def test_every_input_kind_gives_the_same_scores(tmp_path, model, reviews, kind) -> None:
    frame = pl.read_parquet(reviews)
    if kind in ("csv", "ndjson"):
        source = tmp_path / f"r.{kind}"
        getattr(frame, f"write_{kind}")(source)
    else:
        folder = tmp_path / "parts"
        folder.mkdir()
        frame[:1000].write_parquet(folder / "a.parquet")
        frame[1000:].write_parquet(folder / "b.parquet")
        source = folder if kind == "dir" else folder / "*.parquet"
    run(model, reviews, tmp_path / "want.parquet")
    run(model, source, tmp_path / "got.parquet")
    want = pl.read_parquet(tmp_path / "want.parquet")
    assert pl.read_parquet(tmp_path / "got.parquet").equals(want)


def test_deterministic_bytes_for_any_batch_chunk_or_thread_count(tmp_path, model, reviews):
    outputs = []
    for i, options in enumerate(
        [
            {},
            {"batch_size": 1, "chunk_rows": 777},
            {"batch_size": 7, "threads": 1},
            {"batch_size": 4096, "chunk_rows": 100, "threads": 2},
        ]
    ):
        out = tmp_path / f"o{i}.parquet"
        # Bytes independent of batch size are a CPU property: CUDA picks kernels by shape.
        run(model, reviews, out, device="cpu", **options)
        outputs.append(out.read_bytes())
    assert all(o == outputs[0] for o in outputs[1:])


def _scorer_cmd(model, source, out, *extra) -> list[str]:
    return [
        sys.executable,
        "-m",
        "scorer",
        "run",
        str(source),
        "--model",
        str(model),
        "--out",
        str(out),
        "--chunk-rows",
        "500",
        "--batch-size",
        "64",
        "--quiet",
        *extra,
    ]


def _wait_for_parts(out, process, count: int) -> None:
    """Until ``count`` parts are written, the first among them: parts can finish out of order,
    and a resume trusts only the run of parts from row 0."""
    deadline = time.time() + 60
    parts = partial_dir(out)
    while time.time() < deadline and process.poll() is None:
        if (
            parts.is_dir()
            and any(parts.glob("part-000000000000-*"))
            and len(list(parts.glob("part-*"))) >= count
        ):
            return
        time.sleep(0.01)
    raise AssertionError("the run finished or stalled before it could be interrupted")


@pytest.fixture(scope="module")
def big_inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    return {s: write_reviews(folder / f"big{s}", n=60_000, seed=2) for s in (".parquet", ".csv")}


@pytest.mark.parametrize(
    ("sig", "suffix"),
    [
        (signal.SIGKILL, ".parquet"),
        (signal.SIGINT, ".parquet"),
        (signal.SIGTERM, ".parquet"),
        (signal.SIGKILL, ".csv"),  # a resumed CSV read re-parses up to the resume point
    ],
)
def test_interrupted_run_resumes_to_identical_bytes(tmp_path, model, big_inputs, sig, suffix):
    big_reviews = big_inputs[suffix]
    want = tmp_path / "want.parquet"
    subprocess.run(_scorer_cmd(model, big_reviews, want), check=True)
    out = tmp_path / "out.parquet"
    process = subprocess.Popen(_scorer_cmd(model, big_reviews, out), stderr=subprocess.PIPE)
    _wait_for_parts(out, process, 3)
    os.kill(process.pid, sig)
    _, err = process.communicate(timeout=60)
    assert not out.exists()  # nothing that looks finished
    if sig in (signal.SIGINT, signal.SIGTERM):
        assert process.returncode == 130 and b"interrupted" in err
        assert b"Traceback" not in err
    done = subprocess.run(_scorer_cmd(model, big_reviews, out, "--resume"), capture_output=True)
    assert done.returncode == 0, done.stderr
    assert b"from an earlier run" in done.stdout
    assert out.read_bytes() == want.read_bytes()
    assert not partial_dir(out).exists()


def test_resume_refuses_a_changed_model(tmp_path, model, reviews) -> None:
    out = tmp_path / "o.parquet"
    parts = partial_dir(out)
    parts.mkdir()
    (parts / "state.json").write_text(json.dumps({"model_sha256": "other"}))
    with pytest.raises(UserError, match="cannot resume"):
        run(model, reviews, out, resume=True)


def test_scoring_path_imports_neither_torch_nor_spacy(tmp_path, model, reviews) -> None:
    out = tmp_path / "o.parquet"
    code = (
        "import sys; from scorer.cli import main; "
        f"rc = main(['run', {str(reviews)!r}, '--model', {str(model)!r}, '--out', {str(out)!r},"
        " '--quiet']); bad = {'torch', 'spacy'} & set(sys.modules); "
        "assert not bad, bad; sys.exit(rc)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert out.is_file()


def test_cuda_request_without_cuda_provider_is_a_clear_error(tmp_path, model, reviews) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this host has the CUDA provider")
    with pytest.raises(UserError, match="no CUDA provider"):
        run(model, reviews, tmp_path / "o.parquet", device="cuda")


# --- bad input: each one a test -------------------------------------------------------


def _cli(model, source, out, *extra) -> int:
    return main(["run", str(source), "--model", str(model), "--out", str(out), "--quiet", *extra])


def test_missing_text_column_lists_columns_and_writes_nothing(tmp_path, model, capsys) -> None:
    source = tmp_path / "r.parquet"
    pl.DataFrame({"id": [1], "comment": ["x"], "note": ["y"]}).write_parquet(source)
    out = tmp_path / "o.parquet"
    assert _cli(model, source, out) == 1
    err = capsys.readouterr().err
    assert (
        "no column 'Title', 'Review Text' in the input; its string columns are 'comment', " in err
    )
    assert "--text-col comment" in err
    assert err.count("\n") == 1 and not out.exists() and not partial_dir(out).exists()


def test_numeric_text_is_cast_and_list_text_refused(tmp_path, model, capsys) -> None:
    source = tmp_path / "r.parquet"
    pl.DataFrame({"Title": [5, None], "Review Text": ["love", None]}).write_parquet(source)
    assert _cli(model, source, tmp_path / "o.parquet") == 0
    assert pl.read_parquet(tmp_path / "o.parquet").height == 2
    bad = tmp_path / "l.parquet"
    pl.DataFrame({"Title": [["a"]], "Review Text": ["b"]}).write_parquet(bad)
    assert _cli(model, bad, tmp_path / "o2.parquet") == 1
    assert "text column 'Title' has type large_list" in capsys.readouterr().err


def test_null_and_empty_texts_are_scored_not_dropped(tmp_path, model) -> None:
    source = tmp_path / "r.ndjson"
    pl.DataFrame(
        {"Title": [None, "", None, "Great"], "Review Text": [None, "", "  ", None]}
    ).write_ndjson(source)
    out = tmp_path / "o.parquet"
    run(model, source, out)
    frame = pl.read_parquet(out)
    assert frame.height == 4 and frame["expected_rating"].null_count() == 0
    # An empty review is scored like any other empty review.
    assert frame["expected_rating"][0] == frame["expected_rating"][1]


def test_invalid_utf8_csv_is_decoded_lossily_and_counted(tmp_path, model, capsys) -> None:
    source = tmp_path / "r.csv"
    source.write_bytes(b"Title,Review Text\nok,fine dress\nbad,caf\xe9 \xff here\n,\n")
    out = tmp_path / "o.parquet"
    assert _cli(model, source, out) == 0
    assert "1 rows had invalid UTF-8" in capsys.readouterr().out
    assert pl.read_parquet(out).height == 3
    manifest = json.loads(out.with_name("o.parquet.manifest.json").read_text())
    assert manifest["lossy_utf8_rows"] == 1


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupted_parquet_is_one_line_and_nothing_written(
    tmp_path, model, reviews, capsys, damage
):
    data = reviews.read_bytes()
    source = tmp_path / "bad.parquet"
    source.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"PAR1" + b"\0" * 500)
    out = tmp_path / "o.parquet"
    assert _cli(model, source, out) == 1
    err = capsys.readouterr().err
    assert err.startswith("scorer: error: ") and err.count("\n") == 1
    assert not out.exists() and not partial_dir(out).exists()


def test_zero_rows_give_a_valid_empty_output(tmp_path, model, reviews) -> None:
    source = tmp_path / "empty.parquet"
    pl.read_parquet(reviews).head(0).write_parquet(source)
    out = tmp_path / "o.parquet"
    assert run(model, source, out).rows == 0
    frame = pl.read_parquet(out)
    assert frame.height == 0 and "expected_rating" in frame.columns


def test_output_in_missing_directory(tmp_path, model, reviews, capsys) -> None:
    assert _cli(model, reviews, tmp_path / "nope" / "o.parquet") == 1
    assert "does not exist" in capsys.readouterr().err


def test_existing_output_refused_unless_overwrite(tmp_path, model, reviews, capsys) -> None:
    out = tmp_path / "o.parquet"
    out.write_text("keep me")
    assert _cli(model, reviews, out) == 1
    assert "already exists" in capsys.readouterr().err and out.read_text() == "keep me"
    assert _cli(model, reviews, out, "--overwrite") == 0
    assert pl.read_parquet(out).height == 3000


def test_model_whose_vocabulary_does_not_match_its_config(tmp_path, reviews, capsys) -> None:
    directory = make_model_dir(tmp_path / "m")
    export_model(directory.path)
    vocab = json.loads((directory.path / "vocab.json").read_text())
    vocab["tokens"].append("extra")
    (directory.path / "vocab.json").write_text(json.dumps(vocab))
    assert _cli(directory.path, reviews, tmp_path / "o.parquet") == 1
    assert "sha256" in capsys.readouterr().err


def test_eval_matches_metrics_of_the_run_output(tmp_path, model, reviews, capsys) -> None:
    metrics = evaluate(EvalJob(input=str(reviews), model_dir=model))
    out = tmp_path / "o.parquet"
    run(model, reviews, out)
    predicted = pl.read_parquet(out)["predicted_rating"].to_numpy()
    truth = pl.read_parquet(reviews)["Rating"].to_numpy()
    assert metrics.n == 3000
    assert metrics.accuracy == pytest.approx(float((predicted == truth).mean()))
    assert main(["eval", str(reviews), "--model", str(model), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(metrics.accuracy)


def test_eval_refuses_labels_outside_the_model(tmp_path, model) -> None:
    source = tmp_path / "r.parquet"
    make_reviews(50).with_columns(pl.lit(7).alias("Rating")).write_parquet(source)
    with pytest.raises(UserError, match="outside the model's labels"):
        evaluate(EvalJob(input=str(source), model_dir=model))


def test_eval_on_one_split_of_a_split_file(tmp_path, model, reviews) -> None:
    split = tmp_path / "split.csv"
    names = ["train"] * 2000 + ["test"] * 1000
    pl.DataFrame({"row": range(3000), "split": names}).write_csv(split)
    metrics = evaluate(EvalJob(input=str(reviews), model_dir=model, split_file=split))
    assert metrics.n == 1000
    whole = evaluate(EvalJob(input=str(reviews), model_dir=model))
    out = tmp_path / "o.parquet"
    run(model, reviews, out)
    tail = pl.read_parquet(out)[2000:]["predicted_rating"].to_numpy()
    truth = pl.read_parquet(reviews)[2000:]["Rating"].to_numpy()
    assert metrics.accuracy == pytest.approx(float((tail == truth).mean()))
    assert whole.n == 3000

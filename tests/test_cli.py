from __future__ import annotations

import json
import subprocess
import sys

import polars as pl
import pytest

from scorer import __version__
from scorer.cli import main


@pytest.fixture
def reviews(tmp_path):
    path = tmp_path / "reviews.csv"
    pl.DataFrame(
        {
            "Title": ["Great", "Meh", None, "Great"],
            "Review Text": ["love it, love it", "runs small", "love the color", None],
            "Rating": [5, 3, 4, 5],
        }
    ).write_csv(path)
    return path


def test_version_and_help(capsys) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"scorer {__version__}"
    assert main(["--help"]) == 0
    assert "vocab" in capsys.readouterr().out


def test_vocab_command_writes_vocab_and_summary(tmp_path, reviews, capsys) -> None:
    out = tmp_path / "vocab.json"
    assert main(["vocab", str(reviews), "--out", str(out), "--min-count", "2"]) == 0
    summary = capsys.readouterr().out
    assert summary.startswith("vocab: 6 tokens from 4 of 4 rows (14 tokens")
    assert json.loads(out.read_text())["tokens"] == ["<pad>", "<unk>", "love", " ", "great", "it"]


def test_vocab_keeps_the_marks_asked_for(tmp_path, reviews, capsys) -> None:
    out = tmp_path / "vocab.json"
    args = ["vocab", str(reviews), "--out", str(out), "--min-count", "1", "--marks", ","]
    assert main(args) == 0
    assert "," in json.loads(out.read_text())["tokens"]
    assert main(args[:-2]) == 0
    assert "," not in json.loads(out.read_text())["tokens"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--text-col", "body"], "no column 'body'; columns are: 'Title', 'Review Text', 'Rating'"),
        (["--min-count", "0"], "--min-count must be >= 1"),
        (["--marks", "!a"], "marks must be ASCII punctuation characters, got '!a'"),
        (["--marks", "!!"], "marks must not repeat a character, got '!!'"),
    ],
)
def test_user_errors_are_one_line_exit_1(tmp_path, reviews, capsys, args, message) -> None:
    out = tmp_path / "vocab.json"
    assert main(["vocab", str(reviews), "--out", str(out), *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not out.exists()


def test_console_script_exit_codes(tmp_path) -> None:
    run = [sys.executable, "-m", "scorer", "vocab", str(tmp_path / "none.csv"), "--out", "x"]
    done = subprocess.run(run, capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().endswith("none.csv: no such file")
    usage = subprocess.run(
        [sys.executable, "-m", "scorer", "vocab"], capture_output=True, text=True
    )
    assert usage.returncode == 1 and "Missing argument" in usage.stderr


def test_the_exporter_installs_as_scorer_export_and_no_top_level_export(tmp_path) -> None:
    """From any directory: scorer.export imports, a top-level `export` package does not exist
    (it would clash with any other distribution's `export`)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("scorer")
    except PackageNotFoundError:
        pytest.skip("scorer is not installed here: its source tree is on PYTHONPATH")
    code = (
        "import importlib.util, scorer.export.onnx_export;"
        "assert importlib.util.find_spec('export') is None"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)

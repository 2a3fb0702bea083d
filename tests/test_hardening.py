"""Nightly-job failures: exit codes, one writer per output, durable parts, resume edge cases."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from scorer.cli import INTERNAL, IO_ERROR, main
from scorer.engines.local import run
from scorer.engines.local.run import RunJob, partial_dir, run_scoring
from scorer.export.onnx_export import export_model
from scorer.io.files import lock_output
from scorer.runtime import output
from tests.helpers import make_model_dir, write_reviews

# On the CPU: resumed bytes equal an uninterrupted run's for any batch size there; CUDA picks
# kernels by batch shape (tests/test_cuda.py holds it to the CPU within a tolerance).
CHUNK = ["--chunk-rows", "500", "--batch-size", "64", "--device", "cpu"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    directory = make_model_dir(tmp_path_factory.mktemp("model") / "m", variant="packed")
    export_model(directory.path)
    return directory.path


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    return write_reviews(tmp_path_factory.mktemp("data") / "reviews.parquet", n=4000, seed=3)


@pytest.fixture(scope="module")
def want(tmp_path_factory, model, reviews):
    """The bytes an uninterrupted run writes."""
    out = tmp_path_factory.mktemp("want") / "want.parquet"
    assert _cli(model, reviews, out) == 0
    return out.read_bytes()


def _cli(model, source, out, *extra) -> int:
    argv = ["run", str(source), "--model", str(model), "--out", str(out), "--quiet", *CHUNK]
    return main([*argv, *extra])


def _interrupted(model, reviews, out, monkeypatch, after_parts: int = 3) -> None:
    """A run that stops with an internal error after writing some parts."""
    real = run.write_part
    written = []

    def failing(path, table, **kw):
        if len(written) == after_parts:
            raise RuntimeError("simulated crash")
        written.append(path)
        real(path, table, **kw)

    monkeypatch.setattr(run, "write_part", failing)
    assert _cli(model, reviews, out, "--workers", "1") == INTERNAL
    monkeypatch.setattr(run, "write_part", real)
    assert len(list(partial_dir(out).glob("part-*"))) == after_parts


# --- exit codes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), IO_ERROR),
        (RuntimeError("unexpected"), INTERNAL),
        (KeyError("bug"), INTERNAL),
    ],
)
def test_internal_errors_keep_traceback_own_code_and_a_resumable_partial(
    tmp_path, model, reviews, want, capsys, monkeypatch, error, code
):
    real = output.pq.write_table
    calls = []

    def fail_on_third(table, where, **kw):
        calls.append(where)
        if len(calls) == 3:
            raise error
        return real(table, where, **kw)

    monkeypatch.setattr(output.pq, "write_table", fail_on_third)
    out = tmp_path / "o.parquet"
    assert _cli(model, reviews, out, "--workers", "1") == code
    err = capsys.readouterr().err
    assert "Traceback" in err and f"internal error (exit {code})" in err
    assert not out.exists() and partial_dir(out).is_dir()
    assert not list(tmp_path.glob(".*.tmp")) and not list(partial_dir(out).glob(".*.tmp"))
    monkeypatch.setattr(output.pq, "write_table", real)
    assert _cli(model, reviews, out, "--resume") == 0
    assert out.read_bytes() == want


def test_bad_input_is_exit_1_without_traceback(tmp_path, model, capsys) -> None:
    assert _cli(model, tmp_path / "missing.parquet", tmp_path / "o.parquet") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1


# --- one writer per output -----------------------------------------------------------------


def test_a_second_run_on_the_same_output_is_refused_and_deletes_nothing(
    tmp_path, model, reviews, monkeypatch, capsys
):
    out = tmp_path / "o.parquet"
    _interrupted(model, reviews, out, monkeypatch)
    parts = sorted(partial_dir(out).glob("part-*"))
    capsys.readouterr()
    with lock_output(partial_dir(out), label=out, directory=True):
        for extra in ([], ["--overwrite"], ["--resume"]):
            assert _cli(model, reviews, out, *extra) == 1
            err = capsys.readouterr().err
            assert f"is being written by another scorer run (pid {os.getpid()})" in err
            assert err.count("\n") == 1
    assert sorted(partial_dir(out).glob("part-*")) == parts


_HOLDER = """
import sys, time
from pathlib import Path
from scorer.io.files import lock_output
lock = lock_output(Path(sys.argv[1]), directory=True)
Path(sys.argv[2]).write_text("locked")
time.sleep(600)
"""


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path, model, reviews, want) -> None:
    out = tmp_path / "o.parquet"
    ready = tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(partial_dir(out)), str(ready)])
    try:
        deadline = time.time() + 60
        while not ready.exists() and time.time() < deadline:
            time.sleep(0.05)
        assert _cli(model, reviews, out) == 1
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert _cli(model, reviews, out) == 0
    assert out.read_bytes() == want and not partial_dir(out).exists()


# --- durable parts and resume edge cases ---------------------------------------------------


@pytest.mark.parametrize("damage", ["truncate", "empty", "gap", "extra rows"])
def test_damaged_parts_are_rewritten_on_resume(tmp_path, model, reviews, want, monkeypatch, damage):
    out = tmp_path / "o.parquet"
    _interrupted(model, reviews, out, monkeypatch, after_parts=4)
    parts = sorted(partial_dir(out).glob("part-*"))
    victim = parts[1]
    if damage == "truncate":
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    elif damage == "empty":
        victim.write_bytes(b"")
    elif damage == "gap":
        victim.unlink()
    else:  # a part whose name promises other rows than it holds
        victim.rename(victim.with_name(output.part_name(500, 499)))
    assert _cli(model, reviews, out, "--resume") == 0
    assert out.read_bytes() == want


@pytest.mark.parametrize(
    "options",
    [["--chunk-rows", "777"], ["--batch-size", "7"], ["--workers", "3", "--threads", "1"]],
)
def test_resume_with_other_sizes_gives_the_same_bytes(
    tmp_path, model, reviews, want, monkeypatch, options
):
    out = tmp_path / "o.parquet"
    _interrupted(model, reviews, out, monkeypatch)
    assert (
        main(
            [
                "run",
                str(reviews),
                "--model",
                str(model),
                "--out",
                str(out),
                "--quiet",
                "--resume",
                "--device",
                "cpu",
                *options,
            ]
        )
        == 0
    )
    assert out.read_bytes() == want


def test_resume_of_a_complete_output(tmp_path, model, reviews, want, capsys) -> None:
    out = tmp_path / "o.parquet"
    assert _cli(model, reviews, out) == 0
    assert _cli(model, reviews, out, "--resume") == 0
    assert "is already complete (4,000 rows); nothing to resume" in capsys.readouterr().out
    assert out.read_bytes() == want and not partial_dir(out).exists()
    other = write_reviews(tmp_path / "other.parquet", n=100, seed=9)
    assert _cli(model, other, out, "--resume") == 1
    assert "was not scored from this input and model" in capsys.readouterr().err


def test_a_corrupt_state_file_is_an_internal_error_that_keeps_the_parts(
    tmp_path, model, reviews, monkeypatch, capsys
):
    out = tmp_path / "o.parquet"
    _interrupted(model, reviews, out, monkeypatch)
    (partial_dir(out) / run.STATE).write_text("{not json")
    parts = sorted(partial_dir(out).glob("part-*"))
    capsys.readouterr()
    assert _cli(model, reviews, out, "--resume") == INTERNAL
    assert "state.json" in capsys.readouterr().err
    assert sorted(partial_dir(out).glob("part-*")) == parts


def test_an_input_changed_after_the_interruption_is_refused(
    tmp_path, model, reviews, monkeypatch, capsys
):
    source = tmp_path / "in.parquet"
    source.write_bytes(reviews.read_bytes())
    out = tmp_path / "o.parquet"
    _interrupted(model, source, out, monkeypatch)
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    capsys.readouterr()
    assert _cli(model, source, out, "--resume") == 1
    err = capsys.readouterr().err
    assert "changed since the interrupted run" in err and err.count("\n") == 1


def test_a_re_exported_model_is_refused_on_resume(tmp_path, reviews, monkeypatch, capsys) -> None:
    directory = make_model_dir(tmp_path / "m", variant="packed", seed=1)
    export_model(directory.path)
    out = tmp_path / "o.parquet"
    _interrupted(directory.path, reviews, out, monkeypatch)
    make_model_dir(tmp_path / "m2", variant="packed", seed=2)
    for name in ("model.pt",):
        (directory.path / name).write_bytes((tmp_path / "m2" / name).read_bytes())
    export_model(directory.path)  # a real re-export: new weights, new graph, new sha256
    capsys.readouterr()
    assert _cli(directory.path, reviews, out, "--resume") == 1
    assert "the model changed since the interrupted run" in capsys.readouterr().err


def test_resume_with_another_graph_of_the_model_names_both(
    tmp_path, reviews, monkeypatch, capsys
) -> None:
    """Another --device or --precision picks another graph: its scores would mix with the
    parts already written, so the resume is refused, naming both graphs."""
    directory = make_model_dir(tmp_path / "m", variant="packed", seed=1)
    export_model(directory.path, int8=True)
    out = tmp_path / "o.parquet"
    _interrupted(directory.path, reviews, out, monkeypatch)
    parts = sorted(partial_dir(out).glob("part-*"))
    capsys.readouterr()
    assert _cli(directory.path, reviews, out, "--resume", "--precision", "int8") == 1
    err = capsys.readouterr().err
    assert "scored with model.onnx, this one would use model.int8.onnx" in err
    assert err.count("\n") == 1 and sorted(partial_dir(out).glob("part-*")) == parts
    assert _cli(directory.path, reviews, out, "--resume") == 0


def test_a_state_file_without_the_graph_name_resumes_on_the_same_bytes(
    tmp_path, model, reviews, want, monkeypatch
) -> None:
    """State files written before the graph's name was recorded: its sha256 decides."""
    out = tmp_path / "o.parquet"
    _interrupted(model, reviews, out, monkeypatch)
    path = partial_dir(out) / run.STATE
    state = json.loads(path.read_text())
    del state["model_file"]
    path.write_text(json.dumps(state))
    assert _cli(model, reviews, out, "--resume") == 0
    assert out.read_bytes() == want


def test_progress_lines_are_printed_when_stderr_is_a_log_file(tmp_path, model, reviews) -> None:
    out = tmp_path / "o.parquet"
    argv = ["-m", "scorer", "run", str(reviews), "--model", str(model), "--out", str(out), *CHUNK]
    with open(tmp_path / "log.txt", "w") as log:
        done = subprocess.run([sys.executable, *argv], stderr=log, stdout=subprocess.PIPE)
    assert done.returncode == 0
    lines = (tmp_path / "log.txt").read_text().splitlines()
    progress = [line for line in lines if line.startswith("scoring: ")]
    # One line per 10% at least (8 chunks of 500 rows: 12.5% each), with rate and ETA.
    assert len(progress) >= 7 and "rows/s" in progress[0] and "ETA" in progress[0]
    assert "\r" not in (tmp_path / "log.txt").read_text()


def test_state_file_records_what_a_resume_must_match(tmp_path, model, reviews, monkeypatch):
    out = tmp_path / "o.parquet"
    _interrupted(model, reviews, out, monkeypatch)
    state = json.loads((partial_dir(out) / run.STATE).read_text())
    assert set(state) == {
        "inputs",
        "model_sha256",
        "model_file",
        "text_columns",
        "keep_columns",
        "version",
        "id_column",
        "since",
    }
    summary = run_scoring(RunJob(str(reviews), model, out, resume=True, quiet=True, device="cpu"))
    assert summary.resumed_rows == 1500

"""The bundled default model: reproducible bytes, small enough to ship, and the headline
command `scorer run reviews.parquet` uses it with no other flag."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest

from scorer.cli import main
from scorer.runtime.model_dir import bundled_model_dir
from scorer.train.bundle import build_bundled_model
from tests.helpers import write_reviews

TINY = {"embedding_dim": 8, "hidden_dim": 8, "max_len": 24, "epochs": 2, "batch_size": 32}
# What the bundled model may add to the package, on disk (the wheel deflates it further).
SIZE_LIMIT = 10_000_000


def test_the_same_data_and_cpu_give_the_same_bytes(tmp_path) -> None:
    data = write_reviews(tmp_path / "reviews.parquet", n=400)
    first = build_bundled_model(data, None, tmp_path / "a", options=TINY)
    second = build_bundled_model(data, None, tmp_path / "b", options=TINY)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert names == [
        "config.json",
        "metrics.json",
        "model.cuda.onnx",
        "model.onnx",
        "profile.json",
        "train_rows.npy",
        "vocab.json",
    ]
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert "seconds" not in json.loads((first / "metrics.json").read_text())


def _bundled():
    path = bundled_model_dir()
    if not (path / "config.json").is_file():
        pytest.skip(f"no bundled model at {path} (run `make model`)")
    return path


def test_the_bundled_model_is_small_and_exported_for_both_providers() -> None:
    path = _bundled()
    assert sum(p.stat().st_size for p in path.iterdir()) <= SIZE_LIMIT
    graphs = json.loads((path / "config.json").read_text())["graphs"]
    assert {e["device"] for e in graphs.values()} == {"cpu", "cuda"}


def test_scorer_run_with_no_flags_uses_the_bundled_model(tmp_path, capsys, monkeypatch) -> None:
    path = _bundled()
    monkeypatch.delenv("SCORER_MODEL", raising=False)
    source = tmp_path / "reviews.parquet"
    pl.DataFrame(
        {"review": ["I love this dress, perfect fit", "Awful, it ripped the first day"]}
    ).write_parquet(source)
    assert main(["run", str(source), "--quiet"]) == 0
    captured = capsys.readouterr()
    # The summary names the graph: the CPU one, or the CUDA one on a CUDA host.
    assert re.search(rf"{path.name}/model(\.cuda)?\.onnx", captured.out)
    assert "scoring column 'review'" in captured.err
    scores = pl.read_parquet(tmp_path / "reviews.scores.parquet")
    assert scores["predicted_rating"].to_list()[0] > scores["predicted_rating"].to_list()[1]


def test_scorer_model_env_picks_another_model(tmp_path, monkeypatch, capsys) -> None:
    from scorer.export.onnx_export import export_model
    from tests.helpers import make_model_dir

    model = make_model_dir(tmp_path / "mine", variant="packed")
    export_model(model.path)
    monkeypatch.setenv("SCORER_MODEL", str(model.path))
    source = write_reviews(tmp_path / "r.parquet", n=30)
    assert main(["run", str(source), "--quiet"]) == 0
    assert re.search(r"mine/model(\.cuda)?\.onnx", capsys.readouterr().out)

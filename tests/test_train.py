from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from scorer.cli import main
from scorer.config import ModelCard
from scorer.errors import UserError
from scorer.model_dir import ModelDir
from scorer.presets import resolve
from scorer.train import TrainJob, train_model
from tests.helpers import make_reviews, write_reviews, write_vectors

SMALL = {
    "embedding_dim": 16,
    "hidden_dim": 16,
    "max_len": 24,
    "epochs": 4,
    "batch_size": 32,
    "lr": 1e-2,
    "patience": 2,
    "threads": 1,
}


def job(tmp_path, data, *, variant="packed", name="model", vectors=None, **options) -> TrainJob:
    model, tok, train = resolve({**SMALL, "variant": variant, **options})
    return TrainJob(
        data=data,
        out=tmp_path / name,
        model=model,
        tokenizer=tok,
        train=train,
        text_columns=("Title", "Review Text"),
        vectors=vectors,
    )


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    return write_reviews(tmp_path_factory.mktemp("data") / "reviews.parquet", n=600)


@pytest.mark.parametrize(
    ("variant", "options"),
    [
        ("fixed", {"bidirectional": False, "pooling": "last", "epochs": 12, "max_len": 16}),
        ("packed", {"bidirectional": True, "pooling": "last+max"}),
        ("packed", {"layers": 2, "pooling": "last"}),
        ("regression", {"bidirectional": False, "pooling": "last", "epochs": 12, "max_len": 16}),
        # Frozen 8-d vectors learn slowly; the backward direction reads the words first.
        ("vectors", {"embedding_dim": 8, "bidirectional": True, "epochs": 12, "patience": 12}),
    ],
)
def test_variants_learn_and_write_a_complete_model_dir(tmp_path, reviews, variant, options):
    vectors = write_vectors(tmp_path / "vec.txt", dim=8) if variant == "vectors" else None
    result = train_model(job(tmp_path, reviews, variant=variant, vectors=vectors, **options))
    out = result.model_dir.path
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "metrics.json",
        "model.pt",
        "report.png",
        "vocab.json",
    ]
    card = ModelCard.load(out / "config.json")
    assert card.model.variant == variant and card.labels == (1.0, 2.0, 3.0, 4.0, 5.0)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rows"] == {"train": 480, "val": 60, "test": 60}
    # The words carry the rating: every variant must beat the majority class (30%) clearly.
    assert result.test is not None and result.test.accuracy > 0.45
    model = ModelDir.open(out).load_model()
    if variant == "vectors":
        assert not model.embedding.weight.requires_grad
        assert torch.all(model.embedding.weight[0] == 0)


def test_same_seed_same_metrics(tmp_path, reviews) -> None:
    first = train_model(job(tmp_path, reviews, name="a", epochs=2))
    second = train_model(job(tmp_path, reviews, name="b", epochs=2))
    assert first.test == second.test and first.val == second.val
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bf16_autocast_path_runs_on_cpu(tmp_path, reviews) -> None:
    result = train_model(job(tmp_path, reviews, epochs=1, precision="bf16"))
    metrics = json.loads((result.model_dir.path / "metrics.json").read_text())
    assert metrics["precision"] == "bf16"
    assert np.isfinite(metrics["history"][0]["train_loss"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_training(tmp_path, reviews, precision) -> None:
    result = train_model(job(tmp_path, reviews, epochs=2, device="cuda", precision=precision))
    assert result.test is not None and result.test.accuracy > 0.45


def test_split_file_rows_are_used_as_given(tmp_path, reviews) -> None:
    split = tmp_path / "split.csv"
    names = ["train"] * 400 + ["val"] * 100 + ["test"] * 100
    pl.DataFrame({"row": range(600), "split": names}).write_csv(split)
    run = job(tmp_path, reviews, epochs=1)
    result = train_model(
        TrainJob(**{**run.__dict__, "split_file": split})  # type: ignore[arg-type]
    )
    metrics = json.loads((result.model_dir.path / "metrics.json").read_text())
    assert metrics["rows"] == {"train": 400, "val": 100, "test": 100}


def cli_train(tmp_path, data, *extra) -> int:
    return main(
        [
            "train",
            str(data),
            "--out",
            str(tmp_path / "m"),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--embedding-dim",
            "8",
            "--hidden-dim",
            "8",
            "--max-len",
            "16",
            "--threads",
            "1",
            *extra,
        ]
    )


@pytest.mark.parametrize(
    ("frame_change", "message"),
    [
        (lambda f: f.with_columns(pl.col("Rating").cast(pl.String).replace("5", "five")), "rows "),
        (lambda f: f.with_columns(pl.lit(4).alias("Rating")), "single class"),
        (lambda f: f.head(15), "fewer than one batch"),
        (lambda f: f.drop("Rating"), "no column 'Rating'"),
    ],
)
def test_bad_training_data_is_one_clear_line(tmp_path, capsys, frame_change, message) -> None:
    path = tmp_path / "bad.csv"
    frame_change(make_reviews(200)).write_csv(path)
    assert cli_train(tmp_path, path) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("love 0.1 0.2\nhate 0.3\n", "has 1 values, expected 2"),
        ("love 0.1 abc\n", "non-numeric"),
        ("zzz 0.1 0.2\n", "no vector for any vocabulary word"),
    ],
)
def test_bad_vectors_file(tmp_path, reviews, content, message) -> None:
    vectors = tmp_path / "v.txt"
    vectors.write_text(content)
    with pytest.raises(UserError, match=message):
        train_model(job(tmp_path, reviews, variant="vectors", vectors=vectors, embedding_dim=2))


def test_vectors_dimension_must_match_embedding_dim(tmp_path, reviews) -> None:
    vectors = write_vectors(tmp_path / "v.txt", dim=8)
    with pytest.raises(UserError, match="expected 16"):
        train_model(job(tmp_path, reviews, variant="vectors", vectors=vectors))


def test_existing_output_refused_unless_overwrite(tmp_path, reviews, capsys) -> None:
    (tmp_path / "m").mkdir()
    assert cli_train(tmp_path, reviews) == 1
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert cli_train(tmp_path, reviews, "--overwrite") == 0
    assert (tmp_path / "m" / "model.pt").is_file()
    assert "trained in" in capsys.readouterr().out


def test_tampered_model_dir_is_refused(tmp_path, reviews) -> None:
    out = train_model(job(tmp_path, reviews, epochs=1)).model_dir.path
    config = json.loads((out / "config.json").read_text())
    config["model"]["hidden_dim"] = 99
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"does not fit config\.json"):
        ModelDir.open(out).load_model()
    config["format_version"] = 999
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="format_version 999"):
        ModelDir.open(out)

"""Distillation: the soft-target loss, the teacher trained by the recipe or read from a model
directory, and what reaches the student (training and refit rows, never the judge)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import polars as pl
import pytest
import torch

from scorer.cli import main
from scorer.errors import UserError
from scorer.export.onnx_export import export_model
from scorer.runtime.config import ModelCard, ModelConfig, TrainConfig
from scorer.train import refit as refit_module
from scorer.train.fit import Objective, soft_loss
from scorer.train.job import TrainJob, train_model
from scorer.train.presets import resolve
from tests.helpers import make_reviews
from tests.test_train import SMALL, job

CONFIG = ModelConfig(variant="packed", vocab_size=10, num_labels=3)
VALUES = torch.tensor([1.0, 2.0, 3.0])


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_soft_loss_is_t_squared_times_the_kl_of_the_softened_distributions(temperature):
    teacher = np.array([[0.7, 0.2, 0.1], [0.05, 0.15, 0.8]])
    output = np.array([[1.0, 0.5, -1.0], [0.0, 2.0, 0.3]])

    def soften(logit: np.ndarray) -> np.ndarray:
        e = np.exp(logit / temperature - (logit / temperature).max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p, q = soften(np.log(teacher)), soften(output)
    want = temperature**2 * float((p * (np.log(p) - np.log(q))).sum(axis=1).mean())
    got = soft_loss(torch.tensor(output), torch.tensor(teacher), temperature)
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_soft_loss_is_zero_for_the_teachers_own_logits_and_finite_at_zero_probability():
    teacher = torch.tensor([[0.6, 0.3, 0.1], [0.0, 0.5, 0.5]])
    own = torch.log(teacher.clamp_min(1e-12))
    assert float(soft_loss(own, teacher, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(soft_loss(torch.zeros(2, 3), teacher, 1.0))


@pytest.mark.parametrize("weight", [0.0, 0.5, 0.9])
def test_the_objective_mixes_in_soft_targets_only_where_a_batch_carries_them(weight):
    objective = Objective(CONFIG, VALUES, 0.5, 0.0, weight, 2.0)
    plain = Objective(CONFIG, VALUES, 0.5)
    output = torch.tensor([[2.0, 0.1, -1.0], [0.3, 0.2, 1.5]])
    target = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    soft = torch.tensor([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    # Validation rows carry no soft targets: every candidate is judged by the plain loss.
    assert float(objective(output, target)) == pytest.approx(float(plain(output, target)))
    ce = torch.nn.functional.cross_entropy(output, target[:, 0].long())
    expected = torch.softmax(output, dim=1) @ VALUES
    mse = torch.nn.functional.mse_loss(expected, target[:, 1])
    want = (1 - weight) * ce + weight * soft_loss(output, soft, 2.0) + 0.5 * mse
    assert float(objective(output, target, soft)) == pytest.approx(float(want), rel=1e-6)


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "reviews.parquet"
    make_reviews(600, seed=0).write_parquet(path)
    return path


@pytest.fixture(scope="module")
def reversed_teacher(tmp_path_factory, reviews):
    """An exported model trained on the same reviews with their ratings reversed (1 <-> 5):
    a teacher the ratings contradict, so what a student takes from it shows."""
    root = tmp_path_factory.mktemp("teacher")
    data = root / "reversed.parquet"
    pl.read_parquet(reviews).with_columns(Rating=6 - pl.col("Rating")).write_parquet(data)
    result = train_model(job(root, data, name="teacher", epochs=6, refit=False, blend=False))
    export_model(result.model_dir.path)
    return result.model_dir.path


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_soft_targets_reach_training_and_the_model_follows_them(temperature) -> None:
    from scorer.nn.model import ReviewLSTM
    from scorer.train.fit import fit_epochs, logits
    from tests.helpers import word_sets

    vocab, sets, values, runtime = word_sets(240, 40)
    data = sets["train"]
    # A teacher sure of a rating the data never gives the row (1 -> 2 -> 3 -> 1).
    rotated = torch.as_tensor((data.label_index + 1) % 3)
    soft = torch.nn.functional.one_hot(rotated, 3).float() * 0.9 + 0.1 / 3
    shape = ModelConfig("packed", len(vocab), 3, embedding_dim=8, hidden_dim=16, packed=True)
    agreement = {}
    for weight in (0.0, 0.9):
        cfg = TrainConfig(
            epochs=12, batch_size=16, lr=1e-2, distill_weight=weight,
            distill_temperature=temperature, seed=3,
        )  # fmt: skip
        torch.manual_seed(11)
        model = ReviewLSTM(shape)
        objective = Objective.of(shape, cfg, values, runtime.device)
        taught = dataclasses.replace(data, soft=soft)
        model.load_state_dict(fit_epochs(model, taught, cfg, runtime, objective, 12))
        agreement[weight] = float((logits(model, data).argmax(1) == rotated).float().mean())
    assert agreement[0.9] > agreement[0.0] + 0.3


def test_a_student_of_a_teacher_in_a_directory_records_it_and_differs_from_one_without(
    tmp_path, reviews, reversed_teacher
) -> None:
    options = {"epochs": 2, "refit": False}
    alone = train_model(job(tmp_path, reviews, name="alone", **options))
    taught = train_model(
        TrainJob(
            **{
                **job(tmp_path, reviews, name="taught", distill_weight=0.5, **options).__dict__,
                "teacher": reversed_teacher,
            }
        )
    )
    weights = [
        torch.load(r.model_dir.path / "model.pt", weights_only=True) for r in (alone, taught)
    ]
    assert not all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    metrics = json.loads((taught.model_dir.path / "metrics.json").read_text())
    teacher = metrics["teacher"]
    assert teacher["trained"] is False and teacher["path"] == str(reversed_teacher)
    assert (
        teacher["graph_sha256"]
        == ModelCard.load(reversed_teacher / "config.json").graphs["model.onnx"]["sha256"]
    )
    # It reverses the ratings: its accuracy on them is low, unlike the model's.
    assert teacher["scores"]["val"]["accuracy"] < 0.3 < metrics["val"]["accuracy"]
    # The search is judged by the ratings alone: the plain objective, no soft targets.
    trial = metrics["search"][0]
    weight = ModelCard.load(taught.model_dir.path / "config.json").train.expected_loss_weight
    assert trial["val_loss"] == pytest.approx(
        trial["val_nll"] + weight * trial["val_rmse_expected"] ** 2, rel=1e-5
    )
    card = ModelCard.load(taught.model_dir.path / "config.json")
    assert (card.train.distill_weight, card.train.teacher_hidden_dim) == (0.5, 0)


def test_the_recipe_trains_its_teacher_first_and_the_refit_learns_from_it_on_validation_rows(
    tmp_path, reviews, monkeypatch, capsys
) -> None:
    seen = []
    real = refit_module.fit_epochs

    def spy(model, data, *args, **kwargs):
        seen.append(data)
        return real(model, data, *args, **kwargs)

    monkeypatch.setattr(refit_module, "fit_epochs", spy)
    result = train_model(job(tmp_path, reviews, teacher_hidden_dim=24, epochs=3))
    metrics = json.loads((result.model_dir.path / "metrics.json").read_text())
    teacher = metrics["teacher"]
    assert teacher["trained"] is True
    assert teacher["model"]["hidden_dim"] == 24
    assert 1 <= teacher["best_epoch"] <= 3 and len(teacher["history"]) >= teacher["best_epoch"]
    assert "teacher: hidden 24" in capsys.readouterr().err
    # The refit learns from the teacher's probabilities of the training and validation rows.
    assert len(seen) == 1 and seen[0].soft is not None and len(seen[0].soft) == 480 + 60
    assert torch.allclose(seen[0].soft.sum(dim=1), torch.ones(540))
    card = ModelCard.load(result.model_dir.path / "config.json")
    assert card.model.hidden_dim == SMALL["hidden_dim"]  # the student is what is kept
    assert card.train.teacher_hidden_dim == 24


@pytest.mark.parametrize(
    ("options", "external", "recorded"),
    [
        # The recipe's teacher: its settings are recorded as they were.
        ({"teacher_hidden_dim": 24}, False, (24, 0.8, 4.0)),
        # A teacher read from a directory replaces the recipe's.
        ({"teacher_hidden_dim": 24}, True, (0, 0.8, 4.0)),
        # No teacher: the model was taught by none.
        ({"teacher_hidden_dim": 0}, False, (0, 0.0, 1.0)),
        ({"teacher_hidden_dim": 24, "variant": "regression"}, False, (0, 0.0, 1.0)),
    ],
)
def test_what_the_model_records_of_its_teacher(options, external, recorded) -> None:
    from scorer.train.presets import settle_teacher

    model, _, train = resolve(
        {**SMALL, "distill_weight": 0.8, "distill_temperature": 4.0, **options}
    )
    cfg = settle_teacher(train, model.regression, external)
    assert (cfg.teacher_hidden_dim, cfg.distill_weight, cfg.distill_temperature) == recorded


def test_the_default_recipe_distills_from_a_larger_teacher() -> None:
    model, _, train = resolve({})
    assert train.teacher_hidden_dim > model.hidden_dim
    assert 0 < train.distill_weight < 1 and train.distill_temperature > 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"distill_weight": 1.0}, "--distill-weight must be in"),
        ({"distill_weight": -0.1}, "--distill-weight must be in"),
        ({"distill_temperature": 0.0}, "--distill-temperature must be > 0"),
    ],
)
def test_distillation_settings_outside_their_range_are_refused(options, message) -> None:
    with pytest.raises(UserError, match=message):
        resolve(options)


def test_a_teacher_with_other_labels_is_refused_in_one_line(
    tmp_path, reviews, reversed_teacher, capsys
) -> None:
    three = tmp_path / "three.parquet"
    frame = pl.read_parquet(reviews).with_columns(Rating=(pl.col("Rating") + 1) // 2)
    frame.write_parquet(three)
    code = main(
        ["train", str(three), "--out", str(tmp_path / "m"), "--teacher", str(reversed_teacher),
         "--epochs", "1", "--hidden-dim", "8", "--embedding-dim", "8", "--search-budget", "0",
         "--threads", "1", "--device", "cpu"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert "labels [1.0, 2.0, 3.0, 4.0, 5.0] are not the data's [1.0, 2.0, 3.0]" in err
    # Refused before training starts: one line, no traceback.
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("scorer: error: --teacher ")


def test_a_teacher_that_learned_the_validation_rows_is_warned_about(
    tmp_path, reviews, capsys
) -> None:
    # Refitted on training + validation rows (the default): it has seen them.
    seen = train_model(job(tmp_path, reviews, name="seen", epochs=2))
    export_model(seen.model_dir.path)
    capsys.readouterr()
    student = job(tmp_path, reviews, name="student", epochs=1, distill_weight=0.5)
    result = train_model(TrainJob(**{**student.__dict__, "teacher": seen.model_dir.path}))
    err = capsys.readouterr().err
    assert "was trained on 60 of the 60 validation rows" in err
    metrics = json.loads((result.model_dir.path / "metrics.json").read_text())
    assert metrics["teacher"]["val_rows_seen"] == 60


@pytest.mark.parametrize(("key", "loads"), [("budget", True), ("no_such_setting", False)])
def test_a_config_written_before_the_search_budget_still_loads(tmp_path, key, loads) -> None:
    from tests.helpers import make_model_dir

    path = make_model_dir(tmp_path / "m").path / "config.json"
    doc = json.loads(path.read_text())
    doc["train"][key] = 600.0
    path.write_text(json.dumps(doc))
    if loads:
        assert ModelCard.load(path).train == TrainConfig(
            **{k: v for k, v in doc["train"].items() if k != key}
        )
    else:
        with pytest.raises(UserError, match=r"config\.json is malformed"):
            ModelCard.load(path)

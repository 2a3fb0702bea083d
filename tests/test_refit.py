"""The refit: after everything is chosen on validation, the kept candidate trained again on
the training and validation rows, on the same schedule, to the epoch early stopping chose."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from scorer.nn.model import ReviewLSTM
from scorer.runtime.config import ModelConfig, TrainConfig
from scorer.text.vocab import PAD_ID
from scorer.train import refit as refit_module
from scorer.train.checkpoint import load_model
from scorer.train.data import join
from scorer.train.fit import Objective, fit, fit_epochs
from scorer.train.job import train_model
from scorer.train.presets import resolve
from tests.helpers import word_sets, write_reviews
from tests.test_train import job


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    return write_reviews(tmp_path_factory.mktemp("data") / "reviews.parquet", n=600)


def test_the_default_refits_and_no_refit_does_not() -> None:
    assert resolve({})[2].refit is True
    assert resolve({"refit": False})[2].refit is False


def test_the_refit_trains_the_kept_config_on_train_and_val_to_the_chosen_epoch(
    tmp_path, reviews, monkeypatch
) -> None:
    calls = []

    def spy(model, data, cfg, runtime, objective, epochs, averaged=1):
        calls.append({"rows": len(data), "epochs": epochs, "averaged": averaged, "cfg": cfg})
        return fit_epochs(model, data, cfg, runtime, objective, epochs, averaged)

    monkeypatch.setattr(refit_module, "fit_epochs", spy)
    result = train_model(job(tmp_path, reviews, average_epochs=2, patience=4))
    out = result.model_dir.path
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(calls) == 1
    call = calls[0]
    assert call["rows"] == 480 + 60 == metrics["refit"]["rows"]
    assert call["epochs"] == metrics["best_epoch"] == metrics["refit"]["epochs"]
    assert call["averaged"] == metrics["refit"]["averaged"] in (1, 2)
    assert call["cfg"].token_dropout == 0.2 and call["cfg"].epochs == 4  # the kept config
    assert "refit on 540 train + val rows" in result.line()
    # The final model has seen the validation rows: `scorer eval` must recognise them.
    assert len(np.load(out / "train_rows.npy")) == 540


def test_validation_metrics_are_the_models_before_the_refit(tmp_path, reviews) -> None:
    # No blend: with it these reviews' test rows are all right either way.
    refitted = train_model(job(tmp_path, reviews, name="refit", blend=False))
    alone = train_model(job(tmp_path, reviews, name="alone", refit=False, blend=False))
    assert refitted.val == alone.val  # the same model before the refit, judged on val
    assert refitted.test != alone.test  # the test rows are scored by the refitted model
    metrics = json.loads((alone.model_dir.path / "metrics.json").read_text())
    assert metrics["refit"] is None and "refit" not in alone.line()
    assert len(np.load(alone.model_dir.path / "train_rows.npy")) == 480
    a = torch.load(refitted.model_dir.path / "model.pt", weights_only=True)
    b = torch.load(alone.model_dir.path / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and not torch.equal(a["head.weight"], b["head.weight"])


def test_the_refit_keeps_the_blend_weights_chosen_on_validation(
    tmp_path, reviews, monkeypatch
) -> None:
    seen = []
    original = refit_module.refit_linear

    def spy(blend, data, classes):
        refitted = original(blend, data, classes)
        seen.append((blend, refitted, len(data)))
        return refitted

    monkeypatch.setattr(refit_module, "refit_linear", spy)
    result = train_model(job(tmp_path, reviews))
    metrics = json.loads((result.model_dir.path / "metrics.json").read_text())
    ((before, after, rows),) = seen
    assert rows == 540
    assert (after.a, after.b, after.c) == (before.a, before.b, before.c)
    assert (metrics["blend"]["a"], metrics["blend"]["b"]) == (before.a, before.b)
    assert metrics["refit"]["linear_c"] == before.c
    # Counted and fitted again on 540 rows: the features' idf and the weights move.
    assert not np.array_equal(after.idf, before.idf)
    assert not torch.equal(after.weight, before.weight)
    model = load_model(result.model_dir)
    assert model.linear is not None
    assert torch.allclose(
        model.linear.unigram_idf.double(),
        torch.from_numpy(after.idf[: len(model.linear.unigram_idf)]),
    )


def _small_sets(token_dropout: float):
    vocab, sets, values, runtime = word_sets(120, 40, max_len=10, seed=5)
    model_cfg = ModelConfig(
        variant="packed",
        vocab_size=len(vocab),
        num_labels=3,
        packed=True,
        wide_buckets=16,
        embedding_dim=8,
        hidden_dim=8,
        dropout=0.3,
    )
    cfg = TrainConfig(
        epochs=4,
        batch_size=16,
        lr=1e-2,
        patience=10,
        token_dropout=token_dropout,
        expected_loss_weight=1.0,
        seed=3,
    )
    objective = Objective.of(model_cfg, cfg, values, runtime.device)
    return sets, values, model_cfg, cfg, runtime, objective


def _fresh(model_cfg: ModelConfig) -> ReviewLSTM:
    torch.manual_seed(11)
    return ReviewLSTM(model_cfg)


@pytest.mark.parametrize("token_dropout", [0.0, 0.2])
def test_fit_epochs_runs_fits_schedule_step_for_step(token_dropout) -> None:
    sets, values, model_cfg, cfg, runtime, objective = _small_sets(token_dropout)
    fitted = fit(_fresh(model_cfg), sets, values, cfg, runtime, objective)
    assert fitted.averaged == 1  # average_epochs 1
    # On the same rows, stopped at the best epoch: the very weights early stopping kept.
    model = _fresh(model_cfg)
    state = fit_epochs(model, sets["train"], cfg, runtime, objective, fitted.best_epoch)
    assert all(torch.equal(state[k], fitted.state[k]) for k in fitted.state)


def test_fit_epochs_averages_the_last_epochs() -> None:
    sets, _, model_cfg, cfg, runtime, objective = _small_sets(0.2)
    data = sets["train"]
    second = fit_epochs(_fresh(model_cfg), data, cfg, runtime, objective, 2)
    third = fit_epochs(_fresh(model_cfg), data, cfg, runtime, objective, 3)
    both = fit_epochs(_fresh(model_cfg), data, cfg, runtime, objective, 3, averaged=2)
    for k, value in both.items():
        assert torch.allclose(value.float(), (second[k].float() + third[k].float()) / 2)
    assert not torch.equal(both["head.weight"], third["head.weight"])


def test_join_keeps_row_order_and_pads_to_the_wider() -> None:
    sets, *_ = _small_sets(0.0)
    val = sets["val"]
    cut = dataclasses.replace(
        val,
        ids=val.ids[:, :4],
        lengths=val.lengths.clamp(max=4),
        host_lengths=np.minimum(val.host_lengths, 4),
    )
    joined = join(sets["train"], cut)
    assert len(joined) == len(sets["train"]) + len(cut)
    assert joined.ids.shape[1] == sets["train"].ids.shape[1]
    assert torch.equal(joined.ids[: len(sets["train"])], sets["train"].ids)
    assert torch.equal(joined.ids[len(sets["train"]) :, :4], cut.ids)
    assert bool((joined.ids[len(sets["train"]) :, 4:] == PAD_ID).all())
    assert np.array_equal(joined.label_index[len(sets["train"]) :], cut.label_index)
    assert torch.equal(joined.target[len(sets["train"]) :], cut.target)

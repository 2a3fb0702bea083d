from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np
import polars as pl
import pytest
import torch

from scorer.cli import main
from scorer.errors import UserError
from scorer.nn.device import CUDA_AUTO_PRECISION, Precision, Runtime
from scorer.runtime.config import ModelCard
from scorer.runtime.model_dir import ModelDir
from scorer.train import job as train_module
from scorer.train import presets
from scorer.train.checkpoint import load_model
from scorer.train.job import TrainJob, train_model
from scorer.train.presets import CUDA_DEFAULT, apply_batch_preset, batch_preset, resolve
from tests.helpers import make_reviews, write_reviews, write_vectors

SMALL = {
    # The CPU unless a test asks for CUDA: these tests assert what runs on the CPU, and
    # "auto" picks the GPU on a CUDA host (the device check runs this suite there).
    "device": "cpu",
    "search_budget": 0,
    # The machinery's own tests: the recipe's teacher has tests of its own (test_distill).
    "teacher_hidden_dim": 0,
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
    # The LSTM alone: the wide path and the blend read the words that spell the rating, so
    # with them a model would beat the majority class with a dead LSTM.
    lstm = {"wide_buckets": 0, "blend": False}
    result = train_model(
        job(tmp_path, reviews, variant=variant, vectors=vectors, **lstm, **options)
    )
    out = result.model_dir.path
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "metrics.json",
        "model.pt",
        "profile.json",
        "report.png",
        "train_rows.npy",
        "vocab.json",
    ]
    card = ModelCard.load(out / "config.json")
    # The validation rows' profile, as the final model sees them, checked at load.
    profile = ModelDir.open(out).profile()
    assert profile is not None and profile.rows == 60 and profile.predicted.sum() == 60
    assert profile.max_len == card.tokenizer.max_len and 0 < profile.tokens <= 60 * profile.max_len
    assert card.training["rows"] == {"train": 480, "val": 60, "test": 60}
    assert len(card.training["data_sha256"]) == 64
    # The refit (on by default) trained the final model on the validation rows too.
    assert len(np.load(out / "train_rows.npy")) == 480 + 60
    assert card.model.variant == variant and card.labels == (1.0, 2.0, 3.0, 4.0, 5.0)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rows"] == {"train": 480, "val": 60, "test": 60}
    # The words carry the rating: every variant must beat the majority class (30%) clearly.
    assert result.test is not None and result.test.accuracy > 0.45
    model = load_model(ModelDir.open(out))
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


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5, 0.999])
def test_token_dropout_hides_real_tokens_at_its_rate_and_never_padding(rate) -> None:
    from scorer.text.vocab import PAD_ID, UNK_ID
    from scorer.train.data import Batch
    from scorer.train.fit import drop_tokens

    torch.manual_seed(0)
    lengths = torch.randint(1, 200, (256,))
    steps = torch.arange(200)[None, :]
    ids = torch.where(steps < lengths[:, None], torch.randint(2, 50, (256, 200)), PAD_ID)
    batch = Batch(torch.arange(256), ids, lengths, lengths, torch.zeros(256, 2))
    dropped = drop_tokens(batch, rate).ids
    real = ids != PAD_ID
    assert torch.equal(dropped[~real], ids[~real])  # padding stays padding
    changed = dropped != ids
    assert torch.all(dropped[changed] == UNK_ID)
    assert abs(changed[real].float().mean().item() - rate) < 0.01
    torch.manual_seed(0)
    torch.randint(1, 200, (256,)), torch.randint(2, 50, (256, 200))
    assert torch.equal(drop_tokens(batch, rate).ids, dropped)  # seeded: the same draw


@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_training_hides_tokens_at_the_configured_rate_deterministically(
    tmp_path, reviews, monkeypatch, rate
) -> None:
    from scorer.train import fit as fit_module

    hidden, real = [], []
    real_drop = fit_module.drop_tokens

    def spy(batch, p):
        dropped = real_drop(batch, p)
        mask = batch.ids != 0
        hidden.append(int((dropped.ids != batch.ids).sum()))
        real.append(int(mask.sum()))
        return dropped

    monkeypatch.setattr(fit_module, "drop_tokens", spy)
    runs = [
        train_model(job(tmp_path, reviews, name=name, epochs=2, token_dropout=rate))
        for name in ("a", "b")
    ]
    if rate:
        assert sum(hidden) / sum(real) == pytest.approx(rate, abs=0.03)
    else:
        assert not real  # no draw at all: the same random stream as before the option
    weights = [torch.load(r.model_dir.path / "model.pt", weights_only=True) for r in runs]
    assert ModelCard.load(runs[0].model_dir.path / "config.json").train.token_dropout == rate
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_token_dropout_outside_0_1_is_refused(rate) -> None:
    with pytest.raises(UserError, match="--token-dropout must be in"):
        resolve({"token_dropout": rate})


def test_bf16_autocast_path_runs_on_cpu(tmp_path, reviews) -> None:
    result = train_model(job(tmp_path, reviews, epochs=1, precision="bf16"))
    metrics = json.loads((result.model_dir.path / "metrics.json").read_text())
    # What ran, per op: the LSTM left autocast (no bf16 LSTM kernel), the head took bf16.
    assert metrics["precision"] == {
        "requested": "bf16",
        "name": "bf16",
        "lstm": "float32",
        "other": "bfloat16",
        "grad_scaler": False,
        "tf32": False,
    }
    assert np.isfinite(metrics["history"][0]["train_loss"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
@pytest.mark.parametrize(
    ("precision", "name", "lstm", "scaler"),
    [
        ("fp32", "fp32", "float32", False),
        ("bf16", "bf16", "float32", False),
        ("fp16", "fp16", "float16", True),
        ("auto", CUDA_AUTO_PRECISION, None, None),
    ],
)
def test_cuda_training(tmp_path, reviews, precision, name, lstm, scaler) -> None:
    if precision == "bf16" and torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("bf16 needs compute capability 8.0+")
    result = train_model(job(tmp_path, reviews, epochs=2, device="cuda", precision=precision))
    assert result.test is not None and result.test.accuracy > 0.45
    metrics = json.loads((result.model_dir.path / "metrics.json").read_text())
    ran = metrics["precision"]
    assert ran["requested"] == precision and ran["name"] == name
    assert lstm is None or ran["lstm"] == lstm
    assert scaler is None or ran["grad_scaler"] is scaler


class HostReads:
    """Counts tensor -> Python conversions and device -> host copies while ``active``."""

    METHODS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")

    def __init__(self, monkeypatch) -> None:
        self.active = False
        self.calls: list[str] = []
        for name in self.METHODS:
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, getattr(torch.Tensor, name)))

    def _wrap(self, name, original):
        def counted(tensor, *args, **kwargs):
            if self.active:
                self.calls.append(name)
            return original(tensor, *args, **kwargs)

        return counted


PRECISION_TWINS = {
    "fp32": Precision("fp32", "fp32", torch.float32, torch.float32, False, False),
    # CUDA's fp16 step on CPU: autocast fp16 for the head, GradScaler and its inf check
    # (the LSTM stays fp32: CPUs have no fp16 LSTM kernel).
    "fp16 twin": Precision("fp16", "fp16", torch.float32, torch.float16, True, False),
}


@pytest.mark.parametrize(
    ("precision", "token_dropout"), [*((p, 0.0) for p in PRECISION_TWINS), ("fp32", 0.2)]
)
def test_training_steps_never_read_tensors_on_the_host(
    tmp_path, reviews, monkeypatch, precision, token_dropout
) -> None:
    """Host reads per epoch, not per step: on CUDA each read waits for the GPU."""
    runtime = Runtime(torch.device("cpu"), PRECISION_TWINS[precision])
    monkeypatch.setattr(train_module, "choose_runtime", lambda device, precision: runtime)
    reads = HostReads(monkeypatch)
    counts = []
    from scorer.train import search as search_module

    real_fit = search_module.fit

    def counted_fit(*args, **kwargs):
        reads.active, reads.calls = True, []
        try:
            return real_fit(*args, **kwargs)
        finally:
            reads.active = False
            counts.append(list(reads.calls))

    monkeypatch.setattr(search_module, "fit", counted_fit)
    epochs = 2
    for batch_size in (16, 64):  # 30 and 8 steps per epoch
        name = f"b{batch_size}"
        train_model(
            job(
                tmp_path,
                reviews,
                name=name,
                epochs=epochs,
                batch_size=batch_size,
                token_dropout=token_dropout,
            )
        )
    assert counts[0] == counts[1], counts
    # Per epoch: the loss sum, and validation's one copy (cpu, numpy); per run, the averaged
    # checkpoint's validation pass.
    assert len(counts[0]) <= 3 * epochs + 2, counts[0]


@pytest.mark.parametrize(
    ("device", "given", "expected"),
    [
        ("cuda", {}, (512, 6e-3, "cuda preset")),
        ("cuda", {"batch_size": 256}, (256, 6e-3, "batch_size given; lr from cuda preset")),
        ("cuda", {"lr": 1e-3}, (512, 1e-3, "lr given; batch_size from cuda preset")),
        ("cuda", {"batch_size": 64, "lr": 1e-2}, (64, 1e-2, "given")),
        ("cpu", {}, (128, 3e-3, "default")),
        ("cpu", {"lr": 1e-3}, (128, 1e-3, "lr given; batch_size from default")),
        ("cpu", {"batch_size": 64, "lr": 1e-2}, (64, 1e-2, "given")),
    ],
)
def test_batch_preset(device, given, expected) -> None:
    assert batch_preset(device, given) == expected


@pytest.mark.parametrize(
    ("device", "given", "rows", "expected"),
    [
        # 16 CUDA batches of training rows or more: the CUDA preset.
        ("cuda", {}, 8192, (512, 6e-3, "cuda preset")),
        ("cuda", {}, 8191, (128, 3e-3, "default: small data")),
        ("cuda", {}, 322, (128, 3e-3, "default: small data")),
        ("cuda", {"lr": 1e-3}, 322, (128, 1e-3, "lr given; batch_size from default: small data")),
        ("cuda", {"batch_size": 256}, 322, (256, 6e-3, "batch_size given; lr from cuda preset")),
        ("cpu", {}, 322, (128, 3e-3, "default")),
    ],
)
def test_small_data_on_cuda_takes_the_default_batch(device, given, rows, expected) -> None:
    assert batch_preset(device, given, train_rows=rows) == expected


def test_cuda_preset_values_are_the_documented_ones() -> None:
    assert CUDA_DEFAULT == {"batch_size": 512, "lr": 6e-3}


def test_resolve_knows_what_the_user_set(tmp_path) -> None:
    assert resolve({})[2].from_preset == ("batch_size", "lr", "epochs")
    assert resolve({"lr": 1e-3, "batch_size": None})[2].from_preset == ("batch_size", "epochs")
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"batch-size": 64}))
    assert resolve({}, config_file=config)[2].from_preset == ("lr", "epochs")
    # The reference recipe's batch and rate are part of the recipe.
    assert resolve({}, reference=True)[2].from_preset == ()


@pytest.mark.parametrize(
    ("items", "want"),
    [
        (["hidden_dim=48"], {"hidden_dim": 48}),
        (["model.hidden_dim=48", "train.epochs=3"], {"hidden_dim": 48, "epochs": 3}),
        (["pooling=last"], {"pooling": "last"}),  # not JSON: kept as text
        (['marks="!?"'], {"marks": "!?"}),
        (["blend=false", "lr=1e-3"], {"blend": False, "lr": 1e-3}),
        (["refit=False", "lr=.003", "blend=yes"], {"refit": False, "lr": 0.003, "blend": True}),
        (["max-len=64"], {"max_len": 64}),
        (["marks=!?"], {"marks": "!?"}),
    ],
)
def test_set_reads_dotted_settings(items, want) -> None:
    assert presets.parse_sets(items) == want


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["hidden_dim"], "write KEY=VALUE"),
        (["=3"], "write KEY=VALUE"),
        (["model.epochs=3"], "not a setting of a config section"),
        (["optim.lr=1"], "not a setting of a config section"),
        (["hiden_dim=48"], "unknown key"),
        (["hidden_dim=48.5"], "hidden_dim takes int values"),
        (["blend=maybe"], "blend takes bool values"),
        (["lr=fast"], "lr takes float values"),
    ],
)
def test_set_refuses_what_no_config_holds(items, message) -> None:
    with pytest.raises(UserError, match=message):
        presets.parse_sets(items)


def test_set_sits_between_the_config_file_and_the_flags(tmp_path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"hidden_dim": 40, "epochs": 5}))
    sets = presets.parse_sets(["hidden_dim=48", "layers=2"])
    model, _, train = resolve(presets.RecipeOptions(layers=1), config_file=config, sets=sets)
    assert (model.hidden_dim, model.layers, train.epochs) == (48, 1, 5)


def test_every_train_flag_reaches_the_recipe() -> None:
    """Each recipe flag of `scorer train` is a RecipeOptions field and a known recipe key."""
    import inspect

    from scorer.cli.train import train_command

    flags = set(inspect.signature(train_command).parameters) - {
        "data", "out", "text_col", "label_col", "split_file", "vectors", "teacher",
        "reference", "config", "recipe", "overwrite", "set_",
    }  # fmt: skip
    fields = {f.name for f in dataclasses.fields(presets.RecipeOptions)}
    assert flags == fields
    assert fields - {"variant"} <= presets.KNOWN_KEYS


def test_device_batch_preset_is_applied_and_recorded(tmp_path, reviews, monkeypatch) -> None:
    """The CUDA branch, forced on CPU: the preset fills only what the user left open."""
    monkeypatch.setitem(CUDA_DEFAULT, "batch_size", 48)
    monkeypatch.setitem(CUDA_DEFAULT, "lr", 5e-3)
    monkeypatch.setattr(presets, "MIN_CUDA_BATCHES", 1)
    seen_rows = []

    def on_cuda(cfg, device, rows):
        seen_rows.append(rows)
        return apply_batch_preset(cfg, "cuda", rows)

    monkeypatch.setattr(train_module, "apply_batch_preset", on_cuda)
    options = {k: v for k, v in SMALL.items() if k not in ("batch_size", "lr")}
    model, tok, train = resolve({**options, "epochs": 1, "lr": 1e-2})
    run = TrainJob(reviews, tmp_path / "m", model, tok, train, ("Title", "Review Text"))
    out = train_model(run).model_dir.path
    source = "lr given; batch_size from cuda preset"
    card = ModelCard.load(out / "config.json")
    assert (card.train.batch_size, card.train.lr, card.train.batch_source) == (48, 1e-2, source)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["batch"] == {"batch_size": 48, "lr": 1e-2, "source": source}
    assert metrics["history"][0]["batches_per_s"] > 0
    # The small-data rule reads the training rows, not the whole file's.
    assert seen_rows == [metrics["rows"]["train"]] and metrics["rows"]["val"] > 0


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
            "--teacher-hidden-dim",
            "0",
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


def test_marks_are_learned_as_words_and_recorded(tmp_path, reviews) -> None:
    result = train_model(job(tmp_path, reviews, epochs=1, blend=False, marks="!?"))
    directory = ModelDir.open(result.model_dir.path)
    assert directory.card.tokenizer.marks == "!?"
    assert "!" in directory.vocab().index and "?" not in directory.vocab().index  # no "?" seen
    with pytest.raises(UserError, match="marks must be ASCII punctuation"):
        resolve({**SMALL, "marks": "!a"})


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


def test_progress_and_epoch_lines_reach_logs(tmp_path, reviews, capsys, monkeypatch) -> None:
    monkeypatch.setattr(train_module, "available_cpus", lambda: 1)
    result = train_model(job(tmp_path, reviews, epochs=1, threads=None))
    err = capsys.readouterr().err  # not a terminal: plain lines, as in a log file
    assert "training on cpu, fp32 (LSTM float32, other float32), 1 CPU threads" in err
    assert re.search(r"^epoch 1: \d+/15 batches \(", err, re.MULTILINE)
    assert "epoch  1  loss " in err
    metrics = json.loads((result.model_dir.path / "metrics.json").read_text())
    assert metrics["threads"] == 1 and torch.get_num_threads() == 1


def test_train_command_sets_passive_openmp_waits(tmp_path, capsys, monkeypatch) -> None:
    path = tmp_path / "few.csv"
    make_reviews(200).head(15).write_csv(path)  # fails fast: fewer rows than a batch
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert cli_train(tmp_path, path) == 1
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice stays
    assert cli_train(tmp_path, path) == 1
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_train_help_documents_threads(capsys) -> None:
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "torch CPU threads; default: the CPUs this process may use." in text


def test_tampered_model_dir_is_refused(tmp_path, reviews) -> None:
    out = train_model(job(tmp_path, reviews, epochs=1)).model_dir.path
    config = json.loads((out / "config.json").read_text())
    config["model"]["hidden_dim"] = 99
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"does not fit config\.json"):
        load_model(ModelDir.open(out))
    config["format_version"] = 999
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="format_version 999"):
        ModelDir.open(out)


def test_eval_warns_when_it_sees_the_training_rows(tmp_path, reviews, capsys) -> None:
    from scorer.engines.local.evaluate import EvalJob, evaluate
    from scorer.export.onnx_export import export_model
    from scorer.text.encode import row_hashes

    # The last (test) row repeats the first (training) row's text, as short reviews do.
    frame = pl.read_parquet(reviews)
    copied = {c: [*frame[c].to_list()[:-1], frame[c][0]] for c in ("Title", "Review Text")}
    frame = frame.with_columns(pl.Series(c, v, dtype=frame[c].dtype) for c, v in copied.items())
    data = tmp_path / "reviews.parquet"
    frame.write_parquet(data)
    split = tmp_path / "split.csv"
    names = ["train"] * 400 + ["val"] * 100 + ["test"] * 100
    pl.DataFrame({"row": range(600), "split": names}).write_csv(split)
    run = job(tmp_path, data, epochs=1)
    result = train_model(TrainJob(**{**run.__dict__, "split_file": split}))  # type: ignore[arg-type]
    export_model(result.model_dir.path)
    capsys.readouterr()
    training = set(np.load(result.model_dir.path / "train_rows.npy").tolist())
    texts = frame.select(
        pl.concat_str([pl.col("Title").fill_null(""), pl.col("Review Text")], separator=" ")
    ).to_series()
    seen = int(np.isin(row_hashes(texts), list(training)).sum())
    assert seen >= 501  # every training and validation row (the refit), and the repeated one
    evaluate(EvalJob(str(data), result.model_dir.path))
    err = capsys.readouterr().err
    assert f"warning: {seen:,} of 600 rows" in err and "inflated" in err
    assert "--split-file F --split test" in err and err.count("\n") == 1
    evaluate(EvalJob(str(data), result.model_dir.path, split_file=split, split="test"))
    held_out = capsys.readouterr().err
    # A split was given: no advice to give one, the reason instead.
    assert f"warning: {seen - 500:,} of 100 rows" in held_out
    assert "repeats a training row's" in held_out and "--split-file" not in held_out
    evaluate(EvalJob(str(data), result.model_dir.path, split_file=split, split="train"))
    assert "evaluate held-out rows" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("rows", "batch", "epochs", "min_samples", "want"),
    [
        (18_800, 128, 8, 150_000, 8),  # the reference reviews: as many as before
        (3_900, 128, 8, 150_000, 39),  # a few thousand reviews: many more
        (3_900, 1024, 8, 150_000, 39),  # counted in examples: a large batch alike
        (100, 128, 8, 150_000, 40),  # capped
        (3_900, 128, 8, 0, 8),  # off
        (3_900, 128, 50, 150_000, 50),  # never fewer than asked for
    ],
)
def test_min_samples_gives_small_data_more_epochs(rows, batch, epochs, min_samples, want):
    from scorer.runtime.config import TrainConfig
    from scorer.train.presets import apply_min_samples

    train = TrainConfig(
        epochs=epochs, batch_size=batch, min_samples=min_samples, from_preset=("epochs",)
    )
    assert apply_min_samples(train, rows).epochs == want
    given = TrainConfig(epochs=epochs, batch_size=batch, min_samples=min_samples)
    assert apply_min_samples(given, rows).epochs == epochs  # --epochs is taken as given


def test_the_wide_path_learns_and_exports_exactly(tmp_path, reviews) -> None:
    from scorer.export.onnx_export import export_model

    result = train_model(job(tmp_path, reviews, epochs=3, wide_buckets=1024))
    state = torch.load(result.model_dir.path / "model.pt", weights_only=True)
    assert state["wide.bigram.weight"].abs().sum() > 0  # it learned
    assert result.test is not None and result.test.accuracy > 0.45
    for graph in export_model(result.model_dir.path).graphs:
        report = graph.report  # 1e-4 on the CPU provider, 1e-3 on CUDA (validated without TF32)
        assert report.worst_diff <= report.tolerance and report.argmax_mismatches == 0


@pytest.mark.parametrize(("averaged_loss", "kept"), [(0.5, True), (1.5, False)])
def test_checkpoint_averaging_is_kept_only_when_better(monkeypatch, averaged_loss, kept) -> None:
    from scorer.train import fit as fit_module

    model = torch.nn.Linear(2, 1)
    window = [{"weight": torch.full((1, 2), v), "bias": torch.zeros(1)} for v in (1.0, 3.0)]
    best = window[-1]

    def fake_predict(m, *args, **kwargs):
        # The averaged weights are 2.0: report the loss the case asks for.
        assert torch.equal(m.weight, torch.full((1, 2), 2.0))
        return fit_module.Prediction(np.zeros(1), np.zeros(1, dtype=np.int64), averaged_loss)

    monkeypatch.setattr(fit_module, "predict", fake_predict)
    got = fit_module._averaged_if_better(model, window, best, 1.0, None, None, None, None)
    assert torch.equal(got["weight"], torch.full((1, 2), 2.0 if kept else 3.0))


def test_checkpoint_averaging_runs_in_training(tmp_path, reviews, capsys) -> None:
    train_model(job(tmp_path, reviews, epochs=4, patience=4, average_epochs=3))
    assert "averaged the last" in capsys.readouterr().err


@pytest.mark.parametrize(("budget", "trials"), [(0, 1), (1e6, 3)])
def test_the_search_on_validation_keeps_the_lowest_val_loss(tmp_path, reviews, budget, trials):
    result = train_model(
        job(
            tmp_path,
            reviews,
            epochs=2,
            wide_buckets=256,
            wide_lr_scale=3.0,
            expected_loss_weight=0.5,
            search_budget=budget,
            # The blend is fitted on validation: its metrics there are the blend's.
            blend=False,
        )
    )
    metrics = json.loads((result.model_dir.path / "metrics.json").read_text())
    search = metrics["search"]
    assert len(search) == trials
    for trial in search:
        # Judged by the user's objective: cross-entropy plus 0.5 x the expected rating's MSE.
        assert trial["val_loss"] == pytest.approx(
            trial["val_nll"] + 0.5 * trial["val_rmse_expected"] ** 2, rel=1e-5
        )
        assert 0.0 <= trial["val_accuracy"] <= 1.0
    chosen = min(search, key=lambda t: t["val_loss"])
    assert metrics["val"]["accuracy"] == pytest.approx(chosen["val_accuracy"])
    assert metrics["val"]["rmse_expected"] == pytest.approx(chosen["val_rmse_expected"])
    card = ModelCard.load(result.model_dir.path / "config.json")
    assert card.train.search_variant == chosen["variant"]
    assert (card.train.wide_lr_scale == 10.0) == (chosen["variant"] == "wide_lr_scale=10.0")
    assert (card.train.token_dropout == 0.1) == (chosen["variant"] == "token_dropout=0.1")
    if trials == 3:
        assert [t["variant"] for t in search] == ["", "token_dropout=0.1", "wide_lr_scale=10.0"]


@pytest.mark.parametrize(
    ("trials", "kept"),
    [
        # NLL alone would keep the default; the expected-rating term decides.
        ([("", 0.90, 0.57), ("token_dropout=0.1", 0.81, 0.58)], "token_dropout=0.1"),
        ([("", 0.82, 0.58), ("token_dropout=0.1", 0.82, 0.57)], ""),  # a tie: the default
        ([("", 0.83, 0.59), ("a", 0.84, 0.58), ("b", 0.80, 0.60)], "b"),
        ([("", 1.00, 0.70)], ""),
    ],
)
def test_the_search_keeps_the_lowest_objective_not_the_lowest_nll(trials, kept) -> None:
    from scorer.train.search import kept_trial

    rows = [{"variant": v, "val_loss": loss, "val_nll": nll} for v, loss, nll in trials]
    assert kept_trial(rows)["variant"] == kept


def test_the_search_judges_every_candidate_by_the_users_objective(
    tmp_path, reviews, monkeypatch
) -> None:
    # A variant that trains with another expected-rating weight is still judged with the
    # user's (here the preset's: a weight moved off the preset is never searched over).
    weight = presets.DEFAULT["expected_loss_weight"]
    monkeypatch.setattr(presets, "SEARCH_VARIANTS", ({"expected_loss_weight": 2.0 * weight},))
    result = train_model(
        job(tmp_path, reviews, epochs=2, expected_loss_weight=weight, search_budget=1e6, patience=5)
    )
    search = json.loads((result.model_dir.path / "metrics.json").read_text())["search"]
    assert [t["variant"] for t in search] == ["", f"expected_loss_weight={2.0 * weight}"]
    for trial in search:
        assert trial["val_loss"] == pytest.approx(
            trial["val_nll"] + weight * trial["val_rmse_expected"] ** 2, rel=1e-5
        )


KD = "distill_temperature=2.0, distill_weight=0.5"
ALONE = "distill_weight=0.0"


@pytest.mark.parametrize(
    ("given", "variants"),
    [
        ({}, ["", KD, ALONE, "token_dropout=0.1", "wide_lr_scale=10.0"]),
        ({"token_dropout": 0.05}, ["", KD, ALONE, "wide_lr_scale=10.0"]),
        ({"token_dropout": 0.1}, ["", KD, ALONE, "wide_lr_scale=10.0"]),
        ({"wide_lr_scale": 5.0}, ["", KD, ALONE, "token_dropout=0.1"]),
        ({"distill_temperature": 3.0}, ["", ALONE, "token_dropout=0.1", "wide_lr_scale=10.0"]),
        # No teacher, no distillation to vary.
        ({"teacher_hidden_dim": 0}, ["", "token_dropout=0.1", "wide_lr_scale=10.0"]),
        ({"search_budget": 0}, [""]),
    ],
)
def test_the_search_never_overrides_or_repeats_a_users_setting(given, variants) -> None:
    from scorer.train.presets import search_candidates, settle_teacher

    train = settle_teacher(resolve(given)[2], regression=False, external=False)
    candidates = search_candidates(train)
    assert [c.search_variant for c in candidates] == variants
    for c in candidates:
        assert all(getattr(c, k) == v for k, v in given.items() if k != "teacher_hidden_dim")


@pytest.mark.parametrize(
    ("options", "tokens", "planned"),
    [
        # The reference reviews: 1.30M training tokens, 0.16M validation, 12 epochs; the
        # teacher (hidden 128) costs 2.5x a candidate (hidden 32), the refit 1.12x: two fit.
        ({}, (1_300_000, 160_000), 2),
        # Twice the data: the teacher and the refit leave no room; the default still runs.
        ({}, (2_600_000, 320_000), 1),
        # At least the default runs, however large the data.
        ({}, (50_000_000, 5_000_000), 1),
        # Without the teacher's passes, two fit.
        ({"teacher_hidden_dim": 0}, (2_600_000, 320_000), 2),
        # No budget: the default alone; no refit to count: more room.
        ({"search_budget": 0}, (1_000, 100), 1),
        ({"refit": False, "teacher_hidden_dim": 0}, (2_600_000, 320_000), 3),
    ],
)
def test_the_search_is_planned_from_the_datas_size(options, tokens, planned) -> None:
    from scorer.train.presets import search_candidates, search_plan

    model, _, train = resolve(options)
    count = len(search_candidates(train))
    assert search_plan(train, model.hidden_dim, *tokens, count) == planned


def test_the_search_trains_the_same_candidates_on_a_slow_machine(
    tmp_path, reviews, monkeypatch
) -> None:
    import time as time_module

    def search_of(name: str) -> list[str]:
        result = train_model(job(tmp_path, reviews, name=name, epochs=1, search_budget=0.05))
        metrics = json.loads((result.model_dir.path / "metrics.json").read_text())
        return [t["variant"] for t in metrics["search"]]

    normal = search_of("normal")
    # Every reading of the clock an hour after the one before: a machine 1000s of times
    # slower, as far as training can tell.
    clock = iter(range(0, 10**9, 3600))
    monkeypatch.setattr(time_module, "perf_counter", lambda: float(next(clock)))
    slowed = search_of("slowed")
    assert slowed == normal and len(normal) > 1


@pytest.mark.parametrize(
    ("options", "recipe", "expected"),
    [
        ({}, None, {"hidden_dim": 32, "teacher_hidden_dim": 128, "epochs": 12}),
        # The default before the distilled one, as a recipe.
        ({}, "hidden128", {"hidden_dim": 128, "teacher_hidden_dim": 0, "epochs": 8}),
        # A flag still wins over the recipe.
        ({"hidden_dim": 64}, "hidden128", {"hidden_dim": 64, "teacher_hidden_dim": 0}),
    ],
)
def test_a_named_recipe_changes_the_default_and_flags_win(options, recipe, expected) -> None:
    model, _, train = resolve(options, recipe=recipe)
    got = {"hidden_dim": model.hidden_dim, "teacher_hidden_dim": train.teacher_hidden_dim}
    got["epochs"] = train.epochs
    assert {k: got[k] for k in expected} == expected
    # A recipe's epochs are still the preset's: small data may get more.
    assert "epochs" in train.from_preset


@pytest.mark.parametrize(
    ("recipe", "reference", "message"),
    [("nope", False, "unknown recipe 'nope'"), ("hidden128", True, "give one")],
)
def test_a_recipe_is_refused_in_one_line_when_unknown_or_beside_reference(
    recipe, reference, message
) -> None:
    with pytest.raises(UserError, match=message):
        resolve({}, recipe=recipe, reference=reference)

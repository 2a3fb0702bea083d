"""The benchmark scripts run (tiny sizes): the device check's dry run, the host-only run and the
linear fit's layouts."""

from __future__ import annotations

import json
import re

import numpy as np
import polars as pl
import pytest

from scorer.export.onnx_export import export_model
from tests.helpers import make_model_dir, make_reviews


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    directory = make_model_dir(tmp_path_factory.mktemp("m") / "m", variant="packed")
    export_model(directory.path)
    return directory.path


def test_device_check_dry_run_reports_every_cuda_step_skipped(
    tmp_path, model, reference_data, monkeypatch
):
    from benchmarks import e2e, gpu

    if gpu.cuda_status() is None:
        pytest.skip("this host has CUDA: the device check runs for real there")
    monkeypatch.setattr(e2e, "WORK", tmp_path / "work")
    monkeypatch.setattr(gpu, "WORK", tmp_path / "work")
    report = gpu.main(
        ["--rows", "3000", "--quick", "--model-dir", str(model), "--out", str(tmp_path)]
    )
    reason = gpu.cuda_status()
    assert not [s for s, r in report.items() if isinstance(r, dict) and "error" in r]
    for step in ("tests", "training", "export"):
        assert report[step] == {"skipped": reason}
    assert report["model_alone"]["cuda"] == {"skipped": reason}
    assert report["model_alone"]["2048"]["cpu folded, all cores"] > 0
    assert report["end_to_end"]["cuda"] == {"skipped": reason}
    assert report["end_to_end"]["cpu"]["provider"] == "CPUExecutionProvider"
    saved = json.loads(next(tmp_path.glob("*-no-gpu.json")).read_text())
    assert saved["cuda"] == reason and (tmp_path / next(tmp_path.glob("*.md")).name).is_file()


def test_a_split_device_check_runs_its_steps_and_keeps_its_own_file(
    tmp_path, model, monkeypatch
) -> None:
    from benchmarks import gpu

    monkeypatch.setattr(gpu, "WORK", tmp_path / "work")
    argv = ["--steps", "model_alone", "--quick", "--model-dir", str(model), "--out", str(tmp_path)]
    report = gpu.main(argv)
    for step in ("tests", "training", "export", "end_to_end"):
        assert report[step] == {"not_run": "--steps"}
    assert report["model_alone"]["2048"]["cpu folded, all cores"] > 0
    assert [p.name.endswith("-model_alone.json") for p in tmp_path.glob("*.json")] == [True]
    with pytest.raises(SystemExit):
        gpu.main(["--steps", "tests,nothing", "--out", str(tmp_path)])


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_the_device_suite_parts_hold_every_test_file_once(count) -> None:
    from benchmarks.gpu import REPO, suite_parts

    parts = suite_parts(count)
    files = [f for part in parts for f in part]
    assert sorted(files) == sorted(
        str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
    )
    assert len(parts) == count
    sizes = [sum((REPO / f).stat().st_size for f in part) for part in parts]
    largest = max((REPO / f).stat().st_size for f in files)
    assert max(sizes) - min(sizes) <= largest  # greedy: within one file of each other


def test_host_only_run_scores_nothing_and_writes_everything(
    tmp_path, model, reference_data, monkeypatch
):
    from benchmarks import e2e

    monkeypatch.setattr(e2e, "WORK", tmp_path)
    result = e2e.host_only(model, 5000, [1, 2], repeats=1)
    assert set(result) == {"1", "2"}
    for run in result.values():
        assert run["reviews_per_s"] > 0 and set(run["stage_seconds"]) >= {
            "read",
            "tokenize",
            "write",
        }


def test_model_benchmark_measures_every_graph_of_a_wide_model(tmp_path) -> None:
    from benchmarks import model as model_bench

    directory = make_model_dir(tmp_path / "wide", variant="packed", wide_buckets=64)
    result = model_bench.run(directory.path, [8], 12, repeats=1)
    rates = result["reviews_per_s"]["8"]
    assert {model_bench.NAIVE, model_bench.SCORER, "torch eager"} <= set(rates)
    assert all(rate > 0 for rate in rates.values())


def test_quality_on_any_labelled_file_reports_model_and_baseline_and_the_search(
    tmp_path, monkeypatch
) -> None:
    from benchmarks.quality_data import dataset_quality, markdown
    from tests.helpers import make_reviews

    data = tmp_path / "mine.parquet"
    frame = make_reviews(400).rename({"Review Text": "body", "Rating": "stars"})
    frame.write_parquet(data)
    small = {"threads": 1, "epochs": 2, "embedding_dim": 8, "hidden_dim": 8}
    small |= {"search_budget": 1e6, "teacher_hidden_dim": 0}
    result = dataset_quality("mine", data, ("body",), "stars", None, [0, 1], tmp_path, small)
    rows = result["rows"]
    assert sum(rows.values()) == 400 and all(38 <= rows[s] <= 42 for s in ("val", "test"))
    assert (tmp_path / "splits" / "mine.csv").is_file()  # one split for every model and seed
    # The words carry the rating: the baseline beats the majority class (30%) clearly.
    assert result["baseline"]["test"]["accuracy"] > 0.6
    runs = result["model"]["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    for run in runs:
        # Every candidate fits this budget; the one kept has the lowest validation loss.
        assert [t["variant"] for t in run["search"]] == [
            "",
            "token_dropout=0.1",
            "wide_lr_scale=10.0",
        ]
        best = min(run["search"], key=lambda t: t["val_loss"])["variant"] or "default"
        assert run["kept"] == best
        assert run["config"]["train"]["search_variant"] == run["kept"].replace("default", "")
        assert run["marks"] in ("", "!?")  # the default chooses them on validation
        # The default refits on training + validation rows, to the kept epoch.
        assert run["refit"]["rows"] == rows["train"] + rows["val"]
        assert run["refit"]["epochs"] == run["best_epoch"]
    accuracy = [r["test"]["accuracy"] for r in runs]
    assert result["model"]["mean"]["accuracy"]["mean"] == pytest.approx(sum(accuracy) / 2)
    # The peers get what the model gets: tuned on validation, refitted on training + validation.
    assert result["baseline"]["refit"]["rows"] == rows["train"] + rows["val"]
    peer = result["fasttext"]
    chosen = f"epoch={peer['chosen']['epoch']},lr={peer['chosen']['lr']}"
    assert peer["grid"][chosen] == max(v for v in peer["grid"].values() if v is not None)
    assert 0.0 <= peer["test"]["accuracy"] <= 1.0
    table = markdown([result])
    assert f"| mine | {rows['train']}/{rows['val']}/{rows['test']} |" in table
    # The paired interval reloads the saved models: they score what training recorded.
    paired, mean = result["vs_baseline"], result["model"]["mean"]
    assert paired["rows"] == rows["test"]
    # On a CUDA host training's figures come from the GPU (TF32), these from the CPU: a near
    # tie may flip one test row's argmax in a seed.
    within = {"accuracy": 1.0 / rows["test"], "rmse_expected": 1e-3}
    for metric in ("accuracy", "rmse_expected"):
        assert paired[metric]["model"] == pytest.approx(mean[metric]["mean"], abs=within[metric])
        # Against the baseline refitted on training + validation rows, as the models are.
        refit = result["baseline"]["refit"]["test"][metric]
        assert paired[metric]["baseline"] == pytest.approx(refit)
        assert paired[metric]["low"] <= paired[metric]["high"]
    # --from-runs: the same models, taken as recorded rather than trained again...
    template = str(tmp_path / "{name}-seed{seed}")
    again = dataset_quality(
        "mine", data, ("body",), "stars", None, [0, 1], tmp_path, small, from_runs=template
    )
    assert [r["test"] for r in again["model"]["runs"]] == [r["test"] for r in runs]
    # The peer too, though models trained in this process in between (a fresh process).
    assert again["fasttext"]["grid"] == result["fasttext"]["grid"]
    assert [r["refit"] for r in again["model"]["runs"]] == [r["refit"] for r in runs]
    assert again["marks_choice"]["kept"] == runs[0]["marks"] == runs[1]["marks"]
    assert again["model"]["runs"][1]["from_run"] == str(tmp_path / "mine-seed1")
    # ...and only when each was trained with the recipe asked for.
    for other in (
        {**small, "hidden_dim": 16},
        {**small, "expected_loss_weight": 0.0},
        {**small, "marks": "?"},
    ):
        with pytest.raises(ValueError, match="differs from the recipe"):
            dataset_quality(
                "mine", data, ("body",), "stars", None, [0], tmp_path, other, from_runs=template
            )
    # The marks must be the ones the recipe's choice keeps on this data, made afresh.
    from benchmarks import quality_data

    other_marks = {"": "!?", "!?": ""}[runs[0]["marks"]]
    monkeypatch.setattr(quality_data, "marks_choice", lambda *args: {"kept": other_marks})
    with pytest.raises(ValueError, match=re.escape(f"the recipe's choice keeps {other_marks!r}")):
        dataset_quality(
            "mine", data, ("body",), "stars", None, [0], tmp_path, small, from_runs=template
        )
    monkeypatch.undo()
    # A model that no longer scores what its metrics.json recorded is refused, not compared.
    from benchmarks.significance import dataset_significance

    seed0 = tmp_path / "mine-seed0"
    metrics = json.loads((seed0 / "metrics.json").read_text())
    metrics["test"]["accuracy"] += 2.0 / rows["test"]  # two rows: more than threads explain
    (seed0 / "metrics.json").write_text(json.dumps(metrics))
    split = tmp_path / "splits" / "mine.csv"
    with pytest.raises(SystemExit, match="another model, data file or split"):
        dataset_significance("mine", data, ("body",), "stars", split, [seed0])


def test_blend_fit_reaches_the_same_optimum_with_every_layout(tmp_path, monkeypatch) -> None:
    """The benchmark behind the CSR products over nonzero-idf features: every layout fits the
    same model (its timings are figures, never asserted)."""
    from benchmarks import blend_fit, common
    from tests.helpers import write_reviews

    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    data = write_reviews(tmp_path / "reviews.csv", n=300)
    split = tmp_path / "split.csv"
    names = np.where(np.arange(300) % 5 == 0, "val", "train")
    pl.DataFrame({"row": np.arange(300), "split": names}).write_csv(split)
    argv = ["--data", str(data), "--split-file", str(split), "--repeats", "2"]
    report = blend_fit.main(argv)
    assert report["rows"] == {"train": 240, "val": 60}
    assert [len(report[layout]["runs"]) for layout in ("coo", "csr", "compact")] == [2, 2, 2]
    assert report["features_nonzero_idf"] < report["features"]
    coo, csr, compact = (report[layout]["runs"][1] for layout in ("coo", "csr", "compact"))
    for a, b, c in zip(coo, csr, compact, strict=True):
        assert a["c"] == b["c"] == c["c"]
        assert abs(a["val_ce"] - b["val_ce"]) < 1e-6 and abs(a["val_ce"] - c["val_ce"]) < 1e-6
    assert len(list((tmp_path / "results").glob("*-blend-fit.json"))) == 1


def test_device_loads_leave_room_for_the_files_every_call_sends(tmp_path) -> None:
    import subprocess

    from benchmarks.device_prepare import tree_bytes

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("runs/\n")
    (tmp_path / "tracked.bin").write_bytes(b"t" * 3000)
    subprocess.run(["git", "-C", str(tmp_path), "add", "tracked.bin"], check=True)
    (tmp_path / "untracked.bin").write_bytes(b"u" * 700)  # travels: not ignored
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "load.part").write_bytes(b"x" * 50_000)  # carried only when named
    assert tree_bytes(tmp_path) == 3000 + 700 + len("runs/\n")


def _sweep_runs(gains: dict[str, tuple[float, float]], seeds=(0, 1, 2)) -> list[dict]:
    base = {"name": "base", "rc": 0, "val_acc": 0.67, "val_rmse_exp": 0.64}
    runs = [{**base, "seed": s} for s in seeds]
    for name, (acc, rmse) in gains.items():
        runs += [
            {"name": name, "rc": 0, "seed": s, "val_acc": 0.67 + acc, "val_rmse_exp": 0.64 + rmse}
            for s in seeds
        ]
    return runs


@pytest.mark.parametrize(
    ("gains", "combined"),
    [
        # mc1td01 moves token_dropout, as td01 (better) does: skipped for the next one.
        (
            {"td01": (0.004, -0.004), "mc1td01": (0.003, -0.003), "do03": (0.002, -0.002),
             "elw1": (0.0, -0.001), "do05": (-0.01, 0.01)},
            ["td01+do03", "td01+elw1", "do03+elw1", "td01+do03+elw1"],
        ),
        ({"td01": (0.004, 0.0), "do05": (-0.01, 0.01), "lr2": (0.0, 0.0)}, []),
        ({"td01": (0.004, 0.0), "elw1": (0.001, 0.0), "do05": (-0.01, 0.01)}, ["td01+elw1"]),
    ],
)  # fmt: skip
def test_the_sweep_combines_the_settings_that_beat_the_default_on_validation(
    gains, combined
) -> None:
    from benchmarks.sweep import SETTINGS, combinations

    combos = combinations(_sweep_runs(gains), SETTINGS)
    assert list(combos) == combined
    for name, options in combos.items():
        assert options == {k: v for n in name.split("+") for k, v in SETTINGS[n].items()}


def test_the_sweep_ranks_only_settings_with_two_seeds_beside_the_default() -> None:
    from benchmarks.sweep import ranked

    runs = _sweep_runs({"td01": (0.01, 0.0)}) + _sweep_runs({"do03": (0.02, 0.0)}, seeds=(0,))
    runs.append({"name": "elw1", "rc": 1, "seed": 0})
    assert [name for _, name in ranked(runs)] == ["td01"]
    assert ranked(runs)[0][0] == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("options", "base", "same"),
    [
        ({"token_dropout": 0.2}, {}, True),  # today's default
        ({"dropout": 0.3, "expected_loss_weight": 1.0}, {}, True),
        ({"dropout": 0.5}, {}, False),
        ({"dropout": 0.3}, {"dropout": 0.4}, False),  # an earlier default, reproduced
        ({"lr": 3e-3}, {}, True),  # pinned
        ({"min_count": 1}, {}, False),
    ],
)
def test_the_sweep_leaves_out_settings_that_repeat_the_default(options, base, same) -> None:
    from benchmarks.sweep import is_default

    assert is_default(options, base) is same


@pytest.mark.parametrize(("child", "packs"), [(True, True), (False, False)])
def test_train_packing_sides_differ_only_in_packing(monkeypatch, child, packs) -> None:
    """The benchmark's "packed" child trains through pack_padded_sequence; scorer train's
    own forward-only model does not (else the A/B would time one side twice)."""
    import torch

    import scorer.cli
    import scorer.nn.model
    import scorer.train.job
    from benchmarks import train_packing
    from scorer.runtime.config import ModelConfig

    calls = []
    real_pack = scorer.nn.model.pack_padded_sequence
    monkeypatch.setattr(
        scorer.nn.model,
        "pack_padded_sequence",
        lambda *a, **k: calls.append(1) or real_pack(*a, **k),
    )
    monkeypatch.setattr(
        scorer.train.job, "ReviewLSTM", scorer.train.job.ReviewLSTM
    )  # restored after

    def fake_app(argv, prog_name):
        config = ModelConfig(
            variant="packed",
            vocab_size=20,
            num_labels=5,
            embedding_dim=4,
            hidden_dim=4,
            packed=True,
        )
        model = scorer.train.job.ReviewLSTM(config)
        model(torch.randint(1, 20, (2, 5)), torch.tensor([5, 2]), torch.tensor([5, 2]))

    monkeypatch.setattr(scorer.cli, "app", fake_app)
    if child:
        train_packing._child(["train"])
    else:
        fake_app(["train"], "scorer")
    assert bool(calls) is packs


def test_training_ab_alternates_sides_and_takes_medians(capsys) -> None:
    from benchmarks.train_child import alternate

    order = []
    seconds = {"a": iter([10.0, 30.0, 20.0]), "b": iter([5.0, 1.0, 3.0])}

    def train(side: str, epochs: int, threads: int) -> dict[str, float]:
        order.append((side, epochs, threads))
        keys = ("user_cpu_s", "system_cpu_s", "minor_faults", "peak_rss_mb", "val_loss")
        return {"epoch_seconds": next(seconds[side]), **dict.fromkeys(keys, 1.0)}

    result, medians = alternate(["a", "b"], train, ["--repeats", "3", "--threads", "1"], "t")
    assert order == [("a", 1, 1), ("b", 1, 1)] * 3
    assert medians["a"]["epoch_seconds"] == 20.0 and medians["b"]["epoch_seconds"] == 3.0
    assert [r["epoch_seconds"] for r in result["runs"]["a"]] == [10.0, 30.0, 20.0]
    assert result["threads"] == 1 and result["median"] is medians
    assert capsys.readouterr().out.count("repeat ") == 6


@pytest.mark.parametrize(
    ("given", "settings"),
    [
        (None, {}),
        (["hidden_dim=48"], {"hidden_dim": 48}),
        (["distill-weight=0.5", "blend=false"], {"distill_weight": 0.5, "blend": False}),
        (["marks=!?"], {"marks": "!?"}),  # not JSON: taken as text
    ],
)
def test_quality_takes_recipe_settings_for_every_training(given, settings) -> None:
    import argparse

    from benchmarks.quality import settings as parse

    assert parse(argparse.Namespace(set=given)) == settings


def test_the_incremental_benchmark_changes_what_it_says(tmp_path) -> None:
    from benchmarks.incremental import tonight
    from scorer.engines.local.run import RunJob, run_scoring

    last = tmp_path / "last.parquet"
    make_reviews(3000, seed=8).rename({"id": "review_id"}).write_parquet(last)
    now = tmp_path / "now.parquet"
    changes = tonight(last, now, new=0.02, edited=0.03, deleted=0.01, seed=0)
    rows = pl.read_parquet(now)
    assert len(rows) == 3000 - changes["deleted"] + changes["new"] and changes["new"] == 60
    assert rows["review_id"].is_unique().all() and changes["edited"] > 0
    previous = tmp_path / "last.scores.parquet"
    run_scoring(RunJob(str(last), out=previous, id_column="review_id", quiet=True))
    out = tmp_path / "now.scores.parquet"
    run_scoring(RunJob(str(now), out=out, id_column="review_id", since=previous, quiet=True))
    counts = json.loads(out.with_name(out.name + ".manifest.json").read_text())["incremental"]
    assert (counts["edited_rows"], counts["new_rows"], counts["deleted_rows"]) == (
        changes["edited"],
        changes["new"],
        changes["deleted"],
    )

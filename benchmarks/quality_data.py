"""Quality on any labelled file: the default `scorer train` model over seeds against the
TF-IDF + logistic-regression baseline, on the same split (benchmarks.quality --data).

Without a split file, a stratified 80/10/10 split with seed 0 is drawn once and written
beside the results (``runs/bench/splits/NAME.csv``), so every model and seed sees the same
rows. Settings are chosen on validation only; test rows are scored once per model.

With ``from_runs`` (``--from-runs TEMPLATE``) the seeds' models are the ones already trained
in those directories, not trained again: each must have been trained on this data file and
split with what the default recipe resolves to now for its seed (``recorded_run`` checks), and
the paired interval reloads each one and refuses it unless it still scores what its
metrics.json recorded.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.baseline import tfidf_logistic_regression
from benchmarks.significance import on_test_rows
from scorer.io.labelled import (
    read_labels,
    read_split_file,
    read_table,
    read_texts,
    stratified_split,
)

METRICS = ("accuracy", "macro_f1", "rmse", "rmse_expected")


def split_for(name: str, labels_index: np.ndarray, split_file: Path | None, work: Path) -> Path:
    if split_file is not None:
        return split_file
    path = work / "splits" / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    split = stratified_split(labels_index, seed=0)
    pl.DataFrame({"row": np.arange(len(split)), "split": split}).write_csv(path)
    return path


def summarize(runs: Sequence[dict]) -> dict[str, dict[str, float]]:
    out = {}
    for metric in METRICS:
        values = [r["test"][metric] for r in runs]
        out[metric] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values),
            "max": max(values),
        }
    seconds = [r["train_seconds"] for r in runs]
    out["train_seconds"] = {"mean": statistics.fmean(seconds), "max": max(seconds)}
    return out


def dataset_quality(
    name: str,
    data: Path,
    text_columns: tuple[str, ...],
    label_column: str,
    split_file: Path | None,
    seeds: Sequence[int],
    work: Path,
    options: dict | None = None,
    from_runs: str | None = None,
) -> dict[str, object]:
    from scorer.train.job import TrainJob, train_model
    from scorer.train.presets import resolve

    frame = read_table(data)
    texts = read_texts(frame, text_columns, data)
    labels = read_labels(frame, label_column, data)
    split_path = split_for(name, labels.index, split_file, work)
    split = read_split_file(split_path, len(texts))
    ratings = np.asarray(labels.values)[labels.index]
    lengths = texts.str.split(" ").list.len()
    result: dict[str, object] = {
        "name": name,
        "data": str(data),
        "rows": {s: int((split == s).sum()) for s in ("train", "val", "test")},
        "words": {"mean": float(lengths.mean()), "median": float(lengths.median())},
        "labels": {f"{v:g}": int((ratings == v).sum()) for v in labels.values},
        "split_file": str(split_path),
    }
    baseline = tfidf_logistic_regression(
        texts.to_list(), ratings, split, labels.values, keep_test_rows=True
    )
    baseline.pop("test_rows")
    # Models refit on training + validation rows: so is the baseline they are judged against.
    baseline_rows = baseline["refit"].pop("test_rows")
    print(
        f"{name}: baseline C={baseline['C']} test {_line(baseline['test'])}; refit "
        f"{_line(baseline['refit']['test'])}",
        flush=True,
    )
    peer = fasttext_peer(texts, labels, split)
    if peer is not None:
        print(f"{name}: fastText {peer['chosen']} test {_line(peer['test'])}", flush=True)
    runs = []
    dirs = [work / f"{name}-seed{seed}" for seed in seeds]
    # Made afresh for recorded runs (which must hold the marks it keeps), and recorded.
    choice = marks_choice(*resolve(options or {}), texts, labels, split) if from_runs else None
    if choice is not None:
        result["marks_choice"] = choice
    kept_marks = choice["kept"] if choice is not None else None
    for i, seed in enumerate(seeds):
        model, tok, train = resolve({**(options or {}), "seed": seed})
        if from_runs:
            dirs[i] = Path(from_runs.format(name=name, seed=seed))
            runs.append(
                recorded_run(dirs[i], seed, model, tok, train, data, result["rows"], kept_marks)
            )
            print(f"{name}: seed {seed} test {_line(runs[-1]['test'])} (recorded)", flush=True)
            continue
        trained = train_model(
            TrainJob(data, work / f"{name}-seed{seed}", model, tok, train, text_columns,
                     label_column, split_path, overwrite=True)
        )  # fmt: skip
        assert trained.test is not None
        # What the search on validation tried, and which candidate it kept.
        kept = trained.model_dir.card.train
        recorded = json.loads((trained.model_dir.path / "metrics.json").read_text())
        runs.append(
            {
                "seed": seed,
                "test": trained.test.to_dict(),
                "val": trained.val.to_dict(),
                "best_epoch": trained.best_epoch,
                "train_seconds": trained.seconds,
                "search": recorded["search"],
                # The final model's training on training + validation rows (None: no refit).
                "refit": recorded.get("refit"),
                "kept": kept.search_variant or "default",
                "marks": trained.model_dir.card.tokenizer.marks,
                "config": {
                    "model": dataclasses.asdict(model),
                    "tokenizer": dataclasses.asdict(tok),
                    # The candidate the search kept, as config.json holds it.
                    "train": dataclasses.asdict(kept),
                },
            }
        )
        print(
            f"{name}: seed {seed} test {_line(runs[-1]['test'])} ({trained.seconds:.0f}s)",
            flush=True,
        )
    model_summary = summarize(runs)
    result["baseline"] = baseline
    result["fasttext"] = peer
    result["model"] = {"runs": runs, "mean": model_summary}
    result["beats_baseline"] = beats(model_summary, baseline["refit"]["test"])
    # How much of that verdict the test rows' own sampling could undo.
    # Fresh runs may have trained on a GPU (a warning then); recorded ones must still agree.
    result["vs_baseline"] = on_test_rows(
        texts, labels, split, dirs, baseline_rows, strict=bool(from_runs)
    )
    return result


def beats(summary: dict, peer_test: dict) -> dict[str, bool]:
    """Whether the model's seed means are at least as good as a peer's test figures."""
    return {
        "accuracy": summary["accuracy"]["mean"] >= peer_test["accuracy"],
        "rmse_expected": summary["rmse_expected"]["mean"] <= peer_test["rmse_expected"],
    }


def fasttext_peer(texts: pl.Series, labels, split: np.ndarray) -> dict | None:
    """fastText tuned and refitted as the model is (``benchmarks.fasttext_peer``); None where
    the fasttext module is not installed (the `dev` extra has it)."""
    try:
        import fasttext  # noqa: F401
    except ImportError:
        return None
    from benchmarks.fasttext_peer import fasttext_quality_isolated

    peer = fasttext_quality_isolated(texts.to_list(), labels.index, split, labels.values)
    peer.pop("test_rows")
    return peer


# Not the recipe: where and how fast it ran, and the batch sources' wording.
_RUNTIME = {"threads", "device", "precision", "batch_source"}


def marks_choice(model, tok, train, texts: pl.Series, labels, split: np.ndarray) -> dict | None:
    """The recipe's choice of marks (``scorer.train.marks_choice``) made on this data and split, as
    metrics.json records it; None where the recipe makes none. No seed enters it."""
    if not tok.marks_choice or model.regression:
        return None
    from scorer.nn.device import choose_runtime
    from scorer.train.fit import Objective
    from scorer.train.marks_choice import settle_tokenizer

    rows = {name: np.flatnonzero(split == name) for name in ("train", "val")}
    runtime = choose_runtime("cpu", "fp32")
    labelled = dataclasses.replace(model, num_labels=len(labels.values))
    judge = Objective.of(labelled, train, labels.values, runtime.device)
    return settle_tokenizer(tok, texts, rows, labels, runtime, judge)[1]


def recorded_run(
    directory: Path,
    seed: int,
    model,
    tok,
    train,
    data: Path,
    rows: dict[str, int],
    marks_kept: str | None = None,
) -> dict:
    """A seed's run from a model directory trained earlier, as ``dataset_quality`` records a
    fresh one. Refused unless it was trained on ``data`` with ``rows`` as its split and its
    config is the recipe ``model, tok, train`` resolve to (the candidate its search kept),
    apart from what training fits to the data and the device; where the recipe chooses the
    marks, with ``marks_kept``, the ones its choice keeps."""
    from scorer.io.files import file_sha256
    from scorer.runtime.config import ModelCard
    from scorer.train.presets import apply_batch_preset, search_candidates, settle_teacher

    card = ModelCard.load(directory / "config.json")
    metrics = json.loads((directory / "metrics.json").read_text())
    refuse = f"{directory}: not a run of the recipe asked for:"
    if card.training.get("data_sha256") != file_sha256(data) or metrics.get("rows") != rows:
        raise ValueError(f"{refuse} trained on another data file or split")
    if metrics.get("test") is None:
        raise ValueError(f"{refuse} no test metrics recorded")
    # The recipe as training settles it (the distillation settings of no teacher, if none).
    train = settle_teacher(train, model.regression, external=False)
    kept = {c.search_variant: c for c in search_candidates(train)}.get(card.train.search_variant)
    if kept is None:
        raise ValueError(f"{refuse} search variant {card.train.search_variant!r} unknown now")
    # What the presets left to the device and the data, as training settled it for this run.
    device = str(metrics.get("device", "cpu")).split(":")[0]
    kept = apply_batch_preset(kept, device, rows["train"])
    fitted = {"max_len", "tail", "fit_length"} if tok.fit_length else set()
    if tok.marks_choice:
        # The recipe chooses the marks on validation: the run must hold the ones the choice
        # keeps on this data (``marks_kept``), whether it chose them or was given them.
        if card.tokenizer.marks != marks_kept:
            raise ValueError(
                f"{refuse} trained with marks {card.tokenizer.marks!r}; the recipe's choice "
                f"keeps {marks_kept!r} on this data"
            )
        fitted |= {"marks", "marks_choice"}
    skip = {
        "model": {"vocab_size", "num_labels", "linear_buckets"},
        "tokenizer": fitted,
        "train": _RUNTIME | ({"epochs"} if "epochs" in kept.from_preset else set()),
    }
    if tok.fit_length and card.tokenizer.max_len > tok.max_len:
        raise ValueError(f"{refuse} max_len {card.tokenizer.max_len} over {tok.max_len}")
    for part, want, got in (
        ("model", model, card.model),
        ("tokenizer", tok, card.tokenizer),
        ("train", kept, card.train),
    ):
        want, got = dataclasses.asdict(want), dataclasses.asdict(got)
        differ = sorted(k for k in want if k not in skip[part] and want[k] != got[k])
        if differ:
            raise ValueError(
                f"{refuse} {part} differs from the recipe in {differ}: "
                f"{[(want[k], got[k]) for k in differ]}"
            )
    return {
        "seed": seed,
        "test": metrics["test"],
        "val": metrics["val"],
        "best_epoch": metrics["best_epoch"],
        "train_seconds": metrics["seconds"],
        "search": metrics["search"],
        "refit": metrics.get("refit"),
        "kept": card.train.search_variant or "default",
        "marks": card.tokenizer.marks,
        # As a fresh run records it: the recipe resolved, the candidate kept.
        "config": {
            "model": dataclasses.asdict(model),
            "tokenizer": dataclasses.asdict(tok),
            "train": dataclasses.asdict(card.train),
        },
        "from_run": str(directory),
    }


def _line(metrics: dict) -> str:
    return " ".join(f"{k} {metrics[k]:.4f}" for k in METRICS)


def markdown(results: Sequence[dict]) -> str:
    lines = [
        "| dataset | rows (train/val/test) | words (mean) | model: accuracy | baseline "
        "(refit) | fastText | model: RMSE (expected) | baseline (refit) | fastText | "
        "macro-F1 model / baseline | RMSE model / baseline | train s (mean) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m, b = r["model"]["mean"], r["baseline"]["refit"]["test"]
        f = (r.get("fasttext") or {}).get("test")
        rows, seeds = r["rows"], len(r["model"]["runs"])

        def spread(metric: str, m=m, seeds=seeds) -> str:
            value = m[metric]
            if seeds == 1:  # no spread to show from one seed
                return f"{value['mean']:.3f} (1 seed)"
            return f"{value['mean']:.3f} ± {value['std']:.3f}"

        lines.append(
            f"| {r['name']} | {rows['train']:,}/{rows['val']:,}/{rows['test']:,} | "
            f"{r['words']['mean']:.0f} | {spread('accuracy')} | "
            f"{b['accuracy']:.3f} | {_peer(f, 'accuracy')} | {spread('rmse_expected')} | "
            f"{b['rmse_expected']:.3f} | {_peer(f, 'rmse_expected')} | "
            f"{m['macro_f1']['mean']:.3f} / {b['macro_f1']:.3f} | "
            f"{m['rmse']['mean']:.3f} / {b['rmse']:.3f} | {m['train_seconds']['mean']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _peer(test: dict | None, metric: str) -> str:
    return f"{test[metric]:.3f}" if test else "n/a"


def merge(parts: Sequence[dict], name: str) -> dict:
    """One dataset's result from runs made separately (one seed each, in parallel)."""
    first = parts[0]
    runs = sorted((r for p in parts for r in p["model"]["runs"]), key=lambda r: r["seed"])
    summary = summarize(runs)
    baseline = first["baseline"]
    return {
        # A part's paired interval covers only its own seeds: benchmarks.significance
        # recomputes it over the merged seeds' models.
        **{
            k: v
            for k, v in first.items()
            if k not in ("model", "baseline", "beats_baseline", "vs_baseline")
        },
        "name": name,
        "baseline": baseline,
        "model": {"runs": runs, "mean": summary},
        "beats_baseline": beats(summary, baseline["refit"]["test"]),
    }

"""Quality against cost: smaller students of the default recipe, on the reference reviews'
validation rows, and what each costs end to end per core.

    python -m benchmarks.students train [--only NAME ...] [--seeds 0] [--teacher DIR]
    python -m benchmarks.students speed [--only NAME ...] [--rows 1000000] [--repeats 2]
    python -m benchmarks.students report [--plot]

``train``: each student of ``STUDENTS`` is the default recipe with a change or two, trained by
`scorer train`'s own code with no search and no refit (the map compares one training each,
on validation), exported (fp32 and int8); its validation rows are then scored through `scorer
eval`'s path with each graph. ``--teacher DIR`` trains the ``+kd`` students too: the same
with the teacher's probabilities (``scorer train --teacher``; the weight and temperature
of ``KD``, chosen on validation by ``--kd-grid``). Records go to ``runs/bench/students/``.

``speed``: `scorer run` on the same N real reviews (``benchmarks.corpus``) pinned to one core
(one worker, one inference thread), every student and precision in turn, round after round;
fastText and TF-IDF + LR scoring the same file end to end on the same core in the same
rounds (each trained on the training rows with the settings its tuning chose).

``report``: one results file (``benchmarks/results/<date>-<host>-students.json``) from the
records, and with ``--plot`` validation accuracy and expected-rating RMSE against reviews/s
per core, the Pareto front marked.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.common import DEFAULT_REVIEWS, DEFAULT_SPLIT, REPO, machine, save
from benchmarks.e2e import corpus, measure

WORK = REPO / "runs" / "bench" / "students"
TEXT_COLUMNS = ("Title", "Review Text")

# Each student: the default recipe with these changes (presets.DEFAULT for the rest).
STUDENTS: dict[str, dict[str, object]] = {
    "h128": {"hidden_dim": 128},
    "h128-e12": {"hidden_dim": 128, "epochs": 12},
    "h96": {"hidden_dim": 96},
    "h64": {"hidden_dim": 64},
    "h48": {"hidden_dim": 48},
    "h40": {"hidden_dim": 40},
    "h32": {"hidden_dim": 32},
    "h24": {"hidden_dim": 24},
    "h16": {"hidden_dim": 16},
    "h64-e50": {"hidden_dim": 64, "embedding_dim": 50},
    "h48-e50": {"hidden_dim": 48, "embedding_dim": 50},
    "h32-e50": {"hidden_dim": 32, "embedding_dim": 50},
    # Fixed caps against the fitted length (120 on these reviews: their 95th percentile).
    "h64-len60": {"hidden_dim": 64, "max_len": 60, "tail": 15, "fit_length": False},
    "h64-len80": {"hidden_dim": 64, "max_len": 80, "tail": 20, "fit_length": False},
    "h48-len80": {"hidden_dim": 48, "max_len": 80, "tail": 20, "fit_length": False},
    "h32-len60": {"hidden_dim": 32, "max_len": 60, "tail": 15, "fit_length": False},
    "h32-len80": {"hidden_dim": 32, "max_len": 80, "tail": 20, "fit_length": False},
    "h32-no-wide": {"hidden_dim": 32, "wide_buckets": 0},
    "h32-no-blend": {"hidden_dim": 32, "blend": False},
    "h32-lstm-only": {"hidden_dim": 32, "wide_buckets": 0, "blend": False},
    # The last state alone, without the max over the outputs.
    "h48-last": {"hidden_dim": 48, "pooling": "last"},
    "h32-last": {"hidden_dim": 32, "pooling": "last"},
    "h64-no-wide": {"hidden_dim": 64, "wide_buckets": 0},
    "h64-no-blend": {"hidden_dim": 64, "blend": False},
    "h64-lstm-only": {"hidden_dim": 64, "wide_buckets": 0, "blend": False},
}
# The distilled students' settings ("NAME+kd"), and others tried on validation
# ("NAME+kd@TAG").
KD = {"distill_weight": 0.5, "distill_temperature": 2.0}
KD_GRID: dict[str, dict[str, object]] = {
    "t1w5": {"distill_weight": 0.5, "distill_temperature": 1.0},
    "t2w8": {"distill_weight": 0.8, "distill_temperature": 2.0},
    "t4w5": {"distill_weight": 0.5, "distill_temperature": 4.0},
    "t4w8": {"distill_weight": 0.8, "distill_temperature": 4.0},
    "t8w5": {"distill_weight": 0.5, "distill_temperature": 8.0},
    "t2w5e12": {**KD, "epochs": 12},
    "t4w8e12": {"distill_weight": 0.8, "distill_temperature": 4.0, "epochs": 12},
    "t4w8e16": {"distill_weight": 0.8, "distill_temperature": 4.0, "epochs": 16},
}


# Settings of a student trained without a teacher ("NAME@TAG").
TAGS: dict[str, dict[str, object]] = {"e12": {"epochs": 12}}


def changes_of(name: str) -> dict[str, object]:
    """A student's changes to the default recipe, from its name: ``BASE``, ``BASE@TAG``,
    ``BASE+kd`` or ``BASE+kd@TAG``."""
    base, _, kd = name.partition("+kd")
    base, _, tag = base.partition("@")
    changes = dict(STUDENTS[base])
    if tag:
        changes.update(TAGS[tag])
    if name.endswith("+kd"):
        changes.update(KD)
    elif kd.startswith("@"):
        changes.update(KD_GRID[kd[1:]])
    return changes


PRECISIONS = ("fp32", "int8")

# Settings that change what a student learns but not its graph's shape: students that differ
# only in these score at the same speed, so one of them stands for all in ``speed``.
TRAINING_ONLY = frozenset({"epochs", "distill_weight", "distill_temperature"})


def graph_of(name: str) -> str:
    """The settings that shape a student's graph, as a key shared by same-cost students."""
    changes = changes_of(name)
    return json.dumps({k: v for k, v in changes.items() if k not in TRAINING_ONLY}, sort_keys=True)


def speed_of(name: str, precision: str, speeds: dict[str, dict]) -> dict | None:
    """A student's measured speed: its own, else that of a student with the same graph."""
    if f"{name}/{precision}" in speeds:
        return speeds[f"{name}/{precision}"]
    graph = graph_of(name)
    for measured, rate in speeds.items():
        other, _, p = measured.rpartition("/")
        if p == precision and _student(other) and graph_of(other) == graph:
            return rate
    return None


def _student(name: str) -> bool:
    """Whether a contender's name is a student's (not a peer's or another model dir's)."""
    try:
        changes_of(name)
    except KeyError:
        return False
    return True


def _record_path(name: str, seed: int) -> Path:
    return WORK / f"{name}-s{seed}.json"


def train_student(
    name: str, changes: dict, seed: int, teacher: Path | None, threads: int
) -> dict[str, object]:
    """One student trained, exported and scored on the validation rows; its record."""
    from scorer.train.job import TrainJob, train_model
    from scorer.train.presets import resolve

    # The teacher of a +kd student is the one given (the default teacher's size, trained on
    # the training rows); the others learn from the ratings alone.
    options = {
        "teacher_hidden_dim": 0,
        **changes,
        "seed": seed,
        "search_budget": 0,
        "refit": False,
        "threads": threads,
    }
    model, tok, train = resolve(options)
    out = WORK / f"{name}-s{seed}"
    result = train_model(
        TrainJob(
            DEFAULT_REVIEWS,
            out,
            model,
            tok,
            train,
            TEXT_COLUMNS,
            split_file=DEFAULT_SPLIT,
            teacher=teacher,
            overwrite=True,
        )
    )
    return record_student(name, changes, seed, out, result.seconds, threads)


def record_student(
    name: str, changes: dict, seed: int, out: Path, seconds: float, threads: int
) -> dict[str, object]:
    """A trained student's record: exported (fp32 and int8), its validation rows scored
    through `scorer eval`'s path with each graph."""
    from scorer.engines.local.evaluate import EvalJob, evaluate
    from scorer.export.onnx_export import export_model

    export_model(out, int8=True)
    metrics = json.loads((out / "metrics.json").read_text())
    card = json.loads((out / "config.json").read_text())
    val = {}
    for precision in PRECISIONS:
        scored = evaluate(
            EvalJob(
                str(DEFAULT_REVIEWS),
                out,
                precision=precision,
                split_file=DEFAULT_SPLIT,
                split="val",
                threads=threads,
            )
        )
        val[precision] = {
            k: scored.to_dict()[k] for k in ("accuracy", "macro_f1", "rmse", "rmse_expected")
        }
    search = metrics["search"][0]
    record = {
        "name": name,
        "seed": seed,
        "changes": changes,
        "teacher": metrics.get("teacher"),
        "model": card["model"],
        "tokenizer": card["tokenizer"],
        "val_loss": metrics["blend"]["val_loss"]["blend"] if metrics.get("blend") else None,
        "val_loss_lstm": search["val_loss"],
        "val": val,
        "best_epoch": metrics["best_epoch"],
        "train_seconds": seconds,
        "graph_bytes": {p.name: p.stat().st_size for p in sorted(out.glob("*.onnx"))},
        "lstm_madds_per_token": lstm_madds(card["model"]),
        "model_dir": str(out.relative_to(REPO)),
    }
    _record_path(name, seed).write_text(json.dumps(record, indent=2) + "\n")
    return record


def lstm_madds(model: dict) -> int:
    """Multiply-adds per token of the exported CPU graph's recurrence (the embedding is
    folded into a table, so only the recurrent product remains per step)."""
    directions = 2 if model["bidirectional"] else 1
    hidden = model["hidden_dim"]
    return 4 * hidden * hidden * directions * model["layers"]


def speed(
    models: dict[str, Path],
    rows: int,
    repeats: int,
    cores: Sequence[int],
    precisions: Sequence[str] = PRECISIONS,
    int8_for: Sequence[str] | None = None,
) -> dict:
    """Every model (at each precision; int8 only for ``int8_for`` when given) and the two
    peers scoring the same ``rows`` reviews end to end on ``cores`` (one worker and one
    inference thread per core), in rounds."""
    path = corpus(rows)
    n = str(len(cores))
    contenders: dict[str, list[str]] = {}
    for name, model_dir in models.items():
        for precision in precisions:
            if precision == "int8" and int8_for is not None and name not in int8_for:
                continue
            contenders[f"{name}/{precision}"] = [
                sys.executable, "-m", "scorer", "run", str(path), "--model", str(model_dir),
                "--out", str(WORK / "scored.parquet"), "--overwrite", "--quiet", "--threads", n,
                "--workers", n, "--precision", precision, "--device", "cpu",
            ]  # fmt: skip
    peers = peer_models()
    # fastText's prediction and scikit-learn's sparse products run on one thread whatever
    # the cores: they are measured on one core, the figure a per-core comparison needs.
    if len(cores) == 1:
        contenders["fastText"] = [
            sys.executable, "-m", "benchmarks.fasttext_peer", "score", str(peers["fastText"]),
            str(path), str(WORK / "fasttext.parquet"),
        ]  # fmt: skip
        contenders["TF-IDF + LR"] = [
            sys.executable, "-m", "benchmarks.baseline", "score", str(peers["TF-IDF + LR"]),
            str(path), str(WORK / "baseline.parquet"),
        ]  # fmt: skip
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    for round_ in range(repeats):
        for name, command in contenders.items():
            seconds, rss, _ = _measure_pinned(command, set(cores))
            record = {"seconds": seconds, "peak_rss_mb": rss}
            if "--model" in command:
                manifest = json.loads((WORK / "scored.parquet.manifest.json").read_text())
                record["stage_seconds"] = manifest["stage_seconds"]
            runs[name].append(record)
            print(
                f"round {round_ + 1}: {name:28s} {rows / seconds:9,.0f} reviews/s on "
                f"{len(cores)} core(s) ({seconds:.1f}s, peak RSS {rss:.0f} MB)",
                flush=True,
            )
    return {
        name: {
            "runs": items,
            "reviews_per_s": rows / float(np.median([r["seconds"] for r in items])),
            "reviews_per_s_per_core": rows
            / float(np.median([r["seconds"] for r in items]))
            / len(cores),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in items),
        }
        for name, items in runs.items()
    }


def _measure_pinned(command: list[str], cores: set[int]) -> tuple[float, float, str]:
    import subprocess

    real = subprocess.Popen

    def popen(*args, **kwargs):
        return real(*args, preexec_fn=lambda: os.sched_setaffinity(0, cores), **kwargs)

    subprocess.Popen = popen  # measure() starts the child through subprocess.Popen
    try:
        return measure(command)
    finally:
        subprocess.Popen = real


def peer_models() -> dict[str, Path]:
    """fastText and TF-IDF + LR trained on the reference reviews' training rows with the
    settings their tuning on validation chose (``benchmarks.quality`` tunes them the same
    way); saved once."""
    from benchmarks.baseline import fit_pipeline
    from benchmarks.fasttext_peer import fasttext_quality, train_for_speed
    from scorer.io.labelled import read_labels, read_split_file, read_table, read_texts

    paths = {"fastText": WORK / "fasttext.bin", "TF-IDF + LR": WORK / "tfidf-lr.pkl"}
    if all(p.is_file() for p in paths.values()):
        return paths
    frame = read_table(DEFAULT_REVIEWS)
    texts = read_texts(frame, TEXT_COLUMNS, DEFAULT_REVIEWS).to_list()
    labels = read_labels(frame, "Rating", DEFAULT_REVIEWS)
    split = read_split_file(DEFAULT_SPLIT, len(texts))
    train_rows = np.flatnonzero(split == "train")
    chosen = fasttext_quality(texts, labels.index, split, labels.values)["chosen"]
    model = train_for_speed(texts, labels.index, train_rows, chosen["epoch"], chosen["lr"])
    model.save_model(str(paths["fastText"]))
    fit_pipeline(texts, labels, split, paths["TF-IDF + LR"])
    return paths


def peer_validation() -> dict[str, dict]:
    """The peers' validation accuracy and expected-rating RMSE, trained on the training
    rows with the settings their tuning chose (comparable with the students')."""
    from benchmarks.baseline import tfidf_logistic_regression
    from benchmarks.fasttext_peer import fasttext_quality_isolated
    from scorer.io.labelled import read_labels, read_split_file, read_table, read_texts

    frame = read_table(DEFAULT_REVIEWS)
    texts = read_texts(frame, TEXT_COLUMNS, DEFAULT_REVIEWS).to_list()
    labels = read_labels(frame, "Rating", DEFAULT_REVIEWS)
    split = read_split_file(DEFAULT_SPLIT, len(texts))
    ratings = np.asarray(labels.values)[labels.index]
    baseline = tfidf_logistic_regression(texts, ratings, split, labels.values)
    peer = fasttext_quality_isolated(texts, labels.index, split, labels.values)
    return {
        "TF-IDF + LR": {"C": baseline["C"], "val": baseline["val"]},
        "fastText": {"chosen": peer["chosen"], "val": peer["val"]},
    }


def pareto(points: dict[str, tuple[float, float]]) -> list[str]:
    """The names no other point beats on both speed and accuracy (higher is better on
    both), fastest first."""
    front = [
        name
        for name, (speed_a, acc_a) in points.items()
        if not any(
            (speed_b >= speed_a and acc_b >= acc_a) and (speed_b > speed_a or acc_b > acc_a)
            for other, (speed_b, acc_b) in points.items()
            if other != name
        )
    ]
    return sorted(front, key=lambda n: -points[n][0])


def drawn(records: list[dict]) -> list[dict]:
    """The students drawn on the map: for each graph, with and without a teacher, the one
    whose validation loss is lowest (the others differ only in training settings)."""
    best: dict[tuple[str, bool], dict] = {}
    for r in records:
        if r["seed"] != 0:
            continue
        key = (graph_of(r["name"]), "+kd" in r["name"])
        loss = r["val_loss"] if r["val_loss"] is not None else r["val_loss_lstm"]
        kept = best.get(key)
        if kept is None or loss < (kept["val_loss"] or kept["val_loss_lstm"]):
            best[key] = r
    return sorted(best.values(), key=lambda r: r["name"])


def report(plot: bool) -> Path:
    records = [json.loads(p.read_text()) for p in sorted(WORK.glob("*-s*.json"))]
    speeds = {}
    speed_file = WORK / "speed.json"
    if speed_file.is_file():
        speeds = json.loads(speed_file.read_text())
    peers_file = WORK / "peers.json"
    peers = json.loads(peers_file.read_text()) if peers_file.is_file() else {}
    # name -> (reviews/s per core, validation accuracy, validation expected-rating RMSE)
    points: dict[str, tuple[float, float, float]] = {}
    for r in drawn(records):
        for precision in PRECISIONS:
            rate = speed_of(r["name"], precision, speeds.get("contenders", {}))
            if rate:
                v = r["val"][precision]
                points[f"{r['name']}/{precision}"] = (
                    rate["reviews_per_s_per_core"],
                    v["accuracy"],
                    v["rmse_expected"],
                )
    for peer, facts in peers.items():
        rate = speeds.get("contenders", {}).get(peer)
        if rate:
            v = facts["val"]
            points[peer] = (rate["reviews_per_s_per_core"], v["accuracy"], v["rmse_expected"])
    front = pareto({n: (s, acc) for n, (s, acc, _) in points.items()})
    front_rmse = pareto({n: (s, -rmse) for n, (s, _, rmse) in points.items()})
    payload = {
        "machine": speeds.get("machine", machine()),
        "rows": speeds.get("rows"),
        "students": records,
        "peers": peers,
        "speed": speeds.get("contenders", {}),
        "drawn": [r["name"] for r in drawn(records)],
        # The bundled models (before and now) and fastText, in their own interleaved runs.
        "headline": {
            p.stem: json.loads(p.read_text()) for p in sorted(WORK.glob("headline*.json"))
        },
        "pareto_front": front,
        "pareto_front_rmse": front_rmse,
    }
    path = save("students", payload)
    if plot:
        draw(points, {"accuracy": front, "RMSE": front_rmse}, path.with_suffix(".png"))
    _print_table(payload, front)
    return path


def _print_table(payload: dict, front: list[str]) -> None:
    speeds = payload["speed"]
    for r in sorted(payload["students"], key=lambda r: (r["name"], r["seed"])):
        for precision in PRECISIONS:
            key = f"{r['name']}/{precision}"
            rate = (speed_of(r["name"], precision, speeds) or {}).get("reviews_per_s_per_core")
            v = r["val"][precision]
            print(
                f"{key:24s} s{r['seed']} val acc {v['accuracy']:.4f} RMSE(exp) "
                f"{v['rmse_expected']:.4f}  "
                + (f"{rate:9,.0f} reviews/s/core" if rate else " " * 23)
                + ("  (front)" if key in front else "")
            )
    for peer, facts in payload["peers"].items():
        rate = speeds.get(peer, {}).get("reviews_per_s_per_core")
        v = facts["val"]
        print(
            f"{peer:24s}    val acc {v['accuracy']:.4f} RMSE(exp) {v['rmse_expected']:.4f}  "
            + (f"{rate:9,.0f} reviews/s/core" if rate else "")
        )


def draw(
    points: dict[str, tuple[float, float, float]], fronts: dict[str, list[str]], path: Path
) -> None:
    """Validation accuracy and expected-rating RMSE against reviews/s per core, each panel
    with its own Pareto front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    for ax, front, column in zip(axes, fronts.values(), (1, 2), strict=True):
        for name, point in points.items():
            rate, y = point[0], point[column]
            peer = "/" not in name
            ax.scatter(
                rate,
                y,
                marker="s" if peer else ("o" if name.endswith("fp32") else "^"),
                color="tab:red" if peer else ("tab:green" if name in front else "tab:blue"),
                zorder=3,
            )
            ax.annotate(name.replace("/fp32", ""), (rate, y), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
        line = sorted((points[n][0], points[n][column]) for n in front)
        ax.plot(*zip(*line, strict=True), "g--", lw=1)
        ax.set(
            xscale="log",
            xlabel="scorer run end to end, reviews/s on one core (log)",
            ylabel=f"validation {'accuracy' if column == 1 else 'expected-rating RMSE'}",
        )
        ax.grid(alpha=0.3)
    axes[0].set_title("accuracy (green: Pareto front; ^ int8; squares: peers)")
    axes[1].set_title("expected-rating RMSE, lower is better (green: its Pareto front)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train")
    train.add_argument("--only", nargs="*", default=None)
    train.add_argument("--seeds", type=int, nargs="+", default=[0])
    train.add_argument("--teacher", type=Path, default=None)
    train.add_argument("--threads", type=int, default=2)
    train.add_argument("--skip-done", action="store_true")
    train.add_argument("--peers", action="store_true", help="also tune the peers")
    run = sub.add_parser("speed")
    run.add_argument("--only", nargs="*", default=None)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--rows", type=int, default=1_000_000)
    run.add_argument("--repeats", type=int, default=2)
    run.add_argument("--cores", type=int, nargs="+", default=[0], help="CPUs to pin to")
    run.add_argument(
        "--model", action="append", default=[], metavar="NAME=DIR", help="another model dir"
    )
    run.add_argument("--precisions", nargs="+", default=list(PRECISIONS))
    run.add_argument("--int8-for", nargs="*", default=None, help="int8 for these models only")
    run.add_argument("--save-as", default="speed", help="record name under runs/bench/students")
    rec = sub.add_parser("record", help="record a model trained elsewhere as a student")
    rec.add_argument("name")
    rec.add_argument("model_dir", type=Path)
    rec.add_argument("--seed", type=int, default=0)
    rep = sub.add_parser("report")
    rep.add_argument("--plot", action="store_true")
    args = parser.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    if args.command == "train":
        if args.peers:
            (WORK / "peers.json").write_text(json.dumps(peer_validation(), indent=2) + "\n")
        names = args.only or list(STUDENTS)
        for seed in args.seeds:
            for name in names:
                changes = changes_of(name)
                if args.skip_done and _record_path(name, seed).is_file():
                    continue
                teacher = args.teacher if "+kd" in name else None
                record = train_student(name, changes, seed, teacher, args.threads)
                v = record["val"]["fp32"]
                print(
                    f"{name} s{seed}: val acc {v['accuracy']:.4f} RMSE(exp) "
                    f"{v['rmse_expected']:.4f} loss {record['val_loss']}",
                    flush=True,
                )
    elif args.command == "speed":
        names = (
            args.only
            if args.only is not None
            else sorted({p.stem.rsplit("-s", 1)[0] for p in WORK.glob(f"*-s{args.seed}.json")})
        )
        models = {name: WORK / f"{name}-s{args.seed}" for name in names}
        models |= dict(item.split("=", 1) for item in args.model)
        contenders = speed(
            models, args.rows, args.repeats, args.cores, args.precisions, args.int8_for
        )
        payload = {
            "machine": machine(),
            "rows": args.rows,
            "cores": args.cores,
            "command": " ".join(sys.argv),
            "contenders": contenders,
        }
        (WORK / f"{args.save_as}.json").write_text(json.dumps(payload, indent=2) + "\n")
    elif args.command == "record":
        import shutil

        out = WORK / f"{args.name}-s{args.seed}"
        if out.resolve() != args.model_dir.resolve():
            shutil.copytree(args.model_dir, out, dirs_exist_ok=True)
        seconds = json.loads((out / "metrics.json").read_text())["seconds"]
        record = record_student(args.name, changes_of(args.name), args.seed, out, seconds, 2)
        print(f"{args.name}: val {record['val']['fp32']}")
    else:
        print(f"saved {report(args.plot)}")


if __name__ == "__main__":
    main()

"""A seeded sweep of `scorer train` settings, judged on validation, with the CPU recipe's batch.

    python -m benchmarks.sweep --device cuda --workers 6 --deadline 530 [--base JSON]
    python -m benchmarks.sweep --summarize runs.jsonl [--save-as NAME]

Each entry of ``SETTINGS`` (one change to the default; one that only repeats it is left out)
trains once per seed, ``--workers`` runs at a time, while the first part of the deadline
(``--phase1``) lasts. Then the three settings
that beat the default most on validation (mean accuracy gain plus mean expected-rating RMSE
drop, paired by seed), each moving different options, are tried in pairs and all together.
Only validation picks; the test metrics are recorded beside, never used to choose.

Every run pins batch 128 and lr 3e-3 (the CPU default, so a sweep on a CUDA host, where one
run takes half a minute, speaks for the CPU recipe), fp32, no search, no blend and no refit (both
run after training, the same for every setting). ``--base`` replaces default options
for every run (how an earlier sweep's default is reproduced after the default moved).
A line per finished run goes to ``<out>/sweep.jsonl``, then a summary to ``sweep.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.common import DEFAULT_REVIEWS, DEFAULT_SPLIT, machine, save

SETTINGS: dict[str, dict[str, Any]] = {
    "base": {},
    "td01": {"token_dropout": 0.1},
    "mc1td01": {"min_count": 1, "token_dropout": 0.1},
    "do05": {"dropout": 0.5},
    "elw1": {"expected_loss_weight": 1.0},
    "ls005": {"label_smoothing": 0.05},
    "lr2": {"lr": 2e-3},
    "avg5": {"average_epochs": 5},
    "wd05": {"weight_decay": 0.05},
    "td005": {"token_dropout": 0.05},
    "do03": {"dropout": 0.3},
    "elw025": {"expected_loss_weight": 0.25},
    "lr45": {"lr": 4.5e-3},
    "wls1": {"wide_lr_scale": 1.0},
    "wls10": {"wide_lr_scale": 10.0},
    "avg1": {"average_epochs": 1},
    "wd0": {"weight_decay": 0.0},
    "emb64": {"embedding_dim": 64},
    "h96": {"hidden_dim": 96},
    "poollast": {"pooling": "last"},
    "td015": {"token_dropout": 0.15},
    "e10": {"epochs": 10},
    "wb0": {"wide_buckets": 0},
}
PINNED = {"batch_size": 128, "lr": 3e-3, "precision": "fp32", "search_budget": 0}


def is_default(options: dict[str, Any], base: dict[str, Any]) -> bool:
    """Whether a setting only repeats the default (with ``base`` and ``PINNED`` applied): after
    the default moves to a sweep's pick, its parts are no change to try again."""
    from dataclasses import asdict

    from scorer.train.presets import resolve

    configs = resolve(dict(base))
    current = {k: v for c in configs for k, v in asdict(c).items()} | PINNED | base
    return all(current.get(k) == v for k, v in options.items())


def flags(options: dict[str, Any]) -> list[str]:
    return [a for k, v in options.items() for a in (f"--{k.replace('_', '-')}", str(v))]


def ranked(records: list[dict]) -> list[tuple[float, str]]:
    """Settings by mean validation accuracy gain plus RMSE drop against ``base``, per seed."""
    runs: dict[str, dict[int, dict]] = {}
    for r in records:
        if r["rc"] == 0:
            runs.setdefault(r["name"], {})[r["seed"]] = r
    base = runs.get("base", {})
    scores = []
    for name, by_seed in runs.items():
        seeds = sorted(set(by_seed) & set(base))
        if name == "base" or len(seeds) < 2:
            continue
        gain = statistics.mean(
            (by_seed[s]["val_acc"] - base[s]["val_acc"])
            - (by_seed[s]["val_rmse_exp"] - base[s]["val_rmse_exp"])
            for s in seeds
        )
        scores.append((gain, name))
    return sorted(scores, reverse=True)


def combinations(records: list[dict], settings: dict[str, dict]) -> dict[str, dict]:
    """Pairs, and the triple, of the three best settings that gain and move different options."""
    top: list[str] = []
    moved: set[str] = set()
    for gain, name in ranked(records):
        if gain > 0 and not set(settings[name]) & moved and len(top) < 3:
            top.append(name)
            moved |= set(settings[name])
    groups = [[a, b] for i, a in enumerate(top) for b in top[i + 1 :]]
    groups += [top] if len(top) == 3 else []
    return {"+".join(g): {k: v for n in g for k, v in settings[n].items()} for g in groups}


def summary(records: list[dict]) -> list[dict]:
    keys = ("val_acc", "val_rmse_exp", "val_nll", "test_acc", "test_rmse_exp", "wall")
    by: dict[str, list[dict]] = {}
    for r in records:
        if r["rc"] == 0:
            by.setdefault(r["name"], []).append(r)
    rows = [
        {"name": n, "seeds": len(rs), **{k: statistics.mean(r[k] for r in rs) for k in keys}}
        for n, rs in by.items()
    ]
    return sorted(rows, key=lambda r: r["val_rmse_exp"] - r["val_acc"])


class Sweep:
    """Runs ``scorer train`` per (setting, seed) into ``out``, a JSON line each."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.start = time.time()
        self.lock = threading.Lock()
        self.walls: list[float] = []
        self.log = Path(args.out) / "sweep.jsonl"

    def run(self, jobs: list[tuple[str, dict, int]], until: float) -> None:
        with ThreadPoolExecutor(self.args.workers) as pool:
            list(pool.map(lambda job: self.one(*job, until), jobs))

    def one(self, name: str, options: dict, seed: int, until: float) -> None:
        elapsed = time.time() - self.start
        typical = statistics.median(self.walls) if self.walls else 0.0
        if elapsed + typical > until:
            return  # would not end in time
        model = Path(self.args.models) / f"{name}-s{seed}"
        command = [
            sys.executable, "-m", "scorer", "train", str(self.args.data),
            "--split-file", str(self.args.split), "--out", str(model), "--overwrite",
            "--seed", str(seed), "--device", self.args.device, "--threads", "2", "--no-blend",
            "--no-refit",
            *flags({**PINNED, **self.args.base, **options}),
        ]  # fmt: skip
        began = time.time()
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=self.args.deadline + 30 - elapsed
            )
        except subprocess.TimeoutExpired:
            return
        record: dict[str, Any] = {"name": name, "options": options, "seed": seed}
        record |= {"rc": done.returncode, "wall": round(time.time() - began, 1)}
        if done.returncode == 0:
            metrics = json.loads((model / "metrics.json").read_text())
            record |= {
                "val_loss": metrics["search"][0]["val_loss"],
                "val_nll": metrics["search"][0]["val_nll"],
                "val_acc": metrics["val"]["accuracy"],
                "val_rmse_exp": metrics["val"]["rmse_expected"],
                "test_acc": metrics["test"]["accuracy"],
                "test_rmse_exp": metrics["test"]["rmse_expected"],
                "best_epoch": metrics["best_epoch"],
            }
        else:
            record["error"] = done.stderr[-1500:]
        with self.lock:
            self.walls.append(record["wall"])
            with self.log.open("a") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps({k: v for k, v in record.items() if k != "error"}), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_REVIEWS)
    parser.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--deadline", type=float, default=530.0, help="seconds for it all")
    parser.add_argument("--phase1", type=float, default=0.72, help="its share for single changes")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--only", default="", help="comma-separated SETTINGS names")
    parser.add_argument("--base", type=json.loads, default={}, help="JSON options for every run")
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"))
    parser.add_argument("--models", type=Path, default=Path("/tmp/sweep-models"))
    parser.add_argument("--summarize", type=Path, help="a sweep.jsonl to summarize, no training")
    parser.add_argument("--save-as", default="", help="also save the summary as a results file")
    parser.add_argument("--machine", default="", help="with --summarize: where the runs ran")
    args = parser.parse_args(argv)
    if args.summarize:
        records = [json.loads(line) for line in args.summarize.read_text().splitlines()]
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        args.models.mkdir(parents=True, exist_ok=True)
        sweep = Sweep(args)
        seeds = [int(s) for s in args.seeds.split(",")]
        names = args.only.split(",") if args.only else list(SETTINGS)
        same = [n for n in names if n != "base" and is_default(SETTINGS[n], args.base)]
        if same:
            print(f"left out, the default already: {', '.join(same)}", flush=True)
        names = [n for n in names if n not in same]
        sweep.run([(n, SETTINGS[n], s) for n in names for s in seeds], args.deadline * args.phase1)
        records = [json.loads(line) for line in sweep.log.read_text().splitlines()]
        combos = combinations(records, SETTINGS)
        print(f"combined: {list(combos)}", flush=True)
        sweep.run([(n, o, s) for n, o in combos.items() for s in seeds], args.deadline)
        records = [json.loads(line) for line in sweep.log.read_text().splitlines()]
    rows = summary(records)
    print(f"{'setting':24s} seeds val_acc val_rmse_exp val_nll | test_acc test_rmse_exp")
    for r in rows:
        print(
            f"{r['name']:24s} {r['seeds']:5d} {r['val_acc']:.4f} {r['val_rmse_exp']:.4f} "
            f"{r['val_nll']:.4f} | {r['test_acc']:.4f} {r['test_rmse_exp']:.4f}"
        )
    payload = {
        "machine": args.machine or machine(),
        "base": args.base,
        "pinned": PINNED,
        "ranked": ranked(records),
        "summary": rows,
        "runs": records,
    }
    if not args.summarize:
        (args.out / "sweep.json").write_text(json.dumps(payload, indent=2) + "\n")
    if args.save_as:
        print(f"saved {save(args.save_as, payload)}")


if __name__ == "__main__":
    main()

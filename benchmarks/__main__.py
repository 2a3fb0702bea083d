"""The whole suite: `python -m benchmarks [--quick]`.

Writes benchmarks/results/<date>-<host>.json and .md (the README's performance section is
copied from the .md) plus the scaling plot. --quick (under 5 minutes here) uses a 2-epoch
reference model, 100k rows end to end, and skips the 1M+ rows and the quality runs.
"""

from __future__ import annotations

import argparse
import json
import socket
from datetime import date
from pathlib import Path

from benchmarks import common, e2e, model, quality, text
from benchmarks.common import RESULTS, machine
from scorer.export.onnx_export import export_model

REFERENCE_MODEL = quality.WORK / "ref-packed"


def reference_model(quick: bool) -> Path:
    """The reference-size packed model (embedding 50, hidden 50, max_len 70)."""
    if not (REFERENCE_MODEL / "model.pt").is_file():
        quality.WORK.mkdir(parents=True, exist_ok=True)
        options = {"variant": "packed", **({"epochs": 2} if quick else {})}
        quality.train(REFERENCE_MODEL.name, options, reference=True)
    if not (REFERENCE_MODEL / "model.onnx").is_file():
        export_model(REFERENCE_MODEL)
    return REFERENCE_MODEL


def markdown(results: dict) -> str:
    lines = [
        f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, "
        f"GPU: {results['machine']['gpu'] or 'none'}",
        "",
    ]
    t = results["text"]
    cores = t["threads"]
    lines += [
        "| text pipeline (23,486 reviews) | reviews/s |",
        "|---|---|",
        f"| reference: clean + spaCy + dict lookups, 1 thread | "
        f"{t['reviews_per_s']['reference']:,.0f} |",
        f"| `Vocab.encode`, 1 thread | {t['reviews_per_s']['fast, 1 thread']:,.0f} "
        f"({t['speedup_per_thread']:.1f}x per thread) |",
        f"| `Vocab.encode`, {cores} threads | "
        f"{t['reviews_per_s'][f'fast, {cores} threads']:,.0f} "
        f"({t['speedup_all_cores']:.1f}x, {cores} threads against 1) |",
        f"| token parity | {t['parity']['dataset_reviews_mismatched']} mismatches in 23,486 "
        f"reviews, {t['parity']['generated_mismatched']} in "
        f"{t['parity']['generated_strings']:,} generated strings |",
        "",
    ]
    m = results["model"]
    lines += [
        "| model alone (E50/H50, length 70, 2 threads) | batch | reviews/s |",
        "|---|---|---|",
    ]
    for batch, rates in m["reviews_per_s"].items():
        for name, rate in rates.items():
            lines.append(f"| {name} | {batch} | {rate:,.0f} |")
    ceiling = m["flop_ceiling_reviews_per_s"]
    lines += [
        f"| FLOP ceiling ({m['gemm_gflops']:.0f} GFLOP/s GEMM) | - | {ceiling['unfolded']:,.0f} "
        f"unfolded, {ceiling['folded']:,.0f} folded |",
        "",
    ]
    lines += [
        "| end to end | rows | reviews/s | peak RSS MB | read / tokenize / infer / write s |",
        "|---|---|---|---|---|",
    ]
    for rows, sides in results["e2e"].get("end_to_end", {}).items():
        for name in ("seed-style path", "scorer run"):
            s = sides[name]
            stages = " / ".join(
                f"{s['stage_seconds'].get(k, 0):.1f}"
                for k in ("read", "tokenize", "infer", "write")
            )
            lines.append(
                f"| {name} | {int(rows):,} | {s['reviews_per_s']:,.0f} | "
                f"{s['peak_rss_mb']:.0f} | {stages} |"
            )
        lines.append(f"| speedup | {int(rows):,} | {sides['speedup']:.1f}x | | |")
    for rows, s in results["e2e"].get("scaling", {}).items():
        lines.append(
            f"| scaling: scorer run | {int(rows):,} | {s['reviews_per_s']:,.0f} | "
            f"{s['peak_rss_mb']:.0f} | |"
        )
    if "quality" in results:
        lines += [
            "",
            "| model (test split) | accuracy | macro-F1 | RMSE | MAE | RMSE(expected) |",
            "|---|---|---|---|---|---|",
        ]
        for name, run in results["quality"]["models"].items():
            q = run["test"]
            lines.append(
                f"| {name} | {q['accuracy']:.3f} | {q['macro_f1']:.3f} | "
                f"{q['rmse']:.3f} | {q['mae']:.3f} | {q['rmse_expected']:.3f} |"
            )
        lines.append("| reference article (its own validation) | 0.64 | - | 0.817 | - | - |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        common.RUN_TAG = "-quick"
    model_dir = reference_model(args.quick)
    results: dict = {"machine": machine(), "quick": args.quick}
    results["text"] = text.main(["--repeats", "3" if args.quick else "5"])
    results["model"] = model.main(
        [
            "--model-dir",
            str(model_dir),
            "--batches",
            *(["4096"] if args.quick else ["256", "1024", "4096"]),
        ]
    )
    rows = ["100000"] if args.quick else ["100000", "1000000"]
    scaling = ["100000", "400000"] if args.quick else ["100000", "1000000", "4000000", "8000000"]
    results["e2e"] = e2e.main(
        ["--model-dir", str(model_dir), "--rows", *rows, "--scaling", *scaling]
    )
    if not args.quick:
        results["quality"] = quality.main(["--default", "--int8", str(model_dir)])
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    stem = RESULTS / f"{date.today().isoformat()}-{socket.gethostname()}{suffix}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    print(f"saved {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()

"""The bundled default model: trained from the reference reviews by ``make model``.

    python -m scorer.train.bundle --data REVIEWS.csv --split-file SPLIT.csv \
        [--out scorer/default_model]

Trains the default ``scorer train`` model with a fixed seed and thread count, exports it for
both providers, and keeps only what scoring reads (config.json, vocab.json, the graphs, the
training-row fingerprint, the validation profile) plus its quality (metrics.json, without
timings). On the same CPU the result is the same bytes: the seed, the thread count and the
data fix every number, and nothing time- or host-dependent is written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from scorer.runtime.model_dir import CONFIG, FINGERPRINT, VOCAB, bundled_model_dir
from scorer.runtime.profile import PROFILE_FILE

SEED = 0
THREADS = 2  # fixed: torch's CPU results depend on the thread count
KEPT_METRICS = ("val", "test", "best_epoch", "rows", "precision", "batch")


def build_bundled_model(
    data: Path,
    split_file: Path | None,
    out: Path,
    *,
    text_columns: tuple[str, ...] = ("Title", "Review Text"),
    label_column: str = "Rating",
    options: dict[str, Any] | None = None,
) -> Path:
    """Train, export and trim the default model into ``out`` (replaced atomically)."""
    from scorer.export.onnx_export import export_model
    from scorer.io.files import atomic_write_text, make_temp_dir, publish_dir
    from scorer.train.job import TrainJob, train_model
    from scorer.train.presets import resolve

    given = {"seed": SEED, "threads": THREADS, "device": "cpu", **(options or {})}
    model, tokenizer, train = resolve(given)
    with tempfile.TemporaryDirectory() as work:
        trained = Path(work) / "model"
        result = train_model(
            TrainJob(data, trained, model, tokenizer, train, text_columns, label_column, split_file)
        )
        export_model(trained)
        config = json.loads((trained / CONFIG).read_text())
        out = Path(out)
        target = make_temp_dir(out)
        try:
            for name in (CONFIG, VOCAB, FINGERPRINT, PROFILE_FILE, *config["graphs"]):
                shutil.copyfile(trained / name, target / name)
            metrics = json.loads((trained / "metrics.json").read_text())
            kept = {k: metrics[k] for k in KEPT_METRICS if k in metrics}
            atomic_write_text(target / "metrics.json", json.dumps(kept, indent=2) + "\n")
            publish_dir(target, out)
        finally:
            shutil.rmtree(target, ignore_errors=True)
    print(f"bundled model -> {out} ({_size_mb(out):.1f} MB); {result.line()}")
    return out


def write_validation_profile(
    model_dir: Path,
    data: Path,
    split_file: Path,
    *,
    text_columns: tuple[str, ...] = ("Title", "Review Text"),
) -> Path:
    """The validation rows' profile of an exported model, scored by its ONNX graph: for a
    model directory written before training kept profiles (training writes the same
    numbers from the torch model; its graph agrees with it to float rounding)."""
    import polars as pl

    from scorer.engines.local.profile import profile_table
    from scorer.io.files import atomic_write_text
    from scorer.io.labelled import read_split_file, read_table, read_texts
    from scorer.runtime.scoring import open_model

    frame = read_table(data, text=text_columns)
    split = read_split_file(split_file, len(frame))
    texts = read_texts(frame.filter(pl.Series(split == "val")), text_columns, data)
    model = open_model(Path(model_dir), "cpu", "fp32", THREADS)
    profile = profile_table(pl.DataFrame({"text": texts}).to_arrow(), ("text",), model)
    path = Path(model_dir) / PROFILE_FILE
    atomic_write_text(path, json.dumps(profile.to_dict(), indent=1) + "\n")
    return path


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in Path(path).iterdir()) / 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split-file", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=bundled_model_dir())
    parser.add_argument(
        "--profile-only",
        action="store_true",
        help="only (re)write the validation profile of the model in --out",
    )
    args = parser.parse_args(argv)
    if args.profile_only:
        if args.split_file is None:
            parser.error("--profile-only needs --split-file (the validation rows)")
        print(f"profile -> {write_validation_profile(args.out, args.data, args.split_file)}")
        return
    build_bundled_model(args.data, args.split_file, args.out)


if __name__ == "__main__":
    main()

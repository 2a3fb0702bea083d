"""Model quality on the reference test split: the reference recipe's four variants, our
default model, and the int8 export's quality next to fp32; or, with --data, the default model
over seeds against the TF-IDF + logistic-regression baseline on any labelled file.

    python -m benchmarks.quality [--variants fixed packed vectors regression] [--default]
    python -m benchmarks.quality --data FILE --text-col COL --label-col COL [--split-file F]
        [--seeds 0 1 2] [--name NAME]     (several --data: one result per file, same order)

The vectors variant needs pre-trained vectors; with no GloVe file here, the benchmark makes
50-d vectors from the training rows only (PPMI of a +-2 word window, randomized SVD) and
passes them as a GloVe-format file, as a user would pass theirs.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from benchmarks.common import DEFAULT_REVIEWS, DEFAULT_SPLIT, REPO, machine, save
from scorer.io.labelled import DEFAULT_TEXT_COLUMNS, read_split_file, read_table, read_texts
from scorer.text.vocab import Vocab
from scorer.train.checkpoint import load_model
from scorer.train.job import TrainJob, train_model
from scorer.train.presets import resolve

WORK = REPO / "runs" / "bench"
REFERENCE_ARTICLE = {"accuracy": 0.64, "rmse": 0.817, "regression_rmse": 0.799}


def make_vectors(reviews: Path, split: Path, out: Path, dim: int = 50, seed: int = 0) -> Path:
    texts = read_texts(read_table(reviews), DEFAULT_TEXT_COLUMNS, reviews)
    texts = texts.filter(read_split_file(split, len(texts)) == "train")
    vocab = Vocab.build(texts, min_count=2, keep_whitespace=False)
    ids = vocab.encode(texts, max_len=200, keep_whitespace=False).ids.astype(np.int64)
    size = len(vocab)
    counts = np.zeros(size * size, dtype=np.float32)
    for offset in (1, 2):
        left, right = ids[:, :-offset].ravel(), ids[:, offset:].ravel()
        keep = (left > 1) & (right > 1)
        np.add.at(counts, left[keep] * size + right[keep], 1.0)
        np.add.at(counts, right[keep] * size + left[keep], 1.0)
    matrix = counts.reshape(size, size)
    total = matrix.sum()
    row = matrix.sum(1, keepdims=True)
    col = matrix.sum(0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(matrix * total / (row @ col))
    ppmi = np.nan_to_num(np.maximum(pmi, 0), posinf=0.0).astype(np.float32)
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(ppmi @ rng.normal(size=(size, dim + 20)).astype(np.float32))
    u, s, _ = np.linalg.svd(basis.T @ ppmi, full_matrices=False)
    vectors = (basis @ u[:, :dim]) * np.sqrt(s[:dim])
    vectors /= np.abs(vectors).max()
    lines = [
        f"{token} " + " ".join(f"{x:.5f}" for x in vectors[i])
        for i, token in enumerate(vocab.tokens)
        if i > 1 and token.strip() == token and " " not in token
    ]
    out.write_text("\n".join(lines) + "\n")
    return out


def train(name: str, options: dict, *, reference: bool, vectors: Path | None = None) -> dict:
    model, tok, train_cfg = resolve(options, reference=reference)
    job = TrainJob(
        data=DEFAULT_REVIEWS,
        out=WORK / name,
        model=model,
        tokenizer=tok,
        train=train_cfg,
        text_columns=DEFAULT_TEXT_COLUMNS,
        split_file=DEFAULT_SPLIT,
        vectors=vectors,
        overwrite=True,
    )
    result = train_model(job)
    print(result.line(), flush=True)
    assert result.test is not None
    return {
        "config": {
            "model": dataclasses.asdict(model),
            "tokenizer": dataclasses.asdict(tok),
            "train": dataclasses.asdict(train_cfg),
        },
        "test": result.test.to_dict(),
        "val": result.val.to_dict(),
        "best_epoch": result.best_epoch,
        "train_seconds": result.seconds,
        "model_dir": str(result.model_dir.path),
    }


def int8_quality(model_dir: Path) -> dict:
    """fp32 against int8 on the test rows, through `scorer eval`'s path."""
    import polars as pl

    from scorer.engines.local.evaluate import EvalJob, evaluate
    from scorer.engines.local.run import RunJob, run_scoring
    from scorer.export.onnx_export import export_model

    export_model(model_dir, int8=True)
    frame = read_table(DEFAULT_REVIEWS)
    test = frame.filter(pl.Series(read_split_file(DEFAULT_SPLIT, len(frame)) == "test"))
    path = WORK / "test-rows.parquet"
    test.write_parquet(path)
    out, scores = {}, {}
    for precision in ("fp32", "int8"):
        out[precision] = evaluate(EvalJob(str(path), model_dir, precision=precision)).to_dict()
        target = WORK / f"test-{precision}.parquet"
        run_scoring(
            RunJob(str(path), model_dir, target, precision=precision, overwrite=True, quiet=True)
        )
        scores[precision] = pl.read_parquet(target)["predicted_rating"].to_numpy()
    out["argmax_agreement"] = float((scores["fp32"] == scores["int8"]).mean())
    out["accuracy_delta"] = out["int8"]["accuracy"] - out["fp32"]["accuracy"]
    out["rmse_expected_delta"] = out["int8"]["rmse_expected"] - out["fp32"]["rmse_expected"]
    return out


def onnx_parity(model_dir: Path) -> dict[str, object]:
    """PyTorch (pack_padded_sequence) against the exported ONNX model on every test review."""
    import onnxruntime as ort
    import torch

    from scorer.export.graph import ReferenceOutputs
    from scorer.export.onnx_export import export_model
    from scorer.runtime.model_dir import ModelDir

    path = export_model(model_dir).path
    directory = ModelDir.open(model_dir)
    card = directory.card
    texts = read_texts(read_table(DEFAULT_REVIEWS), card.text_columns, DEFAULT_REVIEWS)
    texts = texts.filter(read_split_file(DEFAULT_SPLIT, len(texts)) == "test")
    tok = card.tokenizer
    enc = directory.vocab().encode(
        texts,
        max_len=tok.max_len,
        keep_whitespace=tok.keep_whitespace,
        tail=tok.tail,
        marks=tok.marks,
    )
    reference = ReferenceOutputs(load_model(directory), card.labels)
    with torch.inference_mode():
        want, _ = reference(
            torch.from_numpy(enc.ids), torch.from_numpy(enc.lengths.astype(np.int64))
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got, _ = session.run(None, {"input_ids": enc.ids, "lengths": enc.lengths.astype(np.int64)})
    want = want.numpy()
    return {
        "rows": len(texts),
        "max_abs_diff": float(np.abs(got - want).max()),
        "argmax_mismatches": int((got.argmax(1) != want.argmax(1)).sum()),
    }


def merge_results(args) -> dict[str, object]:
    """--merge FILES --name A B ...: dataset A's runs from every file that has it, and so on."""
    import json

    from benchmarks.quality_data import markdown, merge

    loaded = [json.loads(path.read_text()) for path in args.merge]
    results = []
    for name in args.name:
        parts = [d for doc in loaded for d in doc["datasets"] if d["name"].split("-s")[0] == name]
        results.append(merge(parts, name))
    table = markdown(results)
    print(table)
    payload = {"machine": loaded[0]["machine"], "merged_from": [p.name for p in args.merge]}
    name = args.save_as or f"quality-{'-'.join(args.name)}"
    path = save(name, {**payload, "datasets": results})
    path.with_suffix(".md").write_text(table)
    print(f"saved {path}")
    return {"datasets": results}


def dataset_options(args, i: int, data: Path) -> tuple[str, Path | None, tuple[str, ...], str]:
    """The i-th ``--data`` file's name, split file (``None``: none given, one is drawn), text
    columns and label column; the reference reviews default to their own columns and split."""
    reference = data.resolve() == DEFAULT_REVIEWS.resolve()
    name = args.name[i] if args.name else data.stem
    splits = args.split_file or []
    split = splits[i] if i < len(splits) else (DEFAULT_SPLIT if reference else None)
    text = tuple(args.text_col or (DEFAULT_TEXT_COLUMNS if reference else ("text",)))
    label = args.label_col or ("Rating" if reference else "rating")
    return name, split, text, label


def settings(args) -> dict[str, object]:
    """``--set KEY=VALUE`` (a JSON value): recipe settings that every training takes over the
    default's, e.g. ``--set hidden_dim=48``."""
    import json

    parsed = {}
    for item in args.set or []:
        key, _, value = item.partition("=")
        try:
            parsed[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key.replace("-", "_")] = value
    return parsed


def data_quality(args) -> dict[str, object]:
    """--data mode: each file's default model over seeds against the baseline."""
    from benchmarks.quality_data import dataset_quality, markdown

    results = []
    for i, data in enumerate(args.data):
        name, split, text, label = dataset_options(args, i, data)
        options = {**({"threads": args.threads} if args.threads else {}), **settings(args)}
        results.append(
            dataset_quality(
                name, data, text, label, split, args.seeds, WORK, options, args.from_runs
            )
        )
    table = markdown(results)
    print(table)
    names = "-".join(r["name"] for r in results)
    payload = {"machine": machine(), "seeds": args.seeds, "datasets": results}
    if settings(args):
        payload["settings"] = settings(args)
    if args.from_runs:
        payload["from_runs"] = args.from_runs
    path = save(args.save_as or f"quality-{names}", payload)
    path.with_suffix(".md").write_text(table)
    print(f"saved {path}")
    return {"datasets": results}


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variants", nargs="*", default=["fixed", "packed", "vectors", "regression"]
    )
    parser.add_argument("--default", action="store_true", help="also train the default model")
    parser.add_argument("--int8", type=Path, help="model dir whose int8 export to check")
    parser.add_argument("--data", type=Path, nargs="*", default=None, help="labelled files")
    parser.add_argument("--text-col", action="append", default=None)
    parser.add_argument("--label-col", default=None)
    parser.add_argument("--split-file", type=Path, nargs="*", default=None)
    parser.add_argument("--name", nargs="*", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=None, help="torch threads per training")
    parser.add_argument(
        "--set", action="append", default=None, metavar="KEY=VALUE",
        help="--data: a recipe setting for every training (a JSON value), e.g. hidden_dim=48",
    )  # fmt: skip
    parser.add_argument(
        "--from-runs",
        default=None,
        help="--data: take each seed's model from this directory template ({name}, {seed}), "
        "trained earlier with the default recipe (checked), instead of training it",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="*",
        default=None,
        help="combine these results files (per-seed runs of datasets) into one, by --name",
    )
    parser.add_argument(
        "--save-as", default=None, help="--merge, --data: the results file's name (no date)"
    )
    parser.add_argument(
        "--parity-only",
        nargs="*",
        type=Path,
        default=None,
        help="only check ONNX parity of these trained model dirs",
    )
    args = parser.parse_args(argv)
    if args.from_runs and not args.data:
        parser.error("--from-runs needs --data")
    WORK.mkdir(parents=True, exist_ok=True)
    if args.merge:
        return merge_results(args)
    if args.data:
        return data_quality(args)
    if args.parity_only is not None:
        parity = {str(d): onnx_parity(d) for d in args.parity_only}
        for name, p in parity.items():
            print(
                f"{name}: ONNX vs PyTorch on {p['rows']} test reviews: max |diff| "
                f"{p['max_abs_diff']:.1e}, {p['argmax_mismatches']} argmax differences"
            )
        print(f"saved {save('parity', {'machine': machine(), 'parity': parity})}")
        return {"parity": parity}
    result: dict[str, object] = {"machine": machine(), "reference_article": REFERENCE_ARTICLE}
    runs = {}
    for variant in args.variants:
        vectors = None
        if variant == "vectors":
            vectors = make_vectors(DEFAULT_REVIEWS, DEFAULT_SPLIT, WORK / "vectors-50d.txt")
        runs[f"reference {variant}"] = train(
            f"ref-{variant}", {"variant": variant}, reference=True, vectors=vectors
        )
    if args.default:
        runs["default"] = train("default", {}, reference=False)
    for run in runs.values():
        run["onnx_parity"] = onnx_parity(Path(run["model_dir"]))
        print(
            f"{run['model_dir']}: ONNX vs PyTorch on {run['onnx_parity']['rows']} test reviews:"
            f" max |diff| {run['onnx_parity']['max_abs_diff']:.1e}, "
            f"{run['onnx_parity']['argmax_mismatches']} argmax differences"
        )
    result["models"] = runs
    for name, run in runs.items():
        t = run["test"]
        print(
            f"{name:22s} acc {t['accuracy']:.4f}  F1 {t['macro_f1']:.4f}  RMSE {t['rmse']:.4f}  "
            f"MAE {t['mae']:.4f}  RMSE(exp) {t['rmse_expected']:.4f}  "
            f"({run['train_seconds']:.0f}s, best epoch {run['best_epoch']})"
        )
    if args.int8:
        result["int8"] = int8_quality(args.int8)
        q = result["int8"]
        print(
            f"int8 vs fp32: accuracy {q['accuracy_delta']:+.4f}, RMSE(exp) "
            f"{q['rmse_expected_delta']:+.4f}, argmax agreement {q['argmax_agreement']:.2%}"
        )
    print(f"saved {save('quality', result)}")
    return result


if __name__ == "__main__":
    main()

"""How long `scorer train --blend` spends fitting its linear model, by sparse layout.

    python -m benchmarks.blend_fit [--data REVIEWS.csv --split-file SPLIT.csv] [--threads 1]

Builds the training rows' features as `scorer train --blend` does (the default tokenizer
fitted to the training reviews, the vocabulary, then ``scorer.train.ngram_fit``'s positions, idf and
design matrix), then fits the logistic regression for every C of ``C_GRID``, warm-started: with
COO products, with CSR ones (``scorer.train.ngram_fit.products``), and with CSR ones over
the features of
nonzero idf only (``design(..., compact=True)``, what `scorer train` fits), and reports each
fit's seconds and the validation objective it reached; the layouts interleaved, ``--repeats``
times, the median kept. Saves ``-blend-fit.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import DEFAULT_REVIEWS, DEFAULT_SPLIT, machine, median, save
from scorer.io.labelled import (
    DEFAULT_TEXT_COLUMNS,
    read_labels,
    read_split_file,
    read_table,
    read_texts,
)
from scorer.nn.ngrams import positions, word_mask
from scorer.text.vocab import Vocab
from scorer.train.blend import C_GRID
from scorer.train.ngram_fit import BUCKETS, design, fit_idf, fit_logistic, products
from scorer.train.presets import fit_lengths, resolve


def features(data: Path, split_file: Path) -> tuple[dict, dict, dict, int]:
    frame = read_table(data)
    texts = read_texts(frame, DEFAULT_TEXT_COLUMNS, data)
    labels = read_labels(frame, "Rating", data)
    split = read_split_file(split_file, len(frame))
    rows = {name: np.flatnonzero(split == name) for name in ("train", "val")}
    _, tok, _ = resolve({})
    tok = fit_lengths(tok, texts.gather(rows["train"]))
    vocab = Vocab.build(
        texts.gather(rows["train"]),
        min_count=tok.min_count,
        keep_whitespace=tok.keep_whitespace,
        marks=tok.marks,
    )
    word = word_mask(vocab.tokens)
    pos, target = {}, {}
    for name, r in rows.items():
        encoded = vocab.encode(
            texts.gather(r),
            max_len=tok.max_len,
            keep_whitespace=tok.keep_whitespace,
            tail=tok.tail,
            marks=tok.marks,
        )
        pos[name] = positions(encoded.ids, encoded.lengths.astype(np.int64), word, BUCKETS)
        target[name] = torch.from_numpy(np.asarray(labels.index[r], dtype=np.int64))
    idf = fit_idf(pos["train"], len(word), BUCKETS)
    full = {name: design(p, idf) for name, p in pos.items()}
    compact = {name: design(p, idf, compact=True) for name, p in pos.items()}
    return full, compact, target, len(labels.values)


def val_loss(x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, bias) -> float:
    logits = torch.sparse.mm(x, weight) + bias
    return float(torch.nn.functional.cross_entropy(logits, target))


def fit_all(layout: str, train, xt, x: dict, target: dict, classes: int) -> list[dict]:
    """Every C of the grid, warm-started, as ``choose_blend`` fits them: seconds and the
    validation cross-entropy each fit reached."""
    fits, start = [], None
    for c in C_GRID:
        began = time.perf_counter()
        start = fit_logistic(train, xt, target["train"], classes, c, start)
        seconds = time.perf_counter() - began
        fits.append(
            {"c": c, "seconds": seconds, "val_ce": val_loss(x["val"], target["val"], *start)}
        )
        print(f"{layout} C {c:g}: {seconds:.1f}s, validation CE {fits[-1]['val_ce']:.5f}")
    return fits


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_REVIEWS)
    parser.add_argument("--split-file", type=Path, default=DEFAULT_SPLIT)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    x, compact, target, classes = features(args.data, args.split_file)
    layouts = {
        "coo": (x["train"], x["train"].t().coalesce(), x),
        "csr": (*products(x["train"]), x),
        "compact": (*products(compact["train"]), compact),
    }
    # Interleaved, the order turned round each repeat: this box's speed drifts by tens of
    # percent over minutes, so one pass of each would compare two different machines.
    runs: dict[str, list[list[dict]]] = {name: [] for name in layouts}
    for repeat in range(args.repeats):
        for layout in list(layouts)[:: 1 if repeat % 2 == 0 else -1]:
            runs[layout].append(fit_all(layout, *layouts[layout], target, classes))
    results: dict = {
        name: {"runs": chain, "seconds": median([sum(f["seconds"] for f in r) for r in chain])}
        for name, chain in runs.items()
    }
    results["coo_over_csr"] = results["coo"]["seconds"] / results["csr"]["seconds"]
    results["csr_over_compact"] = results["csr"]["seconds"] / results["compact"]["seconds"]
    report = {
        "machine": machine(),
        "rows": {name: int(v.shape[0]) for name, v in x.items()},
        "features": int(x["train"].shape[1]),
        "features_nonzero_idf": int(compact["train"].shape[1]),
        "nonzeros": int(x["train"]._nnz()),
        "threads": args.threads,
        "repeats": args.repeats,
        **results,
    }
    save("blend-fit", report)
    print(
        f"linear fit, {args.threads} thread(s), median of {args.repeats}: "
        f"COO {results['coo']['seconds']:.1f}s, CSR {results['csr']['seconds']:.1f}s "
        f"({results['coo_over_csr']:.1f}x), CSR over nonzero-idf features "
        f"{results['compact']['seconds']:.1f}s ({results['csr_over_compact']:.1f}x)"
    )
    return report


if __name__ == "__main__":
    main()

"""Text pipeline: token parity with spaCy and fast-path throughput against the reference path.

    python -m benchmarks.text [--reviews FILE] [--repeats 3] [--generated 20000]

Reference path: ``clean`` + spaCy's tokenizer per review + dict lookups into a padded array
(the recipe's ``encode_sentence``), one thread. Fast path: ``Vocab.encode`` (the compiled
kernel) on one thread, the per-thread comparison, and on every core of the machine, stated
as such. All encode the same reviews with the same vocabulary; runs are interleaved.
"""

from __future__ import annotations

import argparse
import random
import string
from pathlib import Path

import numpy as np

from benchmarks.common import DEFAULT_REVIEWS, interleaved, machine, median, save
from scorer.io.labelled import DEFAULT_TEXT_COLUMNS, read_table, read_texts
from scorer.runtime.cpus import available_cpus
from scorer.text.encode import clean, tokenize
from scorer.text.vocab import Vocab

MAX_LEN = 70


def reference_encoder(vocab: Vocab):
    import spacy

    tokenizer = spacy.blank("en").tokenizer

    def encode(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), MAX_LEN), dtype=np.int32)
        for i, text in enumerate(texts):
            ids = [vocab.index.get(t.text, 1) for t in tokenizer(clean(text))][:MAX_LEN]
            out[i, : len(ids)] = ids
        return out

    return encode, tokenizer


def generated_strings(n: int, seed: int = 0) -> list[str]:
    """Random strings over every character class cleaning and spaCy treat specially."""
    rng = random.Random(seed)
    alphabet = (
        list(string.ascii_letters + string.punctuation + string.digits)
        + [" "] * 20
        + list("\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x00\x01\x7f")
        + ["\u00e9", "\u00a0", "\u2014", "\U0001f600", "\u0085", "\u3000"]
    )
    words = ["dont", "cannot", "gonna", "im", "Can't", "y'all", "lets", "wont"]
    return [
        "".join(
            rng.choice(words) if rng.random() < 0.15 else rng.choice(alphabet)
            for _ in range(rng.randint(0, 40))
        )
        for _ in range(n)
    ]


def run(reviews: Path, repeats: int, generated: int) -> dict[str, object]:
    texts = read_texts(read_table(reviews), DEFAULT_TEXT_COLUMNS, reviews)
    as_list = texts.to_list()
    vocab = Vocab.build(texts, min_count=2)
    slow_encode, tokenizer = reference_encoder(vocab)

    def spacy_tokens(items: list[str]) -> list[list[str]]:
        return [[t.text for t in tokenizer(clean(x))] for x in items]

    def mismatches(items: list[str]) -> int:
        return sum(a != b for a, b in zip(tokenize(items), spacy_tokens(items), strict=True))

    dataset_mismatch = mismatches(as_list)
    generated_mismatch = mismatches(generated_strings(generated))
    fast_ids = vocab.encode(texts, max_len=MAX_LEN, keep_whitespace=True).ids
    ids_equal = bool(np.array_equal(fast_ids, slow_encode(as_list)))

    cores = available_cpus()
    times = interleaved(
        {
            "reference": lambda: slow_encode(as_list),
            "fast, 1 thread": lambda: vocab.encode(
                texts, max_len=MAX_LEN, keep_whitespace=True, threads=1
            ),
            f"fast, {cores} threads": lambda: vocab.encode(
                texts, max_len=MAX_LEN, keep_whitespace=True, threads=cores
            ),
        },
        repeats=repeats,
    )
    rates = {name: len(as_list) / median(ts) for name, ts in times.items()}
    return {
        "machine": machine(),
        "reviews": len(as_list),
        "parity": {
            "dataset_reviews_mismatched": dataset_mismatch,
            "generated_strings": generated,
            "generated_mismatched": generated_mismatch,
            "encoded_ids_identical": ids_equal,
        },
        "seconds": times,
        "reviews_per_s": rates,
        "threads": cores,
        # One thread against one thread; the compiled kernel on every core, against the
        # reference on one, separately (not a per-thread figure).
        "speedup_per_thread": rates["fast, 1 thread"] / rates["reference"],
        "speedup_all_cores": rates[f"fast, {cores} threads"] / rates["reference"],
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=Path, default=DEFAULT_REVIEWS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--generated", type=int, default=20_000)
    args = parser.parse_args(argv)
    result = run(args.reviews, args.repeats, args.generated)
    parity = result["parity"]
    rates = result["reviews_per_s"]
    print(
        f"parity: {parity['dataset_reviews_mismatched']} of {result['reviews']:,} reviews and "
        f"{parity['generated_mismatched']} of {parity['generated_strings']:,} generated strings "
        f"differ from spaCy; ids identical: {parity['encoded_ids_identical']}"
    )
    cores = result["threads"]
    print(
        f"clean+tokenize+encode: reference (1 thread) {rates['reference']:,.0f} reviews/s; "
        f"compiled kernel, 1 thread {rates['fast, 1 thread']:,.0f} reviews/s "
        f"({result['speedup_per_thread']:.1f}x per thread); {cores} threads "
        f"{rates[f'fast, {cores} threads']:,.0f} reviews/s ({result['speedup_all_cores']:.1f}x, "
        f"{cores} threads against 1)"
    )
    print(f"saved {save('text', result)}")
    return result


if __name__ == "__main__":
    main()

"""spaCy's letter-only tokenizer special cases, shipped as data so scoring needs no spaCy.

Cleaned text holds only lowercase ASCII letters, whitespace and control characters, so the
only special cases spaCy's English tokenizer can ever apply to it are those whose key is made
of lowercase letters (``dont`` -> ``do``, ``nt``). ``python -m scorer.text.specials`` regenerates
the table from the installed spaCy; a test checks that the shipped table still matches it.
"""

from __future__ import annotations

import json
import string
from functools import lru_cache
from importlib import resources
from pathlib import Path

TABLE_FILE = "spacy_specials.json"


@lru_cache(maxsize=1)
def load_specials() -> dict[str, tuple[str, ...]]:
    """The shipped special-case table: key -> the tokens spaCy splits it into."""
    raw = json.loads(resources.files(__package__).joinpath(TABLE_FILE).read_text("utf-8"))
    return {key: tuple(pieces) for key, pieces in raw["specials"].items()}


def specials_from_spacy() -> tuple[dict[str, list[str]], str]:
    """Derive the table from the installed spaCy (training-time dependency only)."""
    import spacy

    tokenizer = spacy.blank("en").tokenizer
    letters = set(string.ascii_lowercase)
    table: dict[str, list[str]] = {}
    for key in sorted(tokenizer.rules):
        if not key or not set(key) <= letters:
            continue
        pieces = [token.text for token in tokenizer(key)]
        if pieces != [key]:
            table[key] = pieces
    return table, spacy.__version__


def write_table(path: Path) -> int:
    table, version = specials_from_spacy()
    doc = {"spacy_version": version, "specials": table}
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return len(table)


if __name__ == "__main__":
    target = Path(__file__).with_name(TABLE_FILE)
    print(f"wrote {write_table(target)} special cases to {target}")

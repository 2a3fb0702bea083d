from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("ci")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SCORER_SHARED_DATA", REPO.parent / "shared" / "data"))
REVIEWS_CSV = SHARED_DATA / "womens_clothing_reviews.csv"
SPLIT_CSV = SHARED_DATA / "womens_clothing_split.csv"


@pytest.fixture(scope="session")
def reference_data() -> tuple[Path, Path]:
    """The reference dataset beside the checkout (CI has it); skipped with the reason if not."""
    if not (REVIEWS_CSV.is_file() and SPLIT_CSV.is_file()):
        pytest.skip(f"reference dataset not found at {SHARED_DATA} (set SCORER_SHARED_DATA)")
    return REVIEWS_CSV, SPLIT_CSV

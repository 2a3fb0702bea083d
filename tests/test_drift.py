"""Drift against the bundled model's profile: hotel reviews drift, clothing reviews do not;
`scorer run` says so in one line and `--fail-on-drift` exits 3; `scorer profile`."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from scorer.cli import main
from scorer.runtime.model_dir import ModelDir, bundled_model_dir

# Hotel reviews written for this test: another domain's words and complaints.
OPENINGS = [
    "Stayed three nights for a conference.",
    "We booked the suite for our anniversary weekend.",
    "Check-in took forty minutes at the front desk.",
    "The concierge recommended a restaurant downtown.",
    "Our flight was delayed so we arrived after midnight.",
    "Booked through the airline's website with breakfast included.",
]
MIDDLES = [
    "The room smelled of cigarette smoke and the minibar was empty.",
    "Housekeeping never came and the towels were stained.",
    "The elevator was broken, so we carried luggage up six floors.",
    "Wifi dropped every hour and the air conditioning rattled all night.",
    "The pool was closed for renovation and nobody told us.",
    "Valet parking cost fifty dollars per night plus tips.",
    "The lobby bar served watered-down cocktails.",
    "Thin walls: we heard the neighbours' television until 2am.",
    "The shuttle to the airport never showed up.",
    "Breakfast buffet ran out of eggs by eight o'clock.",
]
ENDINGS = [
    "Would not stay here again.",
    "Management offered no refund.",
    "Avoid this hotel.",
    "The manager apologised but charged us anyway.",
    "",
]


def hotel_reviews(n: int = 900, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    bodies = [
        " ".join(
            filter(
                None,
                [
                    str(rng.choice(OPENINGS)),
                    str(rng.choice(MIDDLES)),
                    str(rng.choice(MIDDLES)),
                    str(rng.choice(ENDINGS)),
                ],
            )
        )
        for _ in range(n)
    ]
    titles = [str(rng.choice(["Terrible stay", "Noisy room", "Overpriced", "Never again"]))
              for _ in range(n)]  # fmt: skip
    return pl.DataFrame({"Title": titles, "Review Text": bodies})


@pytest.fixture(scope="module")
def clothing(reference_data, tmp_path_factory):
    """The reference reviews' test rows: the model's domain, never used to choose it."""
    reviews, split = reference_data
    frame = pl.read_csv(reviews, infer_schema_length=0).select("Title", "Review Text")
    names = pl.read_csv(split).sort("row")["split"]
    path = tmp_path_factory.mktemp("clothing") / "clothing.parquet"
    frame.filter(names == "test").write_parquet(path)
    return path


@pytest.fixture(scope="module")
def hotels(tmp_path_factory):
    path = tmp_path_factory.mktemp("hotels") / "hotels.csv"
    hotel_reviews().write_csv(path)
    return path


def test_the_bundled_model_keeps_its_validation_profile() -> None:
    directory = ModelDir.open(bundled_model_dir())
    profile = directory.profile()
    assert profile is not None
    assert profile.rows == directory.card.training["rows"]["val"]
    assert 0 < profile.unknown_share < 0.05 and profile.empty_share < 0.01


def test_hotel_reviews_drift_and_clothing_reviews_do_not(tmp_path, clothing, hotels, capsys):
    assert main(["profile", str(clothing), "--json", "--quiet"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["drift"]["judged"] and not same["drift"]["drifted"], same["drift"]
    assert main(["profile", str(hotels), "--json", "--quiet"]) == 0
    other = json.loads(capsys.readouterr().out)
    drifted = {m["name"] for m in other["drift"]["measures"] if m["drifted"]}
    assert other["drift"]["drifted"] and "unknown-token share" in drifted, other["drift"]
    # The table form shows both profiles and ends with the verdict.
    assert main(["profile", str(hotels), "--quiet"]) == 0
    text = capsys.readouterr().out.strip().splitlines()
    assert "model (validation)" in text[0] and text[-1].startswith("profiled 900 rows")
    assert "input drifted" in text[-1]


def test_run_warns_in_one_line_and_fails_only_when_asked(tmp_path, clothing, hotels, capsys):
    out = tmp_path / "hotels.scores.parquet"
    assert main(["run", str(hotels), "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scorer: input drifted"), err
    drift = json.loads(out.with_name(out.name + ".manifest.json").read_text())["drift"]
    assert drift["drifted"]
    out2 = tmp_path / "again.parquet"
    code = main(["run", str(hotels), "--out", str(out2), "--quiet", "--fail-on-drift"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1 and err[0].startswith("scorer: drift: input drifted")
    assert out2.is_file()  # the scores are written; the exit code reports the drift
    # Thresholds can be raised until nothing counts as drift.
    loose = ["--drift", "unknown_ratio=1000", "--drift", "psi=100", "--drift", "empty_delta=1"]
    out3 = tmp_path / "loose.parquet"
    assert main(["run", str(hotels), "--out", str(out3), "--quiet", "--fail-on-drift", *loose]) == 0
    assert capsys.readouterr().err.startswith("scorer: no drift")
    out4 = tmp_path / "clothing.scores.parquet"
    assert main(["run", str(clothing), "--out", str(out4), "--quiet", "--fail-on-drift"]) == 0
    assert "no drift" in capsys.readouterr().err

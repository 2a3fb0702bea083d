"""The package's shape: the scoring path imports neither torch nor spaCy, each stage package
has its face, and the exporter comes from the build configuration."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCORING = [
    "scorer.cli",
    "scorer.engines.local.run",
    "scorer.engines.local.incremental",
    "scorer.engines.local.profile",
    "scorer.engines.local.evaluate",
    "scorer.runtime.profile",
    "scorer.runtime.scoring",
    "scorer.runtime.model_dir",
    "scorer.io.source",
    "scorer.runtime.output",
    "scorer.io.labelled",
    "scorer.text.encode",
    "scorer.text.vocab",
]


@pytest.mark.parametrize("module", SCORING)
def test_the_scoring_path_imports_neither_torch_nor_spacy(module) -> None:
    code = (
        f"import sys, {module}; bad = {{'torch', 'spacy', 'matplotlib'}} & set(sys.modules); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("module", "torch_side"),
    [("scorer.nn.model", True), ("scorer.train.checkpoint", True), ("scorer.export", False)],
)
def test_the_training_side_is_where_torch_is(module, torch_side) -> None:
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == str(torch_side)


def test_the_exporter_is_scorer_export_without_a_path_patch() -> None:
    import scorer
    import scorer.export.onnx_export as exporter

    assert list(scorer.__path__) == [str(__import__("pathlib").Path(scorer.__file__).parent)]
    assert exporter.__file__.endswith("export/onnx_export.py")

"""scorer.session: CPU slicing and concurrent single-threaded calls."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from scorer.export.onnx_export import export_model
from scorer.session import cpu_slices, open_scorer, slice_rows_for
from tests.helpers import make_model_dir


@pytest.mark.parametrize(
    ("rows", "workers", "sizes"),
    [
        (0, 2, [0]),
        (1, 2, [1]),
        (3, 2, [2, 1]),
        (100, 4, [25, 25, 25, 25]),
        (2048, 2, [1024, 1024]),
        (4096, 2, [1024] * 4),
        (5000, 2, [1000] * 5),
        (5000, 8, [625] * 8),
    ],
)
def test_cpu_slices_cover_the_batch_in_order(rows, workers, sizes) -> None:
    slices = cpu_slices(rows, workers, 1024)
    assert [s.stop - s.start for s in slices] == sizes
    assert slices[0].start == 0 and slices[-1].stop == rows
    assert all(a.stop == b.start for a, b in pairwise(slices))
    assert max(sizes) <= 1024


@pytest.mark.parametrize(("hidden", "rows"), [(50, 1024), (64, 1024), (128, 512), (512, 128)])
def test_slice_rows_keep_a_step_within_l2(hidden, rows) -> None:
    assert slice_rows_for(hidden) == rows


def test_concurrent_slices_give_the_same_bytes_as_one_call(tmp_path) -> None:
    model_dir = make_model_dir(tmp_path / "m", variant="packed", pooling="last+max")
    export_model(model_dir.path)
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 25, size=2500)
    ids = rng.integers(2, model_dir.card.model.vocab_size, size=(2500, 24)).astype(np.int32)
    ids[np.arange(24)[None, :] >= lengths[:, None]] = 0
    one = open_scorer(model_dir.path, device="cpu", threads=1)
    many = open_scorer(model_dir.path, device="cpu", threads=3)
    assert (one.workers, many.workers) == (1, 3)
    want, got = one.run(ids, lengths), many.run(ids, lengths)
    for a, b in zip(want, got, strict=True):
        assert a.shape[0] == 2500 and np.array_equal(a, b)
    many.close()

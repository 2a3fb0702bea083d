"""scorer.runtime.session: graph per provider, honest CUDA fallback, CPU slices, device-resident IO.

There is no GPU here: a fake ``onnxruntime`` module stands in for onnxruntime-gpu. It reports
the CUDA provider as built, creates real CPU sessions underneath, and either reports the
CUDA provider as running or (``cuda_works=False``) falls back to the CPU as onnxruntime does
when CUDA or cuDNN cannot be loaded. Device memory maps to host memory.
"""

from __future__ import annotations

import functools
from itertools import pairwise
from types import SimpleNamespace

import numpy as np
import onnxruntime as real_ort
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scorer.errors import UserError
from scorer.export.onnx_export import export_model
from scorer.runtime import session as session_module
from scorer.runtime.cpus import available_cpus
from scorer.runtime.model_dir import ModelDir
from scorer.runtime.session import (
    MIN_SLICE_ROWS,
    CpuRunner,
    DeviceRunner,
    cpu_slices,
    open_scorer,
    open_session,
    plan_slices,
    slice_rows_for,
)
from tests.helpers import make_model_dir

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


class FakeOrt:
    def __init__(self, cuda_works: bool) -> None:
        self.cuda_works = cuda_works
        self.sessions: list[SimpleNamespace] = []
        self.events: list[str] = []
        self.SessionOptions = real_ort.SessionOptions
        self.GraphOptimizationLevel = real_ort.GraphOptimizationLevel
        self.OrtValue = SimpleNamespace(ortvalue_from_numpy=self._ortvalue)

    @staticmethod
    def _ortvalue(array, device, device_id=0):
        return real_ort.OrtValue.ortvalue_from_numpy(array, "cpu", 0)

    def get_available_providers(self):
        return [CUDA, CPU]

    def preload_dlls(self):
        self.events.append("preload")

    def InferenceSession(self, path, sess_options=None, providers=None):
        self.events.append(f"session {providers[0]}")
        inner = real_ort.InferenceSession(path, sess_options=sess_options, providers=[CPU])
        running = providers[0] if (self.cuda_works or providers[0] == CPU) else CPU
        fake = _FakeSession(inner, [running], sess_options)
        self.sessions.append(fake)
        return fake


class _FakeSession:
    def __init__(self, inner, providers, options) -> None:
        self.inner, self.providers, self.options = inner, providers, options

    def get_providers(self):
        return self.providers

    def get_modelmeta(self):
        return self.inner.get_modelmeta()

    def io_binding(self):
        return _FakeBinding(self.inner.io_binding())

    def run_with_iobinding(self, binding):
        self.inner.run_with_iobinding(binding.inner)


class _FakeBinding:
    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def bind_output(self, name, device="cpu", device_id=0):
        self.inner.bind_output(name, "cpu", 0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = make_model_dir(
        tmp_path_factory.mktemp("m") / "m", variant="packed", pooling="last+max"
    )
    export_model(directory.path)
    return directory.path


def _batch(model_dir, rows: int = 2500, seed: int = 0):
    vocab_size = ModelDir.open(model_dir).card.model.vocab_size
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 25, size=rows)
    ids = rng.integers(2, vocab_size, size=(rows, 24)).astype(np.int32)
    ids[np.arange(24)[None, :] >= lengths[:, None]] = 0
    return ids, lengths


def _fake(monkeypatch, cuda_works: bool) -> FakeOrt:
    fake = FakeOrt(cuda_works)
    monkeypatch.setattr(session_module, "onnxruntime", lambda: fake)
    return fake


# --- choosing the provider, the graph and the thread settings --------------------------------


def test_auto_falls_back_to_the_cpu_graph_with_cpu_settings(monkeypatch, model_dir) -> None:
    fake = _fake(monkeypatch, cuda_works=False)
    scorer = open_scorer(model_dir, device="auto")
    assert (scorer.device, scorer.provider, scorer.path.name) == ("cpu", CPU, "model.onnx")
    assert scorer.notes == ("the CUDA provider could not be created; scoring on the CPU",)
    cpu_session = fake.sessions[-1]
    # The CPU session runs single-threaded calls from one worker per usable CPU, not
    # all-cores intra-op threads on top of all-cores workers.
    assert cpu_session.options.intra_op_num_threads == 1
    assert isinstance(scorer.runner, CpuRunner) and scorer.workers == available_cpus()
    assert scorer.batch_size == 2048
    assert fake.events[0] == "preload" and fake.events[-1] == f"session {CPU}"


def test_device_cuda_refuses_a_fallback(monkeypatch, model_dir) -> None:
    _fake(monkeypatch, cuda_works=False)
    with pytest.raises(UserError, match="could not create its CUDA provider"):
        open_scorer(model_dir, device="cuda")


def test_cuda_runs_the_fused_graph_on_device_resident_streams(monkeypatch, model_dir) -> None:
    fake = _fake(monkeypatch, cuda_works=True)
    scorer = open_scorer(model_dir, device="cuda")
    assert (scorer.device, scorer.provider, scorer.path.name) == ("cuda", CUDA, "model.cuda.onnx")
    assert isinstance(scorer.runner, DeviceRunner) and len(scorer.runner.sessions) == 2
    assert scorer.batch_size == 16_384 and scorer.notes == ()
    assert fake.events[0] == "preload"  # before any CUDA session is created
    ids, lengths = _batch(model_dir)
    cpu = open_scorer(model_dir, device="cpu")
    got, want = scorer.score(ids, lengths), cpu.score(ids, lengths)
    # Two different graphs (fused LSTM, folded Scan) of the same model.
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)
    np.testing.assert_allclose(got[1], want[1], atol=1e-4)


@pytest.mark.parametrize(
    ("device", "precision", "message"),
    [
        ("cuda", "int8", "--precision int8 runs on the CPU only"),
        ("cpu", "fp16", "--precision fp16 runs on CUDA only"),
        ("cuda", "fp16", "has no model.cuda.fp16.onnx"),
        ("cpu", "bf16", "--precision must be auto"),
        ("gpu", "auto", "--device must be auto, cpu or cuda"),
    ],
)
def test_precisions_that_cannot_run_are_refused(monkeypatch, model_dir, device, precision, message):
    _fake(monkeypatch, cuda_works=True)
    with pytest.raises(UserError, match=message):
        open_scorer(model_dir, device=device, precision=precision)


def test_auto_with_int8_stays_on_the_cpu(monkeypatch, tmp_path) -> None:
    directory = make_model_dir(tmp_path / "m", variant="packed")
    export_model(directory.path, int8=True)
    _fake(monkeypatch, cuda_works=True)
    scorer = open_scorer(directory.path, device="auto", precision="int8")
    assert (scorer.device, scorer.path.name) == ("cpu", "model.int8.onnx")


def test_a_model_without_a_cuda_graph_runs_on_the_cpu_under_auto(monkeypatch, tmp_path) -> None:
    directory = make_model_dir(tmp_path / "m", variant="packed")
    export_model(directory.path)
    (directory.path / "model.cuda.onnx").unlink()
    _fake(monkeypatch, cuda_works=True)
    scorer = open_scorer(directory.path, device="auto")
    assert scorer.device == "cpu" and "has no CUDA graph" in scorer.notes[0]
    with pytest.raises(UserError, match=r"has no model\.cuda\.onnx"):
        open_scorer(directory.path, device="cuda")


# --- the runners ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "count", "sizes"),
    [
        (0, 2, [0]),
        (1, 2, [1]),
        (3, 2, [2, 1]),
        (100, 4, [25, 25, 25, 25]),
        (5000, 5, [1000] * 5),
    ],
)
def test_cpu_slices_cover_the_rows_in_order(rows, count, sizes) -> None:
    slices = cpu_slices(rows, count)
    assert [s.stop - s.start for s in slices] == sizes
    assert slices[0].start == 0 and slices[-1].stop == rows
    assert all(a.stop == b.start for a, b in pairwise(slices))


@pytest.mark.parametrize(
    ("rows", "widths", "workers", "slice_rows", "sizes"),
    [
        # 16 workers, 2,048-row batches, hidden 128: whole L2-sized slices, not 16 of 128.
        ([2048] * 25, [40] * 25, 16, 512, {512}),
        # hidden 32 (2,048-row slices): 25 batches are cut further until every worker has two
        # slices, the widest batches first; never below 256 rows.
        ([2048] * 25, [8 * (i + 1) for i in range(25)], 16, 2048, {1024, 2048}),
        # two workers, one batch: two slices each, so the last to finish is a short one.
        ([2048], [40], 2, 1024, {512}),
        # two workers, a chunk's 25 batches: whole slices, nothing cut further.
        ([2048] * 25, [40] * 25, 2, 1024, {1024}),
        # a small batch is not cut below 256 rows to feed 16 workers.
        ([700], [40], 16, 2048, {350}),
        ([300], [40], 16, 2048, {300}),
        ([0], [8], 4, 512, {0}),
    ],
)
def test_slices_give_every_worker_work_without_small_calls(
    rows, widths, workers, slice_rows, sizes
) -> None:
    plan = plan_slices(rows, widths, workers, slice_rows)
    assert {s.stop - s.start for _, s in plan} == sizes
    costs = [(s.stop - s.start) * widths[i] for i, s in plan]
    assert costs == sorted(costs, reverse=True)  # the costliest first: a cheap one ends


@given(
    rows=st.lists(st.integers(0, 5000), min_size=1, max_size=30),
    workers=st.integers(1, 32),
    slice_rows=st.sampled_from([128, 512, 2048]),
)
def test_a_plan_covers_every_row_once_within_the_limits(rows, workers, slice_rows) -> None:
    widths = [8 * (1 + i % 5) for i in range(len(rows))]
    plan = plan_slices(rows, widths, workers, slice_rows)
    for index, n in enumerate(rows):
        pieces = sorted((s for i, s in plan if i == index), key=lambda s: s.start)
        assert pieces[0].start == 0 and pieces[-1].stop == n
        assert all(a.stop == b.start for a, b in pairwise(pieces))
        assert all(s.stop - s.start <= slice_rows for s in pieces)
        if len(pieces) > max(-(-n // slice_rows), 1):  # cut further for the workers: not tiny
            assert all(s.stop - s.start >= MIN_SLICE_ROWS for s in pieces)
    if sum(-(-n // slice_rows) for n in rows) >= 2 * workers:
        assert len(plan) == sum(max(-(-n // slice_rows), 1) for n in rows)


@pytest.mark.parametrize(("hidden", "rows"), [(50, 1024), (64, 1024), (128, 512), (512, 128)])
def test_slice_rows_keep_a_step_within_l2(hidden, rows) -> None:
    assert slice_rows_for(hidden) == rows


@pytest.mark.parametrize("streams", [1, 2, 3])
def test_every_runner_gives_the_same_bytes(model_dir, streams) -> None:
    """One call, concurrent CPU slices, and the device runner's CPU twin over 1-3 sessions
    (batches alternate between sessions and come back in order)."""
    ids, lengths = _batch(model_dir)
    path = model_dir / "model.onnx"
    one = CpuRunner(open_session(real_ort, path, "cpu"), 1, 1 << 20)
    sliced = CpuRunner(open_session(real_ort, path, "cpu"), 3, 256)
    twin = DeviceRunner(
        real_ort, [open_session(real_ort, path, "cpu") for _ in range(streams)], device="cpu"
    )
    batches = [(ids[i : i + 300], lengths[i : i + 300]) for i in range(0, len(ids), 300)]
    want = one.run(batches)
    for runner in (sliced, twin):
        got = runner.run(batches)
        assert len(got) == len(want)
        for (gp, ge), (wp, we) in zip(got, want, strict=True):
            assert np.array_equal(gp, wp) and np.array_equal(ge, we)
        runner.close()


def test_score_restores_row_order_for_any_batch_size(model_dir) -> None:
    ids, lengths = _batch(model_dir, rows=700)
    scorer = open_scorer(model_dir, device="cpu", threads=2)
    reference = [scorer.run(ids[i : i + 1], lengths[i : i + 1]) for i in range(0, 700, 97)]
    for batch_size in (1, 64, 1000):
        scorer.batch_size = batch_size
        probs, expected = scorer.score(ids, lengths)
        for k, i in enumerate(range(0, 700, 97)):
            np.testing.assert_allclose(probs[i], reference[k][0][0], atol=1e-6)
            np.testing.assert_allclose(expected[i], reference[k][1][0], atol=1e-5)


@given(st.lists(st.integers(0, 399), min_size=1, max_size=12, unique=True))
def test_a_rows_scores_do_not_depend_on_the_rows_beside_it(picked) -> None:
    """An incremental run rescores a few rows, a full run all of them: the same row must get
    the same bytes alone, in a small batch, or among 400. (The bundled model: onnxruntime's
    one-row GEMM path differs from the batched one in its last bits there, so one row is run
    as two.)"""
    scorer, ids, lengths = _bundled_rows()
    probs, expected = scorer.score(ids, lengths)
    rows = np.array(sorted(picked))
    got_probs, got_expected = scorer.score(ids[rows], lengths[rows])
    assert np.array_equal(got_probs, probs[rows]) and np.array_equal(got_expected, expected[rows])


@functools.cache
def _bundled_rows():
    from scorer.runtime.model_dir import bundled_model_dir
    from scorer.runtime.scoring import encode_table, open_model
    from tests.helpers import make_reviews

    model = open_model(bundled_model_dir(), "cpu", "fp32", 1)
    table = make_reviews(400, seed=11).to_arrow()
    ids, lengths, _ = encode_table(table, ("Title", "Review Text"), model)
    return model.scorer, ids, lengths

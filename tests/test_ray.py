"""`scorer run --engine ray` on a local 2-CPU Ray instance: the same rows as the local engine,
also when an actor is killed mid-run, and the same one-line errors for bad input."""

from __future__ import annotations

import json
import os
import re
import signal

import polars as pl
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray", reason="Ray Data is not installed (pip install 'scorer[ray]')")

from scorer.cli import main  # noqa: E402
from scorer.engines.local.run import RunJob, partial_dir  # noqa: E402
from scorer.engines.ray.engine import run_on_ray, start_ray  # noqa: E402
from scorer.engines.ray.predictor import RatingPredictor  # noqa: E402
from scorer.engines.ray.sizing import (  # noqa: E402
    NodeCycle,
    Sizing,
    actor_nodes,
    place_actors,
    size_pool,
)
from scorer.errors import UserError  # noqa: E402
from scorer.export.onnx_export import export_model  # noqa: E402
from tests.helpers import make_model_dir  # noqa: E402

KILL_MARKER = "SCORER_TEST_KILL_MARKER"
MIB = 2**20
NO_RETRIES = (
    "read_retries", "score_retries", "write_retries", "units_retried", "actor_restarts",
    "half_written_parts_removed",
)  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One local instance for the module, with 2 CPUs: the smallest size that must work."""
    marker = tmp_path_factory.mktemp("kill") / "killed"
    os.environ[KILL_MARKER] = str(marker)  # the workers inherit it
    ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    start_ray(None)
    context = ray.data.DataContext.get_current()
    context.execution_no_progress_timeout_s = 120  # a hang fails the test instead
    yield marker
    ray.shutdown()
    os.environ.pop(KILL_MARKER, None)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    directory = make_model_dir(tmp_path_factory.mktemp("model") / "m", variant="packed")
    export_model(directory.path)
    return directory.path


@pytest.fixture(scope="module")
def reviews(tmp_path_factory, reference_data):
    """4,000 real reviews in two files with small row groups (many read units)."""
    csv, _ = reference_data
    frame = pl.read_csv(csv, infer_schema_length=10_000).head(4000).rename({"": "id"}, strict=False)
    folder = tmp_path_factory.mktemp("in")
    pq.write_table(frame[:1500].to_arrow(), folder / "a.parquet", row_group_size=400)
    pq.write_table(frame[1500:].to_arrow(), folder / "b.parquet", row_group_size=700)
    return folder


@pytest.fixture(scope="module")
def local(tmp_path_factory, model, reviews):
    out = tmp_path_factory.mktemp("local") / "local.parquet"
    argv = ["run", str(reviews), "--model", str(model), "--out", str(out), "--quiet"]
    assert main([*argv, "--keep-col", "Clothing ID"]) == 0
    return pl.read_parquet(out)


def _ray_output(path) -> pl.DataFrame:
    return pl.read_parquet(str(path / "*.parquet")).sort("row")


def _job(model, reviews, out, **options) -> RunJob:
    """Read units of 500 rows: 8 of them, so work is spread and resumed by unit."""
    options.setdefault("chunk_rows", 500)
    return RunJob(str(reviews), model, out, keep_columns=("Clothing ID",), quiet=True, **options)


class KillOnce(RatingPredictor):
    """Kills its own actor process once its second batch is scored, once per test (a marker
    file): the batch's attempt was made and its result lost, as when a node dies."""

    calls = 0

    def __call__(self, batch):
        self.calls += 1
        scored = super().__call__(batch)
        if self.calls == 2:
            try:
                os.close(os.open(os.environ[KILL_MARKER], os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return scored


def test_ray_output_equals_local_output_row_for_row(cluster, tmp_path, model, reviews, local):
    out = tmp_path / "ray.parquet"
    summary = run_on_ray(_job(model, reviews, out))
    assert summary.rows == 4000 and summary.device == "cpu"
    got = _ray_output(out)
    assert got.columns == local.columns and got.equals(local)
    manifest = json.loads(out.with_name("ray.parquet.manifest.json").read_text())
    assert manifest["engine"] == "ray" and manifest["rows"] == 4000
    assert manifest["model"]["file"] == "model.onnx" and manifest["actors"] == 2
    assert manifest["retries"] == dict.fromkeys(NO_RETRIES, 0)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("part-")) == []
    assert not partial_dir(out).exists()


def test_a_killed_actor_is_restarted_and_the_output_is_complete(
    cluster, tmp_path, model, reviews, local
):
    ray.cloudpickle.register_pickle_by_value(__import__(__name__))
    out = tmp_path / "ray.parquet"
    summary = run_on_ray(_job(model, reviews, out), predictor=KillOnce)
    assert cluster.exists()  # an actor really died
    assert _ray_output(out).equals(local)
    retries = json.loads(out.with_name("ray.parquet.manifest.json").read_text())["retries"]
    # The lost batch was scored again by the restarted actor; nothing was read or written twice.
    assert retries["score_retries"] == retries["units_retried"] == 1, retries
    assert retries["actor_restarts"] == 1 and retries["read_retries"] == 0, retries
    assert retries["write_retries"] == 0 and summary.retried == 1
    assert "1 Ray task(s) retried" in summary.line()


@pytest.mark.parametrize("damage", ["corrupt", "missing column"])
def test_a_bad_file_gives_the_local_engines_one_line_error(
    cluster, tmp_path, model, reviews, capsys, damage
):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.parquet").write_bytes((reviews / "a.parquet").read_bytes())
    if damage == "corrupt":
        (folder / "b.parquet").write_bytes(b"PAR1" + b"\0" * 500)
    else:
        pl.read_parquet(reviews / "b.parquet").drop("Review Text").write_parquet(
            folder / "b.parquet"
        )
    errors = []
    for engine in ("local", "ray"):
        out = tmp_path / f"{engine}.parquet"
        argv = ["run", str(folder), "--model", str(model), "--out", str(out), "--quiet"]
        assert main([*argv, "--engine", engine]) == 1
        errors.append(capsys.readouterr().err.replace(str(out), "OUT"))
        assert not out.exists() and not partial_dir(out).exists()
    assert errors[0] == errors[1] and errors[0].count("\n") == 1 and "b.parquet" in errors[0]


def test_resume_scores_only_the_units_left(cluster, tmp_path, model, reviews, local):
    out = tmp_path / "ray.parquet"
    run_on_ray(_job(model, reviews, out))
    # An interrupted run: the same parts, some gone, one truncated, plus the state file.
    parts = partial_dir(out)
    out.rename(parts)
    (parts / "state.json").write_text(json.dumps(_state(model, reviews)))
    files = sorted(parts.glob("part-*.parquet"))
    lost = {*range(0, len(files), 3), len(files) - 1, len(files) - 2}  # the last ones too
    for index in lost:
        files[index].unlink()
    files[1].write_bytes(files[1].read_bytes()[:100])
    kept = sum(pq.read_metadata(p).num_rows for i, p in enumerate(files) if i not in lost | {1})
    # Another --chunk-rows: the units are the interrupted run's, so no row is written twice.
    summary = run_on_ray(_job(model, reviews, out, resume=True, chunk_rows=700))
    # The whole parts' rows were not scored again (a unit that lost any part is scored
    # whole).
    assert 0 < summary.resumed_rows <= kept and summary.rows == 4000
    assert _ray_output(out).equals(local)


def _state(model, reviews) -> dict:
    from scorer.io.source import open_source
    from scorer.runtime.model_dir import ModelDir

    card = ModelDir.open(model).card
    return {
        "inputs": [f.fingerprint() for f in open_source(str(reviews)).files],
        "model": {name: entry.get("sha256") for name, entry in sorted(card.graphs.items())},
        "engine": "ray",
        "unit_rows": 500,
    }


@pytest.mark.parametrize(
    ("nodes", "gpus", "device", "workers", "sizing"),
    [
        # One node: fractions are safe (the actors share the node the tasks run on).
        ([1], 0, "cpu", None, Sizing(1, 0.0, 0.0, 1)),
        ([2], 0, "cpu", None, Sizing(2, 0.5, 0.0, 1)),
        ([2], 0, "cpu", 1, Sizing(1, 0.5, 0.0, 1)),
        ([3], 0, "cpu", None, Sizing(2, 1.0, 0.0, 1)),
        ([16], 0, "cpu", None, Sizing(15, 1.0, 0.0, 1)),
        ([16], 0, "cpu", 64, Sizing(15, 1.0, 0.0, 1)),
        ([16], 1, "cuda", None, Sizing(1, 1.0, 1.0, 1)),
        ([16], 8, "cuda", None, Sizing(8, 1.0, 1.0, 1)),
        ([4], 8, "cuda", None, Sizing(8, 0.375, 1.0, 1)),
        # Several nodes: one fewer actor than the whole free CPUs, reserving no CPU (so the
        # tasks always find one and a lost node's actors restart anywhere) and 1 MiB of
        # memory (so that each stays on its planned node).
        ([1, 1], 0, "cpu", None, Sizing(1, 0.0, 0.0, 1, MIB)),
        ([2, 1], 0, "cpu", None, Sizing(2, 0.0, 0.0, 1, MIB)),
        ([1.5, 0.5], 0, "cpu", None, Sizing(1, 0.0, 0.0, 1, MIB)),
        ([4, 4], 0, "cpu", 3, Sizing(3, 0.0, 0.0, 1, MIB)),
        ([4, 4], 0, "cpu", None, Sizing(7, 0.0, 0.0, 1, MIB)),
        ([16] * 8, 0, "cpu", None, Sizing(127, 0.0, 0.0, 1, MIB)),
        ([4, 4], 2, "cuda", None, Sizing(2, 1.0, 1.0, 1)),
        ([1, 1], 4, "cuda", None, Sizing(4, 0.0, 1.0, 1)),
    ],
)
def test_the_pool_always_leaves_a_cpu_for_read_and_write_tasks(
    nodes, gpus, device, workers, sizing
):
    got = size_pool(nodes, gpus, device, workers)
    assert got == sizing
    whole = sum(int(c) for c in nodes)
    assert got.actors * got.cpus_per_actor <= max(whole - 1, 0) or whole < 2
    if len(nodes) > 1 and device == "cpu":  # nothing that could strand a task after a loss
        assert got.cpus_per_actor == 0.0


@pytest.mark.parametrize(
    ("nodes", "actors", "counts"),
    [
        ([1, 1], 1, [0, 1]),  # the first largest node keeps its CPU for the tasks
        ([2, 2], 3, [1, 2]),
        ([16, 16], 31, [15, 16]),
        ([16, 16], 4, [2, 2]),
        ([16, 4, 8], 27, [15, 4, 8]),
        ([16, 4, 8], 6, [3, 1, 2]),
        ([1, 0.5], 1, [1, 0]),
        ([1.9, 3.2], 3, [1, 2]),
    ],
)
def test_actors_are_placed_by_each_nodes_whole_cpus(nodes, actors, counts) -> None:
    assert place_actors(nodes, actors) == counts
    order = actor_nodes({f"n{i}": c for i, c in enumerate(nodes)}, actors)
    assert [order.count(f"n{i}") for i in range(len(nodes))] == counts
    assert len(set(order[: sum(1 for c in counts if c)])) == sum(1 for c in counts if c)


def test_each_new_actor_goes_softly_to_the_next_planned_node() -> None:
    a, b = "a" * 56, "b" * 56  # node ids are 28 bytes in hex
    cycle = NodeCycle([a, b])
    strategies = [cycle()["scheduling_strategy"] for _ in range(3)]
    assert [s.node_id for s in strategies] == [a, b, a]
    assert all(s.soft for s in strategies)  # a lost node's actor restarts elsewhere


@pytest.mark.parametrize(
    ("nodes", "device", "message"),
    [
        ([4], "cuda", "has no GPU"),
        ([0.5, 0.5], "cpu", "no whole free CPU on any node (free CPUs per node: 0.5, 0.5)"),
        ([], "cpu", "no whole free CPU on any node (free CPUs per node: none)"),
    ],
)
def test_a_cluster_that_cannot_run_the_pool_is_refused(nodes, device, message) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        size_pool(nodes, 0, device, None)


def test_starting_ray_keeps_the_scorers_sigterm_handler(monkeypatch) -> None:
    """ray.init installs a SIGTERM handler that exits at once (exit 15, no summary); the
    scorer's own (SIGTERM ends a run like Ctrl-C, exit 130) must survive it."""

    def ours(signum, frame):
        raise KeyboardInterrupt

    def fake_init(**options):
        signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(signum))

    previous = signal.signal(signal.SIGTERM, ours)
    try:
        monkeypatch.setattr(ray, "is_initialized", lambda: False)
        monkeypatch.setattr(ray, "init", fake_init)
        start_ray(None)
        assert signal.getsignal(signal.SIGTERM) is ours
    finally:
        signal.signal(signal.SIGTERM, previous)

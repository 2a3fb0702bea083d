"""The Ray engine on a cluster that already runs: 2 nodes of 1 CPU each, started with Ray's
own ``ray.cluster_utils.Cluster`` on loopback inside a private network namespace
(``benchmarks.ray_cluster``, which a cluster benchmark runs with 1M reviews)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("ray", reason="Ray Data is not installed (pip install 'scorer[ray]')")

from benchmarks.ray_cluster import namespace_prefix
from scorer.export.onnx_export import export_model
from tests.conftest import REPO
from tests.helpers import make_model_dir, write_reviews

pytestmark = pytest.mark.cluster


def _on_cluster(tmp_path, rows: int, seed: int, *case: str) -> dict:
    """``benchmarks.ray_cluster``'s report for ``rows`` made-up reviews and a small model."""
    if namespace_prefix() is None:
        pytest.skip("needs unshare and ip, and the right to make a private network namespace")
    model = make_model_dir(tmp_path / "model", variant="packed").path
    export_model(model)
    data = write_reviews(tmp_path / "reviews.parquet", n=rows, seed=seed)
    command = [
        sys.executable, "-m", "benchmarks.ray_cluster", "--data", str(data), "--model",
        str(model), "--work", str(tmp_path), "--no-save", *case,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["rows"] == rows and report["same_rows"] and report["rows_written"] == rows
    assert report["duplicates"] == 0 and report["missing"] == 0
    return report


def test_scoring_on_an_existing_two_node_cluster_equals_the_local_engine(tmp_path) -> None:
    report = _on_cluster(tmp_path, 3000, 3)
    assert report["nodes"] == 2
    # The job left the cluster as it found it: every CPU free, no placement group, and alive
    # only Ray Data's own named service actors (one each per cluster, 0 CPU, such as
    # "_StatsActor:datasets_stats_actor"), none of the job's pool (unnamed
    # "MapWorker(MapBatches(...))").
    assert report["free_cpus_after"] == 2 and report["placement_groups_after"] == 0
    assert report["live_actors_after"], report
    assert all(not a.endswith(":") for a in report["live_actors_after"]), report
    assert set(report["retries"].values()) == {0}, report["retries"]  # nothing was lost


@pytest.mark.cluster_long
def test_a_killed_driver_resumes_on_the_same_cluster(tmp_path) -> None:
    """SIGKILL the driver once 3 parts are written; `--resume` against the same cluster
    completes the output, equal to the local engine's, and leaves the cluster usable."""
    report = _on_cluster(tmp_path, 30_000, 4, "--case", "driver-kill", "--chunk-rows", "1000")
    assert report["fault"]["parts_at_kill"] >= 3
    assert report["free_cpus_after"] == 2 and report["placement_groups_after"] == 0


@pytest.mark.cluster_long
def test_a_lost_worker_node_still_gives_every_row_once(tmp_path) -> None:
    """The processes of a worker node that hosts pool actors are killed once 3 parts are
    written (2 CPUs a node: 3 actors, spread over both); the run ends with every row once,
    equal to the local engine's, and its manifest counts what ran again."""
    report = _on_cluster(
        tmp_path, 30_000, 5, "--case", "node-loss", "--chunk-rows", "1000", "--cpus-per-node", "2"
    )
    assert report["nodes"] == 1 and report["free_cpus_after"] == 2  # the other was lost
    assert report["fault"]["actors_on_lost_node"] >= 1, report["fault"]
    retries = report["retries"]
    assert retries["actor_restarts"] + retries["units_retried"] >= 1, retries

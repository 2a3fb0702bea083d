"""The Ray engine on a cluster that already runs: 2 nodes of 1 CPU each, started with Ray's
own ``ray.cluster_utils.Cluster`` on loopback inside a private network namespace (on Linux,
Ray advertises the machine's interface address even when told 127.0.0.1; in the namespace
loopback is the only one)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("ray", reason="Ray Data is not installed (pip install 'scorer[ray]')")

from scorer.export.onnx_export import export_model
from tests.conftest import REPO
from tests.helpers import make_model_dir, write_reviews

pytestmark = pytest.mark.cluster


def _namespace() -> list[str]:
    """The command prefix that runs a child in a private network namespace with loopback up."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2) for a private network namespace")
    probe = subprocess.run(
        ["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot make a private network namespace here: {probe.stderr.strip()}")
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"']


def test_scoring_on_an_existing_two_node_cluster_equals_the_local_engine(tmp_path) -> None:
    prefix = _namespace()
    model = make_model_dir(tmp_path / "model", variant="packed").path
    export_model(model)
    data = write_reviews(tmp_path / "reviews.parquet", n=3000, seed=3)
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "tests.ray_cluster", str(data), str(model), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["nodes"] == 2
    assert report["same_rows"] and report["rows"] == 3000
    # The job left the cluster as it found it.
    assert report["free_cpus_after"] == 2
    # Left alive: only Ray Data's own named service actors (one each per cluster, 0 CPU,
    # e.g. "_StatsActor:datasets_stats_actor"); none of the job's pool (unnamed _MapWorker).
    assert report["live_actors_after"], report
    assert all(not a.endswith(":") for a in report["live_actors_after"]), report
    assert not any("MapWorker" in a for a in report["live_actors_after"]), report
    assert report["placement_groups_after"] == 0

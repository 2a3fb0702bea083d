"""A 2-node Ray cluster on loopback, for the multi-node tests (run inside `unshare -n`).

    python -m tests.ray_cluster DATA MODEL WORK

Starts ``ray.cluster_utils.Cluster`` with two nodes of 1 CPU each, scores DATA with
``scorer run --engine ray --ray-address`` as a separate driver process (as a cluster user
would), then with the local engine, and prints one JSON object: the wall seconds, both
outputs' rows, and what the cluster holds after the job (free CPUs, live actors, placement
groups). The caller compares and asserts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import polars as pl


def score(data: str, model: str, out: Path, *extra: str) -> float:
    began = time.perf_counter()
    command = [sys.executable, "-m", "scorer", "run", data, "--model", model, "--out", str(out)]
    done = subprocess.run([*command, "--quiet", *extra], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"scorer run {' '.join(extra)} failed ({done.returncode}): {done.stderr}")
    return time.perf_counter() - began


def rows(path: Path) -> list[dict]:
    return pl.read_parquet(path).sort("row").to_dicts()


def main(argv: list[str]) -> None:
    import ray
    from ray.cluster_utils import Cluster

    data, model, work = argv[0], argv[1], Path(argv[2])
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray_out, local_out = work / "ray.scores.parquet", work / "local.scores.parquet"
        seconds = score(data, model, ray_out, "--engine", "ray", "--ray-address", cluster.address)
        local_seconds = score(data, model, local_out)
        ray.init(address=cluster.address, log_to_driver=False)
        deadline = time.time() + 60
        while time.time() < deadline and ray.available_resources().get("CPU", 0) < 2:
            time.sleep(0.5)
        from ray._private.state import actors

        alive = [a for a in actors().values() if a.get("State") != "DEAD"]
        report = {
            "nodes": len([n for n in ray.nodes() if n.get("Alive")]),
            "ray_seconds": seconds,
            "local_seconds": local_seconds,
            "free_cpus_after": ray.available_resources().get("CPU", 0),
            "live_actors_after": sorted(
                f"{a.get('ActorClassName')}:{a.get('Name') or ''}" for a in alive
            ),
            "placement_groups_after": len(ray.util.placement_group_table()),
            "same_rows": rows(ray_out) == rows(local_out),
            "rows": len(rows(local_out)),
        }
        ray.shutdown()
    finally:
        cluster.shutdown()
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])

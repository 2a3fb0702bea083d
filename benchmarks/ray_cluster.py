"""`scorer run --engine ray` on a Ray cluster that already runs, against the local engine.

    python -m benchmarks.ray_cluster --rows 1000000 [--nodes 2] [--cpus-per-node 1]
        [--case connect|driver-kill] [--object-store-mb MB]

A cluster of ``--nodes`` nodes (``ray.cluster_utils.Cluster``, Ray's own multi-node tool) is
started on loopback inside a private network namespace (``unshare -n``, then ``ip link set lo
up``: on Linux Ray advertises the machine's interface address even when told 127.0.0.1;
inside the namespace loopback is the only one). A separate driver process scores the corpus
with ``--engine ray --ray-address``, as a cluster user would; then the local engine scores it.
``--case driver-kill`` SIGKILLs that driver once parts are written and finishes the output
with ``--resume`` against the same cluster (its seconds: both attempts); ``--case node-loss``
removes the last node (its processes killed) once parts are written. ``--object-store-mb``
gives every node an object store that small (Ray's floor is 75 MB).
Printed and saved: each side's wall seconds, whether the rows are equal, rows written,
duplicates and missing rows, and what the cluster holds afterwards (free CPUs, live actors,
placement groups). ``tests/test_ray_cluster.py`` runs the same with small data (``--data``,
``--model``, ``--work``, ``--no-save``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

INSIDE = "SCORER_BENCH_NETNS"


def command(data: Path, model: Path | None, out: Path, *extra: str) -> list[str]:
    argv = [sys.executable, "-m", "scorer", "run", str(data), "--out", str(out), "--quiet"]
    return [*argv, *(["--model", str(model)] if model is not None else []), *extra]


def score(data: Path, model: Path | None, out: Path, *extra: str) -> float:
    began = time.perf_counter()
    done = subprocess.run(command(data, model, out, *extra), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"scorer run {' '.join(extra)} failed ({done.returncode}): {done.stderr}")
    return time.perf_counter() - began


def compare(ray_out: Path, local_out: Path) -> dict:
    """Rows written by Ray, duplicates and missing rows by input position, and equality."""
    ray_rows = pl.read_parquet(ray_out).sort("row")
    local_rows = pl.read_parquet(local_out).sort("row")
    positions = ray_rows["row"]
    wanted = set(range(len(local_rows)))
    return {
        "rows_written": len(ray_rows),
        "duplicates": len(positions) - positions.n_unique(),
        "missing": len(wanted - set(positions.to_list())),
        "same_rows": ray_rows.equals(local_rows),
    }


def started_with_parts(
    data: Path, model: Path | None, out: Path, ray_args: tuple[str, ...], parts: int = 3
) -> subprocess.Popen:
    """A Ray run started as its own driver process, once ``parts`` parts are on disk."""
    process = subprocess.Popen(
        command(data, model, out, *ray_args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    folder = out.with_name(f".{out.name}.partial")
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if folder.is_dir() and len(list(folder.glob("part-*.parquet"))) >= parts:
            return process
        time.sleep(0.05)
    process.kill()
    raise SystemExit(f"the run ended or stalled before {parts} parts were written")


def killed_then_resumed(data: Path, model: Path | None, out: Path, *ray_args: str) -> dict:
    """SIGKILL the driver once 3 parts are written, then ``--resume`` on the same cluster."""
    began = time.perf_counter()
    process = started_with_parts(data, model, out, ray_args)
    parts = out.with_name(f".{out.name}.partial")
    process.kill()
    process.communicate()
    killed_s = time.perf_counter() - began
    parts_then = len(list(parts.glob("part-*.parquet")))
    resume_s = score(data, model, out, *ray_args, "--resume")
    return {"killed_after_s": killed_s, "parts_at_kill": parts_then, "resume_s": resume_s}


def node_lost(cluster, data: Path, model: Path | None, out: Path, *ray_args: str) -> dict:
    """Remove a worker node (SIGKILL of its processes) once 3 parts are written; the run
    must still end with every row once."""
    began = time.perf_counter()
    process = started_with_parts(data, model, out, ray_args)
    removed_at = time.perf_counter() - began
    cluster.remove_node(cluster.list_all_nodes()[-1], allow_graceful=False)
    try:
        _, err = process.communicate(timeout=LOSS_LIMIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        raise SystemExit(f"no end {LOSS_LIMIT_S} s after the node loss: {err[-2000:]}") from None
    if process.returncode != 0:
        raise SystemExit(
            f"the run failed after the node loss ({process.returncode}): {err[-2000:]}"
        )
    return {"node_removed_after_s": removed_at, "seconds": time.perf_counter() - began}


LOSS_LIMIT_S = 300


def on_cluster(
    data: Path,
    model: Path | None,
    work: Path,
    nodes: int,
    cpus: int,
    case: str = "connect",
    store_mb: int | None = None,
    chunk_rows: int = 20_000,
) -> dict:
    import ray
    from ray._private.state import actors
    from ray.cluster_utils import Cluster

    node_args: dict = {"num_cpus": cpus}
    if store_mb:
        node_args["object_store_memory"] = store_mb * 2**20
    cluster = Cluster(
        initialize_head=True, head_node_args={**node_args, "include_dashboard": False}
    )
    try:
        for _ in range(nodes - 1):
            cluster.add_node(**node_args)
        cluster.wait_for_nodes()
        ray_out, local_out = work / "ray.scores.parquet", work / "local.scores.parquet"
        for old in (ray_out, local_out, ray_out.with_name(f".{ray_out.name}.partial")):
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
        ray_args = ("--engine", "ray", "--ray-address", cluster.address)
        began = time.perf_counter()
        killed = None  # what the driver-kill or node-loss case recorded ("fault")
        if case == "node-loss":
            ray_args = (*ray_args, "--chunk-rows", str(chunk_rows))
            killed = node_lost(cluster, data, model, ray_out, *ray_args)
        elif case == "driver-kill":
            ray_args = (*ray_args, "--chunk-rows", str(chunk_rows))
            killed = killed_then_resumed(data, model, ray_out, *ray_args)
        else:
            score(data, model, ray_out, *ray_args)
        ray_s = time.perf_counter() - began
        local_s = score(data, model, local_out)
        ray.init(address=cluster.address, log_to_driver=False)
        deadline = time.time() + 60
        while time.time() < deadline and ray.available_resources().get("CPU", 0) < nodes * cpus:
            time.sleep(0.5)
        alive = [a for a in actors().values() if a.get("State") != "DEAD"]
        report = {
            "case": case,
            "object_store_mb": store_mb,
            "fault": killed,
            "nodes": len([n for n in ray.nodes() if n.get("Alive")]),
            "cpus_per_node": cpus,
            "ray_seconds": ray_s,
            "local_seconds": local_s,
            **compare(ray_out, local_out),
            "free_cpus_after": ray.available_resources().get("CPU", 0),
            "live_actors_after": sorted(
                f"{a.get('ActorClassName')}:{a.get('Name') or ''}" for a in alive
            ),
            "placement_groups_after": len(ray.util.placement_group_table()),
            "manifest": json.loads((work / "ray.scores.parquet.manifest.json").read_text()),
        }
        ray.shutdown()
    finally:
        cluster.shutdown()
    return report


def namespace_prefix() -> list[str] | None:
    """The prefix that runs a command in a private network namespace with loopback up, or
    None where this machine cannot make one."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True)
    if probe.returncode != 0:
        return None
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"']


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument(
        "--case", choices=["connect", "driver-kill", "node-loss"], default="connect"
    )
    parser.add_argument("--object-store-mb", type=int, default=None)
    parser.add_argument("--chunk-rows", type=int, default=20_000, help="driver-kill: Ray units")
    parser.add_argument("--data", type=Path, default=None, help="default: the N-row corpus")
    parser.add_argument("--model", type=Path, default=None, help="default: the bundled model")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    if os.environ.get(INSIDE) != "1":
        prefix = namespace_prefix()
        if prefix is None:
            raise SystemExit("needs unshare and ip, and the right to make a network namespace")
        command = [*prefix, sys.executable, "-m", "benchmarks.ray_cluster", *(argv or sys.argv[1:])]
        done = subprocess.run(command, env={**os.environ, INSIDE: "1"})
        raise SystemExit(done.returncode)
    from benchmarks.common import machine, save
    from benchmarks.e2e import WORK, corpus

    data = args.data or corpus(args.rows)
    work = args.work or WORK / "ray-cluster"
    work.mkdir(parents=True, exist_ok=True)
    report = on_cluster(
        data,
        args.model,
        work,
        args.nodes,
        args.cpus_per_node,
        args.case,
        args.object_store_mb,
        args.chunk_rows,
    )
    report["rows"] = pl.scan_parquet(data).select(pl.len()).collect().item()
    print(json.dumps({k: v for k, v in report.items() if k != "manifest"}))
    if not args.no_save:
        result = {
            "machine": machine(),
            "command": "python -m benchmarks.ray_cluster " + " ".join(argv or sys.argv[1:]),
            **report,
        }
        name = "ray-cluster" if args.case == "connect" else f"ray-cluster-{args.case}"
        if args.object_store_mb:
            name += f"-store{args.object_store_mb}mb"
        print(f"saved {save(name, result)}")
    return report


if __name__ == "__main__":
    main()

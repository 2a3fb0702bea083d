"""`scorer run --engine ray` on a Ray cluster that already runs, against the local engine.

    python -m benchmarks.ray_cluster --rows 1000000 [--nodes 2] [--cpus-per-node 1]
        [--case connect|driver-kill|node-loss] [--object-store-mb MB [MB ...]] [--repeats R]

A cluster of ``--nodes`` nodes (``ray.cluster_utils.Cluster``, Ray's own multi-node tool) is
started on loopback inside a private network namespace (``unshare -n``, then ``ip link set lo
up``: on Linux Ray advertises the machine's interface address even when told 127.0.0.1;
inside the namespace loopback is the only one). A separate driver process scores the corpus
with ``--engine ray --ray-address``, as a cluster user would; then the local engine scores it.
``--case driver-kill`` SIGKILLs that driver once parts are written and finishes the output
with ``--resume`` against the same cluster (its seconds: both attempts); ``--case node-loss``
removes the worker node hosting the most pool actors (its processes killed) once parts are
written. ``--object-store-mb`` gives every node an object store that small (Ray's floor is
75 MB; 0 is Ray's default); several sizes run in turn for ``--repeats`` rounds, each on a
fresh cluster, and their medians are compared.
Printed and saved: each side's wall seconds, whether the rows are equal, rows written,
duplicates and missing rows, the manifest's retries, what the object stores spilled, and
what the cluster holds afterwards (free CPUs, live actors, placement groups).
``tests/test_ray_cluster.py`` runs the same with small data (``--data``, ``--model``,
``--work``, ``--no-save``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl

from benchmarks.common import median

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
    """Once 3 parts are written, remove the worker node that hosts the most of the pool's
    actors (SIGKILL of its processes); the run must still end with every row once."""
    import ray

    began = time.perf_counter()
    process = started_with_parts(data, model, out, ray_args)
    removed_at = time.perf_counter() - began
    workers = [n for n in cluster.list_all_nodes() if n is not cluster.head_node]
    ray.init(address=cluster.address, log_to_driver=False)
    hosted = pool_actors_per_node()
    ray.shutdown()
    victim = max(workers, key=lambda n: hosted.get(n.node_id, 0))
    cluster.remove_node(victim, allow_graceful=False)
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
    return {
        "node_removed_after_s": removed_at,
        "actors_on_lost_node": hosted.get(victim.node_id, 0),
        "pool_actors": sum(hosted.values()),
        "seconds": time.perf_counter() - began,
    }


def pool_actors_per_node() -> dict[str, int]:
    """Alive actors of Ray Data's pools (``MapWorker(MapBatches(...))``) per node id."""
    from ray._private.state import actors

    hosted: dict[str, int] = {}
    for actor in actors().values():
        pool = str(actor.get("ActorClassName")).startswith("MapWorker(")
        if pool and actor.get("State") == "ALIVE":
            node = actor.get("Address", {}).get("NodeID", "")
            hosted[node] = hosted.get(node, 0) + 1
    return hosted


class SpillWatch:
    """The peak bytes in the cluster's spill folder (every node spills there: one machine),
    sampled while the run goes: spilled objects are deleted once freed, so the folder is
    empty again at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.peak = 0
        self.files: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            total = 0
            for path in self.folder.rglob("*"):
                try:
                    total += path.stat().st_size if path.is_file() else 0
                except OSError:
                    continue  # deleted between listing and stat
                self.files.add(path.name)
            self.peak = max(self.peak, total)

    def __enter__(self) -> SpillWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> dict[str, float]:
        return {"spilled_peak_mb": self.peak / 2**20, "spill_files_seen": len(self.files)}


LOSS_LIMIT_S = 300
FAULT_CHUNK_ROWS = 20_000


def on_cluster(
    data: Path,
    model: Path | None,
    work: Path,
    nodes: int,
    cpus: int,
    case: str = "connect",
    store_mb: int | None = None,
    chunk_rows: int | None = None,
) -> dict:
    import ray
    from ray._private.state import actors
    from ray.cluster_utils import Cluster

    node_args: dict = {"num_cpus": cpus}
    if store_mb:
        node_args["object_store_memory"] = store_mb * 2**20
    spill = work / "spill"
    shutil.rmtree(spill, ignore_errors=True)
    spill.mkdir(parents=True)
    spilling = {"type": "filesystem", "params": {"directory_path": str(spill)}}
    head_args = {
        **node_args,
        "include_dashboard": False,
        "_system_config": {"object_spilling_config": json.dumps(spilling)},
    }
    cluster = Cluster(initialize_head=True, head_node_args=head_args)
    try:
        for _ in range(nodes - 1):
            cluster.add_node(**node_args)
        cluster.wait_for_nodes()
        ray_out, local_out = work / "ray.scores.parquet", work / "local.scores.parquet"
        for old in (ray_out, local_out, ray_out.with_name(f".{ray_out.name}.partial")):
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
        ray_args = ("--engine", "ray", "--ray-address", cluster.address)
        if chunk_rows is None and case != "connect":
            chunk_rows = FAULT_CHUNK_ROWS  # parts appear soon enough to interrupt
        if chunk_rows is not None:
            ray_args = (*ray_args, "--chunk-rows", str(chunk_rows))
        began = time.perf_counter()
        killed = None  # what the driver-kill or node-loss case recorded ("fault")
        with SpillWatch(spill) as watch:
            if case == "node-loss":
                killed = node_lost(cluster, data, model, ray_out, *ray_args)
            elif case == "driver-kill":
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
            "object_store": watch.report(),
            "manifest": json.loads((work / "ray.scores.parquet.manifest.json").read_text()),
        }
        report["retries"] = report["manifest"]["retries"]
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
    parser.add_argument(
        "--object-store-mb",
        type=int,
        nargs="+",
        default=[0],
        help="per node; 0: Ray's default. Several sizes run in turn, --repeats rounds",
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=None,
        help=f"Ray's units (default: the engine's; {FAULT_CHUNK_ROWS:,} in the fault cases)",
    )
    parser.add_argument("--data", type=Path, default=None, help="default: the N-row corpus")
    parser.add_argument("--model", type=Path, default=None, help="default: the bundled model")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if os.environ.get(INSIDE) != "1":
        prefix = namespace_prefix()
        if prefix is None:
            raise SystemExit("needs unshare and ip, and the right to make a network namespace")
        command = [*prefix, sys.executable, "-m", "benchmarks.ray_cluster", *(argv or sys.argv[1:])]
        done = subprocess.run(command, env={**os.environ, INSIDE: "1"})
        raise SystemExit(done.returncode)
    from benchmarks.common import machine, save

    report = rounds(args) if len(args.object_store_mb) > 1 or args.repeats > 1 else one(args)
    print(json.dumps({k: v for k, v in report.items() if k != "manifest"}))
    if not args.no_save:
        result = {
            "machine": machine(),
            "command": "python -m benchmarks.ray_cluster " + " ".join(argv or sys.argv[1:]),
            **report,
        }
        name = "ray-cluster" if args.case == "connect" else f"ray-cluster-{args.case}"
        if args.object_store_mb != [0]:
            name += "-store-" + "-".join(
                f"{mb}mb" if mb else "default" for mb in args.object_store_mb
            )
        print(f"saved {save(name, result)}")
    return report


def one(args: argparse.Namespace, store_mb: int | None = None) -> dict:
    from benchmarks.e2e import WORK, corpus

    data = args.data or corpus(args.rows)
    work = args.work or WORK / "ray-cluster"
    work.mkdir(parents=True, exist_ok=True)
    store = store_mb if store_mb is not None else args.object_store_mb[0]
    report = on_cluster(
        data,
        args.model,
        work,
        args.nodes,
        args.cpus_per_node,
        args.case,
        store or None,
        args.chunk_rows,
    )
    report["rows"] = pl.scan_parquet(data).select(pl.len()).collect().item()
    return report


def rounds(args: argparse.Namespace) -> dict:
    """Each object store size in turn, ``--repeats`` rounds, a fresh cluster each run: the
    sizes' times are compared within one run of the benchmark, interleaved."""
    runs = []
    for round_ in range(args.repeats):
        for mb in args.object_store_mb:
            report = one(args, mb)
            report.pop("manifest")
            runs.append({"round": round_, **report})
            print(json.dumps(runs[-1]), flush=True)
    sizes = {}
    for mb in args.object_store_mb:
        mine = [r for r in runs if (r["object_store_mb"] or 0) == mb]
        sizes[str(mb or "default")] = {
            "ray_seconds": median([r["ray_seconds"] for r in mine]),
            "local_seconds": median([r["local_seconds"] for r in mine]),
            "spilled_peak_mb": median([r["object_store"]["spilled_peak_mb"] for r in mine]),
            "every_row_once": all(
                r["duplicates"] == 0 and r["missing"] == 0 and r["same_rows"] for r in mine
            ),
        }
    return {"case": args.case, "rows": runs[0]["rows"], "medians": sizes, "runs": runs}


if __name__ == "__main__":
    main()

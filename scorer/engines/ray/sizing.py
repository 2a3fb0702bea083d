"""How the Ray engine sizes and places its actor pool: from each node's free CPUs, so that
the read and write tasks always find their CPUs and a lost node's actors restart on the nodes
left, with the actors spread over the nodes in proportion to their CPUs."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from scorer.errors import UserError

# How long a run waits at its start for CPUs that a job just ended is still releasing.
SETTLE_S = 10.0

# On several nodes an actor reserves no CPU but this much memory: a soft node affinity with
# no reservation at all let Ray move the actor to any node once its planned node was busy;
# with this token it stays. CPU tokens (0.01 per actor, tasks 0.99) kept the actors in place
# too, but a resumed run took 73 s against 45 s with whole-CPU tasks (1M reviews, 2 x 1-CPU
# nodes, one run each, not kept).
ACTOR_MEMORY_TOKEN = 2**20


@dataclass(frozen=True)
class Sizing:
    actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    threads: int
    memory_per_actor: int = 0  # bytes: ACTOR_MEMORY_TOKEN on several nodes, to place them


def size_pool(node_cpus: Sequence[float], gpus: float, device: str, workers: int | None) -> Sizing:
    """Actors and what each asks for, from the free CPUs of each node, so that the read and
    write tasks always find their CPU on some node.

    A pool whose actors hold every CPU deadlocks the pipeline: the first read task never gets
    a CPU (ray-project/ray#44687; measured here: 2 actors x 1 CPU on a 2-CPU instance hang,
    2 x 0.5 run). On several nodes fractional actors can leave every node short of a whole
    CPU (seen: 2 nodes x 1 CPU, a 0.5-CPU actor on each, the read task pending forever), and
    whole-CPU actors stall when a node is lost (the restarted actor takes the CPU the tasks
    need). So there the actors are one fewer than the whole free CPUs and reserve no CPU
    (only ``ACTOR_MEMORY_TOKEN``): the tasks always schedule, and a lost node's actors
    restart on the nodes left. ``place_actors`` says where each actor goes.
    """
    whole = [math.floor(c + 1e-9) for c in node_cpus]
    free = sum(whole)
    if free < 1:
        shown = ", ".join(f"{c:g}" for c in node_cpus) or "none"
        raise UserError(
            f"the Ray cluster has no whole free CPU on any node (free CPUs per node: {shown}); "
            "scorer needs one for its read and write tasks"
        )
    one_node = len(node_cpus) == 1
    cpus = float(node_cpus[0]) if one_node else float(free)
    if device == "cuda":
        if gpus < 1:
            raise UserError("--device cuda: the Ray cluster has no GPU")
        actors = min(workers or int(gpus), int(gpus))
        if one_node:
            per_cpu = min(1.0, max(cpus - 1.0, 0.0) / actors)
        else:
            per_cpu = 1.0 if free - 1 >= actors else 0.0
        return Sizing(actors, per_cpu, 1.0, 1)
    if not one_node:
        cap = max(free - 1, 1)
        return Sizing(min(workers or cap, cap), 0.0, 0.0, 1, ACTOR_MEMORY_TOKEN)
    per_cpu = 1.0 if cpus >= 3 else (0.5 if cpus >= 2 else 0.0)
    cap = max(1, math.floor((cpus - 1) / per_cpu)) if per_cpu else 1
    actors = min(workers or cap, cap)
    return Sizing(actors, per_cpu, 0.0, max(1, math.floor(per_cpu)))


def place_actors(node_cpus: Sequence[float], actors: int) -> list[int]:
    """How many of ``actors`` (on several nodes, on CPU) each node hosts: in proportion to
    its whole free CPUs, one fewer on the largest node (that CPU runs the read and write
    tasks), rounded by largest remainder.

    Ray's SPREAD does not do this for actors that reserve no CPU: Ray Data's whole pool
    often landed on one node (seen: 3 of 3 actors on one of two 2-CPU nodes, in 3 runs of 3;
    with the model passed as an object, on the node holding it), leaving the other idle.
    """
    whole = [math.floor(c + 1e-9) for c in node_cpus]
    left = list(whole)
    if left:
        left[left.index(max(left))] -= 1
    room = sum(left)
    counts = [0] * len(left)
    if room <= 0:  # one whole CPU in all: the actor shares it with the tasks
        if counts:
            counts[whole.index(max(whole))] = actors
        return counts
    shares = [actors * c / room for c in left]
    counts = [math.floor(share) for share in shares]
    by_remainder = sorted(range(len(left)), key=lambda i: (counts[i] - shares[i], i))
    for node in by_remainder[: actors - sum(counts)]:
        counts[node] += 1
    return counts


class NodeCycle:
    """``ray_remote_args_fn`` for the pool: each new actor on the next planned node, softly
    (an actor restarted after its node is lost goes to any node)."""

    def __init__(self, node_ids: Sequence[str]) -> None:
        self.node_ids = list(node_ids)
        self.started = 0

    def __call__(self) -> dict:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node = self.node_ids[self.started % len(self.node_ids)]
        self.started += 1
        return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=True)}


def actor_nodes(free: dict[str, float], actors: int) -> list[str]:
    """Each actor's node id, taking the nodes in turn (the first actors spread first)."""
    counts = dict(zip(free, place_actors(list(free.values()), actors), strict=True))
    order = []
    while any(counts.values()):
        for node, count in counts.items():
            if count:
                order.append(node)
                counts[node] -= 1
    return order


def free_cpus_per_node(ray, settle_s: float = SETTLE_S) -> dict[str, float]:
    """Each alive node's free CPUs, by node id, before this job asks for any. Waits up to
    ``settle_s`` for them to reach the nodes' totals: a job that just ended may still be
    releasing its actors; on a cluster busy with other work, what is free after that is what
    counts."""
    try:
        from ray._private.state import (
            available_resources_per_node,
            total_resources_per_node,
        )
    except ImportError:
        return _node_totals(ray)
    deadline = time.monotonic() + settle_s
    while True:
        try:
            per_node = available_resources_per_node()
            totals = total_resources_per_node()
        except Exception:  # Ray Client (ray://): these need a local worker
            return _node_totals(ray)
        free = {k: float(r.get("CPU", 0.0)) for k, r in per_node.items()}
        total = {k: float(r.get("CPU", 0.0)) for k, r in totals.items()}
        if all(free.get(k, 0.0) >= c for k, c in total.items()) or time.monotonic() > deadline:
            return free
        time.sleep(0.25)


def _node_totals(ray) -> dict[str, float]:
    """Each alive node's CPUs (``ray.nodes()`` works through Ray Client too)."""
    return {
        str(n["NodeID"]): float(n["Resources"].get("CPU", 0.0))
        for n in ray.nodes()
        if n.get("Alive")
    }

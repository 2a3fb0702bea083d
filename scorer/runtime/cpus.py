"""How many CPUs this process may really use: affinity and the cgroup CPU quota.

``os.cpu_count()`` counts the host's CPUs, not the ones a container or ``taskset`` leaves
this process, so thread and worker counts taken from it oversubscribe a limited job.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cgroup_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota in CPUs (cgroup v2 ``cpu.max`` or v1 ``cfs_quota_us``), or None."""
    for quota_file, period_file in (
        (root / "cpu.max", None),
        (root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"),
        (root / "cpu,cpuacct" / "cpu.cfs_quota_us", root / "cpu,cpuacct" / "cpu.cfs_period_us"),
    ):
        try:
            text = quota_file.read_text().split()
            if period_file is None:
                quota, period = text[0], text[1]
            else:
                quota, period = text[0], period_file.read_text().split()[0]
        except (OSError, IndexError):
            continue
        if quota in ("max", "-1"):
            return None
        try:
            value = int(quota) / int(period)
        except (ValueError, ZeroDivisionError):
            continue
        return value if value > 0 else None
    return None


def available_cpus() -> int:
    """CPUs this process may use: its affinity, capped by the cgroup quota (rounded up)."""
    cpus = affinity_cpus()
    quota = cgroup_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)

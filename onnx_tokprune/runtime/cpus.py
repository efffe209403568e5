"""How many CPUs this process can really use (no torch needed).

`os.cpu_count()` reports the host's CPUs. In a container limited by a cgroup CPU quota, or a process
pinned to a few cores, onnxruntime's and PyTorch's default pools then start one spinning thread per
host core on a couple of real ones, and every run waits on descheduled threads (parity was measured
100x slower that way). Sessions and the PyTorch side therefore default to `available_cpus()`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_V2_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def cgroup_cpu_limit(v2: Path = CGROUP_V2_MAX, v1_quota: Path = CGROUP_V1_QUOTA, v1_period: Path = CGROUP_V1_PERIOD) -> int | None:
    """CPUs allowed by the cgroup quota (rounded up), or None when there is no quota."""
    try:
        if v2.is_file():
            quota, _, period = v2.read_text().strip().partition(" ")
            if quota != "max" and period:
                return max(1, math.ceil(int(quota) / int(period)))
            return None
        if v1_quota.is_file() and v1_period.is_file():
            quota, period = int(v1_quota.read_text()), int(v1_period.read_text())
            if quota > 0 and period > 0:
                return max(1, math.ceil(quota / period))
    except (OSError, ValueError):
        return None
    return None


def available_cpus() -> int:
    """CPUs of this process's affinity set, capped by a cgroup CPU quota; at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:
        count = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, min(count, limit) if limit else count)

"""The CPU count sessions and parity use: the affinity set, capped by a cgroup quota."""

from __future__ import annotations

import os

from onnx_tokprune.runtime.cpus import available_cpus, cgroup_cpu_limit


def test_cgroup_v2_quota(tmp_path):
    limit = tmp_path / "cpu.max"
    limit.write_text("150000 100000\n")
    assert cgroup_cpu_limit(v2=limit) == 2
    limit.write_text("max 100000\n")
    assert cgroup_cpu_limit(v2=limit) is None
    limit.write_text("garbage")
    assert cgroup_cpu_limit(v2=limit) is None


def test_cgroup_v1_quota(tmp_path):
    quota, period = tmp_path / "quota", tmp_path / "period"
    quota.write_text("400000\n")
    period.write_text("100000\n")
    assert cgroup_cpu_limit(v2=tmp_path / "absent", v1_quota=quota, v1_period=period) == 4
    quota.write_text("-1\n")
    assert cgroup_cpu_limit(v2=tmp_path / "absent", v1_quota=quota, v1_period=period) is None


def test_available_cpus_is_within_the_affinity_set():
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


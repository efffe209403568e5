"""The one timing schedule and the one removal-efficiency oracle every benchmark uses.

- `timed_chunks`: inputs in chunks of CHUNK; within a chunk each job runs all its inputs (median of
  `repeats` runs each) before the next job starts (warm caches, as a server running one model has);
  the jobs alternate chunk by chunk, so a machine's drift hits them all alike.
- `oracle_feeds`: the unpruned graph's input for the oracle of removal efficiency (docs/design.md §4):
  the input cut to its first L_eq tokens, L_eq the length whose unpruned FLOPs equal the pruned run's.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from onnx_tokprune.flops import EncoderShape

Feeds = dict[str, np.ndarray]
CHUNK = 16
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


class Runner:
    """One variant: a callable on encoded feeds returning {output name: array}."""

    def __init__(self, name: str, run: Callable[[Feeds], dict[str, np.ndarray]]) -> None:
        self.name, self.run = name, run

    def time(self, feeds: Feeds, repeats: int) -> tuple[float, dict[str, np.ndarray]]:
        """(median ms over `repeats` runs, the last run's outputs)."""
        times, out = [], {}
        for _ in range(repeats):
            start = time.perf_counter()
            out = self.run(feeds)
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e3, out


def cut(feeds: Feeds, length: int) -> Feeds:
    """`feeds` with every input cut to its first `length` tokens."""
    return {k: v[:, :length] for k, v in feeds.items()}


def oracle_feeds(shape: EncoderShape, feeds: Feeds, flops: float) -> Feeds:
    """`feeds` (one unpadded input) cut to the length whose unpruned FLOPs equal `flops`, at least 1 token."""
    n = feeds["input_ids"].shape[1]
    return cut(feeds, max(1, min(n, int(round(shape.equivalent_length(flops))))))


def timed_chunks(
    jobs: dict[str, list[tuple[Runner, Feeds]]], repeats: int, desc: str, progress: bool
) -> dict[str, list[tuple[float, dict[str, np.ndarray]]]]:
    """Time every job (see the module docstring); returns per job key its (median ms, outputs) per input."""
    results: dict[str, list[tuple[float, dict[str, np.ndarray]]]] = {key: [] for key in jobs}
    total = max((len(items) for items in jobs.values()), default=0)
    for start in tqdm(range(0, total, CHUNK), desc=desc, disable=not progress):
        for key, items in jobs.items():
            for runner, feeds in items[start : start + CHUNK]:
                results[key].append(runner.time(feeds, repeats))
    return results


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def isa_flags() -> list[str]:
    """The SIMD extensions onnxruntime's kernels can use on this CPU (from /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [f for f in ISA_FLAGS if f in flags]

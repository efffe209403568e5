"""Batch-1 latency of one artifact with compiled kernel libraries and with the portable ONNX functions,
alternating in one process (the README's long-input kernel comparison).

Usage: python tools/kernel_vs_function.py ARTIFACT TEXTS.txt [--library NAME=PATH ...] [--texts 12] [--runs 5] [--threads 2]
Without --library the built kernel (tokprune build-kernel) is compared with the functions. Prints the mean
ms per text of each variant.
"""

from __future__ import annotations

import argparse
import time

from onnx_tokprune.data.text import read_texts
from onnx_tokprune.runtime.kernel import find_kernel
from onnx_tokprune.runtime.session import PrunedSession


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact")
    parser.add_argument("texts")
    parser.add_argument("--library", action="append", default=[], help="NAME=PATH of a kernel library (repeat).")
    parser.add_argument("--texts", dest="count", type=int, default=12)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    libraries = dict(item.split("=", 1) for item in args.library) or {"kernel": str(find_kernel())}
    sessions = {name: PrunedSession(args.artifact, args.threads, path, spinning=False) for name, path in libraries.items()}
    sessions["function"] = PrunedSession(args.artifact, args.threads, False, spinning=False)
    encoder = next(iter(sessions.values())).text_encoder
    feeds = [encoder([text]) for text in read_texts(args.texts)[: args.count]]
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(args.runs):
        for name, session in sessions.items():
            for f in feeds:
                start = time.perf_counter()
                session.run(f)
                times[name].append(time.perf_counter() - start)
    print(f"{args.artifact} on {args.texts} ({len(feeds)} texts x {args.runs} runs, {args.threads} threads): "
          + "  ".join(f"{name} {1e3 * sum(t) / len(t):.2f} ms" for name, t in times.items()))


if __name__ == "__main__":
    main()

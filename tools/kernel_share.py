"""Share of a pruned artifact's batch-1 latency spent in the compiled kernels, TokenPrune and
ScoredAttention (onnxruntime profiling).

Usage: python tools/kernel_share.py ARTIFACT DEV.tsv [--samples 200] [--threads 2]
Runs each sentence once with the compiled kernel registered (tokprune build-kernel) and profiling on
(profile written under a temp dir, then deleted); prints each op's time per run and its share of
the whole run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import onnxruntime as ort

from onnx_tokprune.data.text import read_texts
from onnx_tokprune.runtime.kernel import find_kernel
from onnx_tokprune.artifact import MODEL_FILE
from onnx_tokprune.runtime.session import PrunedSession, session_options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact")
    parser.add_argument("data")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    kernel = find_kernel()
    if kernel is None:
        raise SystemExit("no TokenPrune kernel: run `tokprune build-kernel` first")
    encoder = PrunedSession(args.artifact, kernel_library=False).text_encoder
    with tempfile.TemporaryDirectory(prefix="tokprune-profile-") as tmp:
        options = session_options(args.threads, kernel, spinning=False)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(Path(args.artifact) / MODEL_FILE), options, providers=["CPUExecutionProvider"])
        inputs = {i.name for i in session.get_inputs()}
        examples = read_texts(args.data, limit=args.samples)
        for example in examples:
            feeds = encoder([example])
            session.run(None, {k: v for k, v in feeds.items() if k in inputs})
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e["dur"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    for op in ("TokenPrune", "ScoredAttention"):
        spent = sum(e["dur"] for e in events if e.get("cat") == "Node" and e["args"].get("op_name") == op and e["name"].endswith("_kernel_time"))
        print(
            f"{args.artifact}: {op} {spent / len(runs):.1f} µs per run of {sum(runs) / len(runs) / 1000:.2f} ms "
            f"= {100 * spent / sum(runs):.2f}% ({len(runs)} sentences, {args.threads} threads, profiling on)"
        )


if __name__ == "__main__":
    main()

"""One table from several `tokprune-bench` runs (tools/speed_matrix.sh): their bench.json files, each
data row labelled with the artifact it measured, then one line per artifact (graph, command)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from onnx_tokprune.bench.suite import from_json, markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench_dirs", nargs="+", help="Directories written by tokprune-bench --output.")
    parser.add_argument("--output", required=True, help="Markdown file to write.")
    args = parser.parse_args()
    reports = [from_json(json.loads((Path(d) / "bench.json").read_text())) for d in args.bench_dirs]
    notes = []
    for report in reports:
        name = Path(report.artifact).name
        for result in report.results:
            result.data = f"{result.data} `{name}`"
        notes.append(f"- `{name}`: {report.pruned_graph}. `{report.command}`")
    merged = reports[0]
    merged.results = [result for report in reports for result in report.results]
    merged.command = merged.pruned_graph = ""
    table = markdown(merged) + "\n\n" + "\n".join(notes) + "\n"
    Path(args.output).write_text(table)
    print(table)


if __name__ == "__main__":
    main()

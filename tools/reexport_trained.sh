#!/usr/bin/env bash
# After a change to the model code or the exporter: re-export and re-evaluate the trained LTP / ToP
# checkpoints of tools/ltp_glue.sh and tools/top_glue.sh without training again, then rebuild the
# LTP table (tools/ltp_table.py) and the baseline/LTP/ToP table (tools/methods_table.py).
# Usage: bash tools/reexport_trained.sh [LTP_OUT] [TOP_OUT]   (defaults out/ltp, out/top)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TOKPRUNE_DATA=${TOKPRUNE_DATA:-../shared/data/glue}
LTP=${1:-out/ltp}
TOP=${2:-out/top}
for task in ${TASKS:-sst2 mrpc}; do
  tokprune-export --model "$LTP/${task}_ft" --unpruned --optimize --output "$LTP/${task}_ft-unpruned-onnx" --force
  tokprune-eval --model "$LTP/${task}_ft" --task "$task" --json "$LTP/${task}_ft_eval.json"
  for run in "$LTP/${task}_ltp" "$TOP/${task}_top"; do
    tokprune-export --model "$run" --opset 17 --optimize --output "$run-onnx" --force
    tokprune-eval --model "$run" --artifact "$run-onnx" --task "$task" --json "${run}_eval.json"
  done
done
python tools/ltp_table.py --out "$LTP" --tasks ${TASKS:-sst2 mrpc}
python tools/methods_table.py --ltp-out "$LTP" --top-out "$TOP" --tasks ${TASKS:-sst2 mrpc}

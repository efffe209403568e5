#!/usr/bin/env bash
# Reproduce the README's ToP rows on CPU: ToP -> export -> eval for SST-2 and MRPC, starting from the
# fine-tuned checkpoints of tools/ltp_glue.sh (run it first; ToP's teacher is the same model), then the
# baseline/LTP/ToP table with latency. Recipes: models/top_*.json (training-set caps are in them).
# Usage: bash tools/top_glue.sh [TOP_OUT] [LTP_OUT]   (defaults out/top, out/ltp; re-runs replace TOP_OUT's runs)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TOKPRUNE_DATA=${TOKPRUNE_DATA:-../shared/data/glue}
OUT=${1:-out/top}
LTP=${2:-out/ltp}
for task in ${TASKS:-sst2 mrpc}; do
  tokprune-train top --recipe "models/top_${task}.json" --model "$LTP/${task}_ft" --output "$OUT/${task}_top" --force
  tokprune-export --model "$OUT/${task}_top" --opset 17 --optimize --output "$OUT/${task}_top-onnx" --force
  tokprune-eval --model "$OUT/${task}_top" --artifact "$OUT/${task}_top-onnx" --task "$task" --json "$OUT/${task}_top_eval.json"
  tokprune-export --model "$LTP/${task}_ft" --unpruned --optimize --output "$LTP/${task}_ft-unpruned-onnx" --force
done
python tools/methods_table.py --ltp-out "$LTP" --top-out "$OUT" --tasks ${TASKS:-sst2 mrpc}

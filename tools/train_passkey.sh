#!/usr/bin/env bash
# Pass-key instruction tuning of models/mini on the CPU, a curriculum over context lengths
# (models/mini/recipe/passkey/stage*.json): 16 samples per step, lower model trainable, lr 1e-3
# restarted per stage, answer-only loss.
#   stage 1: 1 chunk (64 tokens) of context, 300 steps        (from models/mini)
#   stage 2: 1 chunk, 300 steps, 10 % language modelling
#   stage 3: 1-4 chunks, 400 steps, 10 % language modelling
#   stage 4: 1-16 chunks, 600 steps, 10 % language modelling  -> runs/passkey-4
# then `eval passkey` at 1x-8x W into runs/passkey-4-eval.json. Needs the shards of
# tools/train_mini.sh. About 40 minutes on 2 cores.
#   tools/train_passkey.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SkylakeX}
bin=build/bin/sharedllm
for stage in 1 2 3 4; do
  config=models/mini/recipe/passkey/stage$stage.json
  out=$(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['out'])" "$config")
  [ -f "$out/sharedllm.json" ] || $bin train sft --config "$config"
done
$bin eval passkey --model runs/passkey-4 --lengths 1,2,4,8 --trials 4 --out runs/passkey-4-eval.json

#!/usr/bin/env bash
# The ablations that need training: the shipped models/mini recipe (same base, same
# lm config and seed) with one switch changed at `sharedllm init` — injection top / interleaved,
# split noise off — each trained and then evaluated like models/mini's books ablations.
#   recipes/train_ablations.sh            (after recipes/train_mini.sh; runs/<variant>, docs/results/)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/blas_env.sh
bin=build/bin/sharedllm
base=${BASE:-runs/gpu-base}
[ -f $base/model.safetensors ] || base=runs/mini-base
for variant in injection-top injection-interleaved split-noise-off; do
  init=runs/abl-$variant-init out=runs/abl-$variant
  if [ ! -f $init/sharedllm.json ]; then
    extra=()
    case $variant in
      injection-top) extra=(--injection top) ;;
      injection-interleaved) extra=(--injection interleaved) ;;
    esac
    $bin init --base $base --out $init --layers 2 --chunk-size 64 --depth 3 --alphas 16,8,4 \
      --selection last "${extra[@]}"
    if [ $variant = split-noise-off ]; then
      /usr/bin/python3 -c "import json,sys; p=sys.argv[1]; j=json.load(open(p)); j['split_noise']=False; json.dump(j,open(p,'w'),indent=2)" $init/sharedllm.json
    fi
  fi
  /usr/bin/python3 -c "import json,sys; c=json.load(open('recipes/mini/lm.json')); c.update(init=sys.argv[1], out=sys.argv[2]); json.dump(c,open(sys.argv[2]+'.json','w'),indent=2)" $init $out
  [ -f $out/sharedllm.json ] || $bin train lm --config $out.json
  $bin eval ppl --model $out --shard data/shards/heldout-books.bin --windows 10 --lengths 1,4,16,32 \
    --out docs/results/abl-books-trained-$variant.json
done

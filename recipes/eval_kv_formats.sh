#!/usr/bin/env bash
# What storing keys and values in bfloat16 or int8 costs the shipped model (docs/RESULTS.md
# "Stored formats"): the same windows and keys read back from each format the tree store can keep
# (`sharedllm eval --kv-dtype`), beside the model's own float32. Needs the held-out shards
# (corpus/build_corpus.sh, then corpus/make_shards.py --model models/mini/tokenizer.model).
# About 40 minutes on 2 cores.
#   recipes/eval_kv_formats.sh [MODEL_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/mini}
bin=build/bin/sharedllm
r=docs/results
s=data/shards
source scripts/blas_env.sh
for kv in float32 bfloat16 int8; do
  for doc in books code proofs; do
    $bin eval ppl --model "$model" --shard "$s/heldout-$doc.bin" --lengths 8,32 --windows 30 \
      --kv-dtype $kv --out "$r/kv-ppl-$doc-$kv.json"
  done
  $bin eval passkey --model "$model" --trials 4 --kv-dtype $kv --out "$r/kv-passkey-$kv.json"
done
# Beyond the budget (retrieval picks the chunks read): as computed, and from int8.
$bin eval passkey --model "$model" --lengths 128,512,4096 --trials 4 \
  --out "$r/passkey-beyond-budget.json"
$bin eval passkey --model "$model" --lengths 128,512,4096 --trials 4 --kv-dtype int8 \
  --out "$r/kv-passkey-beyond-budget-int8.json"

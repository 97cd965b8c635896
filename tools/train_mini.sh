#!/usr/bin/env bash
# Reproduces models/mini and models/mini-passkey from scratch: corpus -> tokenizer -> shards ->
# base model -> SharedLLM language-modelling training (models/mini) and, from the same base,
# SharedLLM pass-key instruction tuning (models/mini-passkey). Every training stage resumes from
# its checkpoint when re-run. See models/mini/README.md for what each stage measured.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/build.sh
[ -f data/corpus/MANIFEST.json ] || bash tools/build_corpus.sh
[ -f data/tokenizer/tokenizer.model ] || bash tools/train_tokenizer.sh
[ -f data/shards/train-0000.bin ] || /usr/bin/python3 tools/corpus/make_shards.py \
  --model data/tokenizer/tokenizer.model --corpus data/corpus --out data/shards
export OMP_WAIT_POLICY=PASSIVE
bin=build/bin/sharedllm
$bin train base --config models/mini/recipe/base.json

# SharedLLM language modelling (beta = 8), the default model.
[ -f runs/mini-lm-init/sharedllm.json ] || $bin init --base runs/mini-base --out runs/mini-lm-init \
  --layers 2 --chunk-size 64 --depth 3 --alphas 16,8,4 --selection last
$bin train lm --config models/mini/recipe/lm.json
cp runs/mini-lm/{config.json,model.safetensors,tokenizer.model,sharedllm.json,sharedllm.safetensors} models/mini/
cp runs/mini-base/train_log.jsonl models/mini/recipe/base_log.jsonl
cp runs/mini-lm/train_log.jsonl models/mini/recipe/lm_log.jsonl

# Pass-key instruction tuning (beta = 2, lower model trainable).
[ -f runs/mini-shared-init/sharedllm.json ] || $bin init --base runs/mini-base \
  --out runs/mini-shared-init --layers 2 --chunk-size 64 --depth 3 --alphas 4,2,1 --selection last
$bin train sft --config models/mini-passkey/recipe/sft.json
cp runs/mini-sft/{config.json,model.safetensors,tokenizer.model,sharedllm.json,sharedllm.safetensors} models/mini-passkey/
cp runs/mini-sft/train_log.jsonl models/mini-passkey/recipe/sft_log.jsonl

# Evaluation and docs/RESULTS.md.
$bin eval ppl --model models/mini --shard data/shards/heldout-books.bin --windows 30 --full-attention-max 16 --out docs/results/ppl-books.json
$bin eval ppl --model models/mini --shard data/shards/heldout-code.bin --windows 30 --full-attention-max 16 --out docs/results/ppl-code.json
$bin eval passkey --model models/mini-passkey --trials 4 --out docs/results/passkey.json
/usr/bin/python3 tools/make_results.py --ppl books=docs/results/ppl-books.json \
  --ppl code=docs/results/ppl-code.json --passkey docs/results/passkey.json --out docs

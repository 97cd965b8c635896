#!/usr/bin/env bash
# Reproduces models/mini from scratch: corpus -> tokenizer -> shards -> base model -> SharedLLM
# (instruction-tuned on generated retrieval tasks) -> models/mini. Hours on 2 CPU cores; every
# training stage resumes from its checkpoint when re-run. See models/mini/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/build.sh
[ -f data/corpus/MANIFEST.json ] || bash tools/build_corpus.sh
[ -f data/tokenizer/tokenizer.model ] || bash tools/train_tokenizer.sh
[ -f data/shards/train-0000.bin ] || /usr/bin/python3 tools/corpus/make_shards.py \
  --model data/tokenizer/tokenizer.model --corpus data/corpus --out data/shards
export OMP_WAIT_POLICY=PASSIVE
build/bin/sharedllm train base --config models/mini/recipe/base.json
[ -f runs/mini-shared-init/sharedllm.json ] || build/bin/sharedllm init --base runs/mini-base \
  --out runs/mini-shared-init --layers 2 --chunk-size 64 --depth 3 --alphas 4,2,1 --selection last
build/bin/sharedllm train sft --config models/mini/recipe/sft.json
mkdir -p models/mini
cp runs/mini-sft/{config.json,model.safetensors,tokenizer.model,sharedllm.json,sharedllm.safetensors} models/mini/
cp runs/mini-base/train_log.jsonl models/mini/recipe/base_log.jsonl
cp runs/mini-sft/train_log.jsonl models/mini/recipe/sft_log.jsonl

#!/usr/bin/env bash
# Reproduces models/mini from scratch: corpus -> tokenizer -> shards -> base model (GPU route:
# tools/train_mini_gpu.sh) -> SharedLLM language-modelling training -> every evaluation and
# docs/RESULTS.md (tools/eval_mini.sh). Every training stage resumes from its checkpoint when
# re-run. See models/mini/README.md for what each stage measured.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/build.sh
[ -f data/corpus/MANIFEST.json ] || bash tools/build_corpus.sh
[ -f data/tokenizer/tokenizer.model ] || bash tools/train_tokenizer.sh
[ -f data/shards/train-0000.bin ] || /usr/bin/python3 tools/corpus/make_shards.py \
  --model data/tokenizer/tokenizer.model --corpus data/corpus --out data/shards
export OMP_WAIT_POLICY=PASSIVE OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SkylakeX}
bin=build/bin/sharedllm

# Base model. The shipped one was trained on a GPU (tools/train_mini_gpu.sh data build base, then
# copied back to runs/gpu-base); without one, the CPU recipe trains a much smaller-budget base.
base=runs/gpu-base
if [ ! -f $base/model.safetensors ]; then
  base=runs/mini-base
  $bin train base --config models/mini/recipe/base.json
fi

# SharedLLM language modelling (beta = 8): the shipped model.
[ -f runs/mini-lm-init/sharedllm.json ] || $bin init --base $base --out runs/mini-lm-init \
  --layers 2 --chunk-size 64 --depth 3 --alphas 16,8,4 --selection last
$bin train lm --config models/mini/recipe/lm.json
cp runs/mini-lm/{config.json,model.safetensors,tokenizer.model,sharedllm.json,sharedllm.safetensors} models/mini/
# (the start of tools/train_passkey.sh's curricula)
cp runs/mini-lm/{sharedllm.json,sharedllm.safetensors} models/mini/recipe/lm-stage/
cp $base/train_log.jsonl models/mini/recipe/base_log.jsonl
cp runs/mini-lm/train_log.jsonl models/mini/recipe/lm_log.jsonl

# Evaluation and docs/RESULTS.md.
bash tools/eval_mini.sh models/mini

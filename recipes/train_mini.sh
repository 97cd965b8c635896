#!/usr/bin/env bash
# Reproduces models/mini from scratch: corpus -> tokenizer -> shards -> base model (GPU route:
# recipes/train_mini_gpu.sh) -> SharedLLM language-modelling training -> the retrieval and
# language-modelling curriculum with a separate compressor (recipes/train_passkey.sh separate, about
# 2.5 hours on 2 cores) -> its two last stages, pass keys beside questions that are not about them
# (recipes/mini/gpu/ignore-{a,b}.json: 4 minutes on one H200 through
# `recipes/train_mini_gpu.sh ignore`, copied back to runs/gpu-ignore-b; without that copy they run
# here, about 1.7 hours) -> stage G, the same mix with Coq proofs among its text windows
# (recipes/mini/stage-g.json, about 20 minutes on 2 cores) -> stage H, a deeper reader
# (recipes/mini/mixed/g-own23-lm-rename025-distill.json, about 30 minutes) -> its copying
# heads kept (recipes/copy_heads.py, about 4 minutes) -> every evaluation and
# docs/RESULTS.md (recipes/eval_mini.sh). Every training stage resumes from its checkpoint when
# re-run. See models/mini/README.md for what each stage measured.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
[ -f data/corpus/adapt/django.txt ] || bash corpus/build_corpus.sh
[ -f data/tokenizer/tokenizer.model ] || bash corpus/train_tokenizer.sh
[ -f data/shards/adapt-django.bin ] || /usr/bin/python3 corpus/make_shards.py \
  --model data/tokenizer/tokenizer.model --corpus data/corpus --out data/shards
source scripts/blas_env.sh
bin=build/bin/sharedllm

# Base model. The shipped one was trained on a GPU (recipes/train_mini_gpu.sh data build base, then
# copied back to runs/gpu-base); without one, the CPU recipe trains a much smaller-budget base.
base=runs/gpu-base
if [ ! -f $base/model.safetensors ]; then
  base=runs/mini-base
  $bin train base --config recipes/mini/base.json
fi

# SharedLLM language modelling (beta = 8): where the curriculum starts.
[ -f runs/mini-lm-init/sharedllm.json ] || $bin init --base $base --out runs/mini-lm-init \
  --layers 2 --chunk-size 64 --depth 3 --alphas 16,8,4 --selection last
$bin train lm --config recipes/mini/lm.json
cp runs/mini-lm/{config.json,model.safetensors,tokenizer.model} models/mini/
cp runs/mini-lm/{sharedllm.json,sharedllm.safetensors} recipes/mini/lm-stage/
cp $base/train_log.jsonl recipes/mini/base_log.jsonl
cp runs/mini-lm/train_log.jsonl recipes/mini/lm_log.jsonl

# Retrieval and language modelling with a separate compressor, the base model frozen
# (recipes/mini/passkey-separate): the shipped cross-attention.
bash recipes/train_passkey.sh separate
# The two last stages (recipes/train_mini_gpu.sh, "ignore"): their shards are the first 1.5 M
# tokens of the training shard (what a GPU machine of this workplace could be sent); pack-sub
# also puts stage 10's weights beside them for the GPU machine.
PYTHON=/usr/bin/python3 bash recipes/train_mini_gpu.sh pack-sub
if [ ! -f runs/gpu-ignore-b/sharedllm.safetensors ]; then
  SHAREDLLM=$bin TRAIN_FLAGS="--device cpu --threads 2" bash recipes/train_mini_gpu.sh ignore
fi
for stage in a b; do
  cp runs/gpu-ignore-$stage/train_log.jsonl recipes/mini/gpu/ignore_${stage}_log.jsonl
done
# Stage G: B's cross-attention trained on, 2 in 5 windows from the Coq adaptation text
# (docs/design/data.md, "Adaptation text"): what models/mini ships. About 20 minutes on 2 cores.
$bin train sft --config recipes/mini/stage-g.json
cp runs/mini-g/train_log.jsonl recipes/mini/stage-g_log.jsonl
# The base model is unchanged (tensor for tensor; the file layout may differ).
/usr/bin/python3 - models/mini/model.safetensors runs/passkey-sep-10/model.safetensors \
  runs/gpu-ignore-b/model.safetensors runs/mini-g/model.safetensors <<'PY'
import os, sys
sys.path.insert(0, "recipes")
from checkpoint_to_model import read_safetensors
def tensors(path):
    header, data = read_safetensors(path)
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in header.items()}
base = tensors(sys.argv[1])
for path in sys.argv[2:]:
    if not os.path.exists(path):
        print(f"{path}: not here (only sharedllm.* copied back?), not compared")
    elif tensors(path) != base:
        sys.exit(f"{path}: base changed")
    else:
        print(f"{path}: the base, tensor for tensor")
PY
cp runs/mini-g/{sharedllm.json,sharedllm.safetensors} recipes/mini/g-stage/
# Stage H, the mixed reader: from G, two more injection layers (M = 4) whose readers start as the
# base's own heads of layers 2-3 reading the base's own bottom layers (`separate_layers`), the
# language modelling with renamed windows and distillation beside G's retrieval (about 30 minutes
# on one core). Then recipes/copy_heads.py keeps the three inherited heads that copy and takes out
# the thirteen that do not, removing layer 3, left with none (about 4 minutes): what models/mini
# ships.
[ -f runs/mini-g-own23-init/sharedllm.json ] || $bin edit --model runs/mini-g \
  --out runs/mini-g-own23-init --injection-layers 4 --inherit-o-scale 0.5 --own-lower
$bin train lm --config recipes/mini/mixed/g-own23-lm-rename025-distill.json
cp runs/g-own23-lm-rename025-distill/train_log.jsonl \
  recipes/mini/mixed/g-own23-lm-rename025-distill_log.jsonl
/usr/bin/python3 recipes/copy_heads.py --model runs/g-own23-lm-rename025-distill --layers 2,3 \
  --out runs/mini-copyheads --report docs/results/mini-copy-heads.json
cp runs/mini-copyheads/{sharedllm.json,sharedllm.safetensors} models/mini/
stages=(--stage "lm=recipes/mini/lm_log.jsonl")
for stage in 1 2 3 4 6 7 8 9 10; do
  stages+=(--stage "$stage=recipes/mini/passkey-separate/stage${stage}_log.jsonl")
done
stages+=(--stage "A=recipes/mini/gpu/ignore_a_log.jsonl")
stages+=(--stage "B=recipes/mini/gpu/ignore_b_log.jsonl")
stages+=(--stage "G=recipes/mini/stage-g_log.jsonl")
stages+=(--stage "H=recipes/mini/mixed/g-own23-lm-rename025-distill_log.jsonl")
/usr/bin/python3 recipes/plot_training.py --out models/mini/loss_curves.png \
  --base recipes/mini/base_log.jsonl "${stages[@]}"

# Evaluation and docs/RESULTS.md.
bash recipes/eval_mini.sh models/mini

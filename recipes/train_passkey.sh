#!/usr/bin/env bash
# The retrieval and language-modelling curriculum of models/mini's cross-attention, on the CPU: a
# separate compressor (a copy of the base's bottom 2 layers) and the upper model frozen
# (recipes/mini/passkey-separate), answer-only loss for the pass keys, so the base model, and so the
# truncated model, stay exactly models/mini's:
#   recipes/train_passkey.sh [separate]
# Stages 1-4 (17 minutes) -> runs/passkey-sep-4, retiled to depth 2, alphas 8/1, then stage 6
# (1-128 chunks, 30 % language modelling, 673 steps) -> runs/passkey-sep-6, retiled to alphas 2/1,
# then stage 7 (the gate added, 50 % language modelling, 394 steps) -> runs/passkey-sep-7; then 75 %
# language modelling at 8-128 chunks with the compressor frozen: stage 8 (600 steps), stage 9 (800
# steps, only the last 64 tokens scored), stage 10 (the attention sink added at logit 8, 1,148
# steps) -> runs/passkey-sep-10, where recipes/train_mini.sh goes on (its GPU stages A and B, then
# G and H). About 2.5 hours of training on 2 cores. Stages 6, 7 and 10 first ran on a time budget
# (35, 30, 35 minutes), whose learning-rate schedule follows the clock; their recipes now run the
# steps that budget bought, so a re-run gives the same weights on any machine. Needs the shards of
# recipes/train_mini.sh. The other pass-key curriculum, tried and not shipped (experiments/mini-passkey),
# is experiments/train_passkey.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/blas_env.sh
bin=build/bin/sharedllm
if [ -n "${1:-}" ] && [ "$1" != separate ]; then
  echo "usage: recipes/train_passkey.sh [separate] (experiments/mini-passkey's curriculum:" \
    "experiments/train_passkey.sh)" >&2
  exit 2
fi
source recipes/lib.sh
# edit SRC DST FLAGS...: `sharedllm edit` (model surgery: a separate compressor, another tree,
# the gate, the sink) writes DST from SRC once; the next stage trains DST.
edit() {
  local from=$1 to=$2
  shift 2
  [ -f "$to/sharedllm.json" ] || $bin edit --model "$from" --out "$to" "$@"
}
# The curriculum starts from runs/mini-lm, the SharedLLM language-modelling stage of
# recipes/train_mini.sh; without one, it is put together from models/mini's base and tokenizer and
# the cross-attention that stage trained (recipes/mini/lm-stage/).
if [ ! -f runs/mini-lm/sharedllm.json ]; then
  mkdir -p runs/mini-lm
  cp models/mini/{config.json,model.safetensors,tokenizer.model} runs/mini-lm/
  cp recipes/mini/lm-stage/{sharedllm.json,sharedllm.safetensors} runs/mini-lm/
fi
edit runs/mini-lm runs/passkey-sep-1-init --separate-compressor
train_stages recipes/mini/passkey-separate 4
edit runs/passkey-sep-4 runs/passkey-sep-6-init --depth 2 --alphas 8,1
train_stages recipes/mini/passkey-separate 6 6
# stage 7: the cross-attention gate added, 50 % language modelling, at alphas 2/1, 394 steps
edit runs/passkey-sep-6 runs/passkey-sep-7-init --depth 2 --alphas 2,1 --gate
train_stages recipes/mini/passkey-separate 7 7
# stages 8-10: language modelling at every length, the compressor frozen
stopped_stage recipes/mini/passkey-separate 8 runs/passkey-sep-7
stopped_stage recipes/mini/passkey-separate 9 runs/passkey-sep-8
edit runs/passkey-sep-9 runs/passkey-sep-10-init --sink --sink-logit 8
train_stages recipes/mini/passkey-separate 10 10
# The logs of the run that made models/mini's cross-attention (recipes/train_mini.sh copies
# runs/passkey-sep-10's sharedllm.* into models/mini and evaluates it with recipes/eval_mini.sh).
for stage in 1 2 3 4 6 7 8 9 10; do
  cp runs/passkey-sep-$stage/train_log.jsonl \
    recipes/mini/passkey-separate/stage${stage}_log.jsonl
done

#!/usr/bin/env bash
# GPU experiments around models/mini, tried and not shipped: the same C++ trainer as
# recipes/train_mini_gpu.sh (build it there: `recipes/train_mini_gpu.sh build`, and for init/sft/eval
# also `data base`), recipes in experiments/recipes/gpu/*.json.
#
#   experiments/train_mini_gpu_experiments.sh STAGE...   stages: init sft eval, or pack-code then code
#
# init:  `sharedllm init` of the SharedLLM layout on the base model runs/gpu-base (M=2, C=64, h=3,
#        alphas 4,2,1).
# sft:   SFT_SECONDS (default 360) of retrieval instruction tuning mixed with language modelling
#        (lm_mix), the lower model trainable, the learning rate decaying over that time budget
#        (`train --time-budget`). Recipe SFT_RECIPE, default experiments/recipes/gpu/sft-passkey.json:
#        pass-key tuning of models/mini (experiments/recipes/gpu/sft.json: all tasks, from `init`).
# eval:  pass-key and perplexity evaluations on the GPU into runs/gpu-eval/*.json.
#
# Code runs (experiments/mini-passkey/README.md): longer runs of stage G's recipe than
# the CPU affords, three weightings at once on one GPU.
# pack-code (CPU machine): data/gpu/code/ = a seeded 40 % sample of the training shard's documents
#        (corpus/select_sources.py --fraction 0.4 --seed 1), the Coq and Python-view shards
#        (view-python.bin: select_sources.py --sources python-stdlib,sympy, docs/design/data.md), the
#        held-out code, books and proofs shards, xz-packed, and stage B's sharedllm.* (runs/
#        gpu-ignore-b). Carry data/gpu/code and data/gpu/include: 32 MB, under the 64 MiB a call
#        sends with the repository only once the weights no GPU run reads are moved aside for the
#        call (experiments/mini-passkey/*.safetensors, models/mini/sharedllm.safetensors,
#        recipes/mini/lm-stage/sharedllm.safetensors).
# code (GPU machine): unpacks them, trains experiments/recipes/gpu/code-{a,b,c}.json (CODE_VARIANTS,
#        default "a b c") side by side for CODE_SECONDS (default 240) each (`train --time-budget`), then
#        evaluates each on code, proofs, books (100 windows), code with --foreign-context, and pass
#        keys (4 trials) into runs/gpu-code-eval/, each model's evaluations stopped after
#        EVAL_SECONDS (default 170). On an H200 the first call (CODE_SECONDS=260
#        EVAL_SECONDS=115) finished no evaluation in time; they ran on the CPU instead (bring
#        runs/gpu-code-*/sharedllm.* back). The second was CODE_VARIANTS="c600 d"
#        CODE_SECONDS=190 EVAL_SECONDS=0.
#        TRAIN_FLAGS / EVAL_FLAGS (default --device cuda) run it elsewhere, e.g. as a CPU check.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SHAREDLLM:-build-cuda/bin/sharedllm}
experiments=experiments/recipes/gpu
py=${PYTHON:-python3}

source recipes/lib.sh


for stage in "$@"; do
  echo "=== $stage ($(date -u +%H:%M:%S))"
  case $stage in
    init)
      rm -rf runs/gpu-init
      $bin init --base runs/gpu-base --out runs/gpu-init --layers 2 --chunk-size 64 --depth 3 \
        --alphas 4,2,1 --selection last
      ;;
    sft)
      $bin train sft --config "${SFT_RECIPE:-$experiments/sft-passkey.json}" --time-budget "${SFT_SECONDS:-360}"
      ;;
    eval)
      mkdir -p runs/gpu-eval
      $bin eval passkey --model runs/gpu-sft --device cuda --trials "${TRIALS:-10}" \
        --out runs/gpu-eval/passkey.json
      for doc in books code; do
        $bin eval ppl --model runs/gpu-sft --device cuda --shard "data/shards/heldout-$doc.bin" \
          --windows "${WINDOWS:-50}" --full-attention-max 32 --out "runs/gpu-eval/ppl-$doc.json"
      done
      ;;
    pack-code)
      mkdir -p data/gpu/code/gpu-ignore-b data/gpu/include
      [ -d data/gpu/include/nlohmann ] || cp -r /usr/include/nlohmann data/gpu/include/
      $py corpus/select_sources.py --index data/shards/INDEX.json --shard train-0000.bin \
        --fraction 0.4 --seed 1 --out data/gpu/code/train-sample.bin
      xz -T0 -6 -f data/gpu/code/train-sample.bin
      for f in adapt-coq-stdlib view-python heldout-code heldout-books heldout-proofs; do
        xz -T0 -6 -c "data/shards/$f.bin" >"data/gpu/code/$f.bin.xz"
      done
      cp runs/gpu-ignore-b/{sharedllm.json,sharedllm.safetensors} data/gpu/code/gpu-ignore-b/
      du -sh data/gpu/code
      ;;
    code)
      mkdir -p runs/gpu-code-eval
      unpack_shards data/gpu/code
      assemble_run runs/gpu-ignore-b data/gpu/code/gpu-ignore-b
      for v in ${CODE_VARIANTS:-a b c}; do
        $bin train sft --config "$experiments/code-$v.json" --time-budget "${CODE_SECONDS:-240}" \
          ${TRAIN_FLAGS:-} >"runs/gpu-code-$v.log" 2>&1 &
      done
      wait
      eval_flags=${EVAL_FLAGS:---device cuda} end=$((SECONDS + ${EVAL_SECONDS:-170}))
      left() { echo $((end > SECONDS ? end - SECONDS : 1)); }
      for v in ${CODE_VARIANTS:-a b c}; do
        (
          m=runs/gpu-code-$v e=runs/gpu-code-eval/$v
          for doc in code proofs books; do
            timeout "$(left)" $bin eval ppl --model $m $eval_flags \
              --shard "data/shards/heldout-$doc.bin" --windows 100 --out "$e-ppl-$doc.json"
          done
          timeout "$(left)" $bin eval ppl --model $m $eval_flags --foreign-context \
            --shard data/shards/heldout-code.bin --windows 100 --out "$e-ppl-code-foreign.json"
          timeout "$(left)" $bin eval passkey --model $m $eval_flags --trials 4 \
            --out "$e-passkey.json"
        ) >"runs/gpu-code-eval/$v.log" 2>&1 &
      done
      wait
      ;;
    *)
      echo "unknown stage '$stage' (init sft eval pack-code code; the shipped model's GPU stages are in recipes/train_mini_gpu.sh)" >&2
      exit 2
      ;;
  esac
done

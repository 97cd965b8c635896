#!/usr/bin/env bash
# The GPU route to models/mini: the same C++ trainer, built against the CUDA libtorch of a GPU
# machine's PyTorch (SHAREDLLM_MODEL_ONLY: model/ + the sharedllm tool, no service libraries),
# on the same corpus shards as recipes/train_mini.sh. Recipes: recipes/mini/gpu/*.json (the stages of
# models/mini: base, ignore).
#
#   recipes/train_mini_gpu.sh STAGE...      stages, in order: pack (CPU machine), data build base
#                                           (GPU machine); pack-sub (CPU machine), ignore (GPU machine)
#
# pack:  xz-packs the training shard and the held-out books and code shards into data/gpu/, with
#        INDEX.json, the tokenizer and a copy of nlohmann/json.hpp (data/gpu/include), for the GPU machine.
# data:  unpacks data/gpu/*.xz (the shards and tokenizer, xz-packed by `recipes/train_mini_gpu.sh
#        pack` on the CPU machine that built them) into data/shards and data/tokenizer.
# build: configures and builds build-cuda/bin/sharedllm (needs nlohmann/json.hpp: the system's, or
#        a copy in data/gpu/include).
# base:  calibrates the time per step over 40 steps (the first 10 not counted), then trains the base model for BASE_SECONDS (default
#        300) worth of steps at that rate; the steps used are written to runs/gpu-base.steps.
#
# The last two stages of the cross-attention's curriculum (models/mini/README.md, "Training":
# "pass keys beside unrelated prompts"):
# pack-sub (CPU machine, after recipes/train_mini.sh has trained runs/passkey-sep-10): the first
#        documents of the training shard up to 1.5 M tokens and of the books shard up to 200 K
#        (what fits the GPU machine's 64 MiB transfer with the repository) into data/gpu/sub/, and
#        stage 10's sharedllm.* beside them.
# ignore (GPU machine, or with SHAREDLLM=build/bin/sharedllm TRAIN_FLAGS="--device cpu --threads 2"
#        the CPU one, as recipes/train_mini.sh does): recipes/mini/gpu/ignore-a.json (1,500 steps of pass keys + passkey_ignore + 50 %
#        language modelling from stage 10) then ignore-b.json (1,200 steps, pass keys 3:1) ->
#        runs/gpu-ignore-b, whose sharedllm.* models/mini ships. Send data/gpu/sub along (the
#        device tool's `carry`); bring runs/gpu-ignore-b back (recipes/train_mini.sh copies it).
#
# GPU experiments (init, sft, eval, pack-code, code; tried, not shipped): experiments/train_mini_gpu_experiments.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SHAREDLLM:-build-cuda/bin/sharedllm}
recipes=recipes/mini/gpu
py=${PYTHON:-python3}

# Runs `train MODE` for SECONDS at the throughput of a 40-step calibration run.
timed_train() {
  local mode=$1 config=$2 seconds=$3 out=$4
  if [ ! -f "$out.steps" ]; then
    rm -rf "$out-cal"
    $bin train "$mode" --config "$config" --steps 40 --log-every 10 --out "$out-cal"
    $py - "$config" "$out-cal/train_log.jsonl" "$seconds" "$out.steps" <<'EOF'
import json, sys
config = json.load(open(sys.argv[1]))
rows = [json.loads(l) for l in open(sys.argv[2]) if '"tokens_per_second"' in l]
secs_per_step = (rows[-1]["seconds"] - rows[0]["seconds"]) / (rows[-1]["step"] - rows[0]["step"])
steps = int(float(sys.argv[3]) / secs_per_step)
print(f"calibration: {secs_per_step*1000:.1f} ms/step -> {steps} steps in {sys.argv[3]} s")
open(sys.argv[4], "w").write(f"{steps}\n")
EOF
  fi
  $bin train "$mode" --config "$config" --steps "$(cat "$out.steps")"
}

source recipes/lib.sh


for stage in "$@"; do
  echo "=== $stage ($(date -u +%H:%M:%S))"
  case $stage in
    pack)
      mkdir -p data/gpu/include
      for f in train-0000 heldout-books heldout-code; do
        xz -T0 -6 -c "data/shards/$f.bin" >"data/gpu/$f.bin.xz"
      done
      cp data/shards/INDEX.json data/tokenizer/tokenizer.model data/gpu/
      cp -r /usr/include/nlohmann data/gpu/include/
      ;;
    data)
      unpack_shards data/gpu
      mkdir -p data/tokenizer
      cp data/gpu/tokenizer.model data/tokenizer/
      ;;
    build)
      torch_prefix=$($py -c 'import torch; print(torch.utils.cmake_prefix_path)')
      cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DSHAREDLLM_MODEL_ONLY=ON \
        -DSHAREDLLM_BUILD_TESTS=OFF -DCMAKE_CXX_STANDARD="${CXX_STANDARD:-17}" \
        -DCMAKE_PREFIX_PATH="$torch_prefix" -DNLOHMANN_JSON_INCLUDE_DIR="$PWD/data/gpu/include" \
        -DCMAKE_CUDA_ARCHITECTURES=90
      cmake --build build-cuda --target sharedllm -- -k 0
      ;;
    base)
      timed_train base "$recipes/base.json" "${BASE_SECONDS:-300}" runs/gpu-base
      ;;
    pack-sub)
      mkdir -p data/gpu/sub/passkey-sep-10
      $py - <<'EOF'
import sys
sys.path.insert(0, "corpus")
import shards
for src, dst, limit in [("data/shards/train-0000.bin", "data/gpu/sub/train-sub.bin", 1_500_000),
                        ("data/shards/heldout-books.bin", "data/gpu/sub/books-sub.bin", 200_000)]:
    vocab, tokens, offsets = shards.read_shard(src)
    docs, n = [], 0
    for d in shards.documents_of(tokens, offsets):
        if n >= limit:
            break
        docs.append(d)
        n += len(d)
    print(dst, shards.write_shard(dst, vocab, docs), "tokens")
EOF
      cp runs/passkey-sep-10/{sharedllm.json,sharedllm.safetensors} data/gpu/sub/passkey-sep-10/
      ;;
    ignore)
      assemble_run runs/passkey-sep-10 data/gpu/sub/passkey-sep-10
      for s in a b; do
        $bin train sft --config $recipes/ignore-$s.json ${TRAIN_FLAGS:-}
      done
      ;;
    *)
      echo "unknown stage '$stage' (pack data build base pack-sub ignore; experiments: experiments/train_mini_gpu_experiments.sh)" >&2
      exit 2
      ;;
  esac
done

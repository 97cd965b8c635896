#!/usr/bin/env bash
# The README's main command: setup, build, then run the bundled default model.
# Until the service lands (issue 6) this generates text with the bundled tiny model, whose weights
# are random: it shows the whole path (load, tokenise, prefill, decode, stream) working, not prose.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/build.sh
model=models/tiny
for prompt in "This License" "The source code for a work means"; do
  echo "== prompt: $prompt"
  build/bin/sharedllm generate --model "$model" --prompt "$prompt" --max-tokens 40 \
    --temperature 0.8 --top-p 0.95 --seed 7
done
echo "== score of the GPL-3 text's first lines under the same model"
head -c 2000 /usr/share/common-licenses/GPL-3 > /tmp/sharedllm-demo.txt
build/bin/sharedllm score --model "$model" --text-file /tmp/sharedllm-demo.txt

#!/usr/bin/env bash
# The README's main command: setup and build, then the service end to end on the bundled default.
# Starts sharedllm-server on the bundled model, uploads the bundled long document once, asks it
# several questions (answers stream), restarts the server and asks again without re-uploading.
# The first question asks for the document's pass key, which models/mini retrieves; MODEL=DIR
# (any SharedLLM directory, e.g. one `sharedllm init` or `sharedllm edit` wrote) serves another model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh

if [ -n "${MODEL:-}" ] && [ ! -f "$MODEL/sharedllm.json" ]; then
  echo "MODEL=$MODEL is not a SharedLLM directory (no sharedllm.json)" >&2
  exit 2
fi
model=${MODEL:-models/mini}
if [ ! -f "$model/sharedllm.json" ]; then
  # Without the trained mini model, an untrained SharedLLM over the random tiny model still shows
  # every step of the service; its answers are noise.
  model=build/models/tiny-sharedllm
  [ -f "$model/sharedllm.json" ] || build/bin/sharedllm init --base models/tiny --out "$model" \
    --layers 1 --chunk-size 64
fi
document=docs/examples/passkey-document.txt
data=$(mktemp -d /tmp/sharedllm-demo.XXXXXX)
log="$data/server.log"
export OMP_WAIT_POLICY=PASSIVE
server_pid=""
start_server() {
  build/bin/sharedllm-server --model "$model" --data-dir "$data" --listen 127.0.0.1:0 \
    --metrics-listen 127.0.0.1:0 > "$log" 2>&1 &
  server_pid=$!
  for _ in $(seq 300); do
    grep -q "listening on" "$log" 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.1
  done
  address=$(grep -o "listening on [0-9.]*:[0-9]*" "$log" | awk '{print $3}')
  metrics_port=$(grep -o "metrics on port [0-9]*" "$log" | awk '{print $4}')
  echo "== server on $address (model $model), metrics on :$metrics_port"
}
stop_server() {
  kill -TERM "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
}
trap 'stop_server; rm -rf "$data"' EXIT

cli() { build/bin/sharedllm-cli --server "$address" "$@"; }
ask() {
  echo
  echo "== Q: $1"
  cli ask --id demo --question "$1" --max-tokens "${2:-16}"
}

start_server
echo "== uploading $document ($(wc -c < "$document") bytes) and building its context tree"
cli upload "$document" --id demo --collection examples --name "$(basename "$document")" --wait
cli list
ask "What is the pass key? The pass key is" 8
ask "The GNU General Public License is" 24
ask "To protect your rights, we need to" 24

echo
echo "== restarting the server: the tree was persisted, nothing is re-uploaded"
stop_server
start_server
ask "What is the pass key? The pass key is" 8
echo
echo "== metrics"
curl -s "127.0.0.1:$metrics_port/metrics" | grep -E "^sharedllm_(ask_requests_total|generation_tokens_total|compressor_tokens_total)" || true

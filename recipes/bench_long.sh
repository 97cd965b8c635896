#!/usr/bin/env bash
# The "Documents of any length" and "Stored formats" service figures of docs/RESULTS.md:
# bench/long_documents.py at 32x-512x W (three depths), 1 MB and 4 MB documents and a 1,000-document
# collection with the default int8 keys/values, then bfloat16 at 32x and 512x W. About 15 minutes
# on 2 cores; run it on an otherwise idle machine (TTFT is timed).
#   recipes/bench_long.sh [MODEL_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/mini}
r=docs/results
source scripts/blas_env.sh
/usr/bin/python3 bench/long_documents.py --model "$model" --lengths 32,128,512 --depths 0.1,0.5,0.9 \
  --bytes 1000000,4000000 --collection 1000 > "$r/long-documents.json"
/usr/bin/python3 bench/long_documents.py --model "$model" --lengths 32,512 --depths 0.5 \
  --server-flag=--kv-dtype --server-flag=bfloat16 > "$r/long-documents-bfloat16.json"

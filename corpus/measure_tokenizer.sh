#!/usr/bin/env bash
# Measures the tokenizer's vocabulary size: trains BPE models of 4K, 8K and 16K pieces with the
# options of corpus/train_tokenizer.sh and reports tokens per byte on the held-out books, code and
# proofs (and the training sample). The table goes into docs/design/data.md with --write-docs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CORPUS="$ROOT/data/corpus"
OUT="$ROOT/data/tokenizer/sweep"
SIZES=(4096 8192 16384)
WRITE_DOCS=0

usage() {
  cat <<EOF
Usage: corpus/measure_tokenizer.sh [--write-docs] [--sizes "4096 8192 16384"] [--corpus DIR] [--out DIR]

Trains one tokenizer per size into <out>/vocab-<N>/ (default data/tokenizer/sweep) and prints
tokens/byte on data/corpus/heldout/{books,code,proofs} and on the training sample.
  --write-docs   also replace the table in docs/design/data.md
EOF
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --write-docs) WRITE_DOCS=1; shift ;;
    --sizes) read -r -a SIZES <<<"$2"; shift 2 ;;
    --corpus) CORPUS="$(realpath -m "$2")"; shift 2 ;;
    --out) OUT="$(realpath -m "$2")"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "measure_tokenizer: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

SECONDS=0
models=()
for n in "${SIZES[@]}"; do
  "$ROOT/corpus/train_tokenizer.sh" --vocab "$n" --corpus "$CORPUS" --out "$OUT/vocab-$n" | grep -v '^\[sample\]'
  models+=("$OUT/vocab-$n/tokenizer.model")
done
args=(--corpus "$CORPUS" --sample "$OUT/vocab-${SIZES[0]}/sample.txt")
[[ $WRITE_DOCS == 1 ]] && args+=(--docs "$ROOT/docs/design/data.md")
/usr/bin/python3 "$ROOT/corpus/measure_tokenizer.py" "${args[@]}" "${models[@]}"
echo "[measure_tokenizer] done in ${SECONDS}s"

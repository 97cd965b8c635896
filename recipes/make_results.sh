#!/usr/bin/env bash
# docs/RESULTS.md and its plots from the evaluation JSON in RESULTS_DIR (what recipes/eval_mini.sh
# writes), into OUT_DIR:   recipes/make_results.sh [RESULTS_DIR [OUT_DIR]]   (docs/results, docs)
# tests/recipes/results_regenerate_test.sh runs it into a temporary folder and compares the
# result with the committed docs/RESULTS.md byte for byte.
set -euo pipefail
cd "$(dirname "$0")/.."
r=${1:-docs/results}
out=${2:-docs}
mkdir -p "$out"
# Evaluation-time ablations in eval_mini.sh's order (the depth one takes a level off the tree).
ablations=()
for name in "$r"/abl-books-depth-*.json abl-books-beta-4 abl-books-beta-16 abl-books-chunk_positions-off \
    abl-books-selection-first abl-books-selection-mean; do
  name=$(basename "$name" .json)
  ablations+=(--ablation "$r/$name.json")
done
# Separately trained variants (recipes/train_ablations.sh), where present.
for f in "$r"/abl-books-trained-*.json; do
  [ -f "$f" ] || continue
  label=$(basename "$f" .json)
  ablations+=(--ablation "trained ${label#abl-books-trained-}=$f")
done

/usr/bin/python3 recipes/make_results.py --ppl "books=$r/ppl-books.json" --ppl "code=$r/ppl-code.json" \
  --ppl "proofs=$r/ppl-proofs.json" --ppl "code-seed2=$r/ppl-code-seed2-200w.json" \
  --ppl "code-seed3=$r/ppl-code-seed3-200w.json" --pool "code-500w=code,code-seed2,code-seed3" \
  --ppl "books-30w=$r/ppl-books-30w.json" \
  --ppl "code-30w=$r/ppl-code-30w.json" --ppl "proofs-30w=$r/ppl-proofs-30w.json" \
  --passkey "$r/passkey.json" --passkey "$r/passkey-seed2-10trials.json" \
  --passkey "$r/passkey-seed3-10trials.json" --ask "$r/ask-seed1.json" --ask "$r/ask-seed2.json" \
  --ask "$r/ask-unrelated-seed1.json" \
  --tasks "$r/ruler.json" --tasks "$r/mathfind.json" \
  --ablation "$r/abl-books-none.json" "${ablations[@]}" \
  --ablation "$r/passkey.json" --ablation "$r/abl-passkey-search-off.json" \
  --long "$r/long-documents.json" --long-passkey "$r/passkey-beyond-budget.json" \
  --formats "$r" --formats-long "$r/long-documents.json" --formats-long "$r/long-documents-bfloat16.json" \
  --efficiency docs/efficiency-mini-cpu.json --out "$out"

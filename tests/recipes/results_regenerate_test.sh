#!/usr/bin/env bash
# docs/RESULTS.md regenerates byte for byte from the result files docs/results/ keeps
# (recipes/make_results.sh, the last step of recipes/eval_mini.sh), and so do its plots.
# Usage: results_regenerate_test.sh SOURCE_DIR WORK_DIR
set -euo pipefail
src=$1 work=$2
rm -rf "$work" && mkdir -p "$work"
bash "$src/recipes/make_results.sh" "$src/docs/results" "$work" > "$work/log" 2>&1 || { cat "$work/log"; exit 1; }
failed=0
for f in RESULTS.md ppl_vs_length.png ppl_ratio_vs_length.png passkey_heatmap.png efficiency_time.png efficiency_memory.png; do
  if cmp -s "$work/$f" "$src/docs/$f"; then echo "ok $f"; else echo "FAIL $f differs"; failed=$((failed + 1)); fi
done
echo "results_regenerate: $failed failed"

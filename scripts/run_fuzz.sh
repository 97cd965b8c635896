#!/usr/bin/env bash
# The libFuzzer targets of fuzz/ (one per parser of outside bytes), built with clang into
# build-fuzz/ with AddressSanitizer and UndefinedBehaviorSanitizer:
#   scripts/run_fuzz.sh [RUNS] [TARGET...]     RUNS executions per target (default 10,000,000)
#   FUZZ_SECONDS=30 scripts/run_fuzz.sh 0      30 s per target instead (the short run CI does)
# Each target starts from its committed corpus fuzz/corpus/NAME (new inputs go to
# build-fuzz/corpus/NAME); a crash stops it and leaves the input in build-fuzz/crash-NAME-*, to
# be committed to fuzz/regressions/NAME once fixed (ctest replays both directories). Prints one
# line per target: executions, seconds, corpus size. Records: docs/TESTING.md "Fuzzing".
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10000000}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(key_codec_fuzz value_codec_fuzz request_fuzz auth_fuzz model_files_fuzz)
bash scripts/setup.sh
command -v clang++ >/dev/null || apt-get install -y --no-install-recommends clang
cmake -S . -B build-fuzz -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=Release -DSHAREDLLM_FUZZ=ON -DSHAREDLLM_BUILD_TESTS=OFF \
  -DSHAREDLLM_BUILD_BENCH=OFF -DSHAREDLLM_SANITIZE=address,undefined,fuzzer-no-link >/dev/null
ninja -C build-fuzz -j "${SHAREDLLM_BUILD_JOBS:-$(nproc)}" "${targets[@]}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
for t in "${targets[@]}"; do
  mkdir -p "build-fuzz/corpus/$t"
  start=$(date +%s)
  log=build-fuzz/$t.log
  limit=(-runs="$runs")
  [ -z "${FUZZ_SECONDS:-}" ] || limit=(-max_total_time="$FUZZ_SECONDS")
  if ! build-fuzz/bin/$t "${limit[@]}" -max_len=65536 -timeout=10 -rss_limit_mb=4096 \
       -print_final_stats=1 -artifact_prefix="build-fuzz/crash-$t-" \
       "build-fuzz/corpus/$t" "fuzz/corpus/$t" >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "$t: FAILED (input in build-fuzz/crash-$t-*)"
    exit 1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  echo "$t: $execs executions in $(( $(date +%s) - start )) s, no crash; corpus $(ls "build-fuzz/corpus/$t" | wc -l) inputs"
done

#!/usr/bin/env bash
# ThreadSanitizer over the tree store, indexer and service tests, built into build-tsan/ (a report
# stops the process, so its test fails). Libraries Debian does not build with TSan (RocksDB,
# libtorch's OpenMP, gRPC) hide their own synchronisation from it: their interceptors are ignored
# (ignore_noninstrumented_modules) and races inside RocksDB are suppressed (scripts/tsan.supp);
# races in this project's code, between its own threads, still report. The last run is recorded
# in docs/TESTING.md.
#   scripts/run_tsan.sh [GTEST FILTER]
#   TSAN_TESTS="treestore_test indexer_test" scripts/run_tsan.sh    only those (what CI runs)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=Release -DSHAREDLLM_SANITIZE=thread >/dev/null
read -r -a tests <<<"${TSAN_TESTS:-treestore_test indexer_test service_test}"
ninja -C build-tsan -j "${SHAREDLLM_BUILD_JOBS:-$(nproc)}" "${tests[@]}"
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1 ignore_noninstrumented_modules=1 suppressions=$PWD/scripts/tsan.supp}
source scripts/blas_env.sh
filter=${1:-*}
status=0
for t in "${tests[@]}"; do
  # The crash child is a helper the store tests start themselves (it dies on purpose).
  echo "== $t"
  (cd build-tsan && ./bin/$t --gtest_filter="$filter:-*CrashChild*") || status=1
done
exit $status

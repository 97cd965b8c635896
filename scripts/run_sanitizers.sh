#!/usr/bin/env bash
# The test suite under AddressSanitizer + UndefinedBehaviorSanitizer, built into build-asan/ (a
# finding stops the process, so its test fails). Heavier than CI (about an hour on 2 cores: the
# build, then every test at 2-3x its usual time); the last run is recorded in docs/TESTING.md.
#   scripts/run_sanitizers.sh [CTEST ARGS...]      e.g. -L unit
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Release -DSHAREDLLM_SANITIZE=address,undefined \
  >/dev/null
ninja -C build-asan -j "${SHAREDLLM_BUILD_JOBS:-$(nproc)}"
# Leak checking stays on; libraries the project does not build (libtorch's and gRPC's static
# state) are not instrumented, so only what this project allocates is judged.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
source scripts/blas_env.sh
cd build-asan
ctest --output-on-failure -j "$(nproc)" --timeout 1800 "$@"

#!/usr/bin/env bash
# The test suite under AddressSanitizer + UndefinedBehaviorSanitizer, built into build-asan/ (a
# finding stops the process, so its test fails). Heavier than CI (about an hour on 2 cores: the
# build, then every test at 2-3x its usual time); the last run is recorded in docs/TESTING.md.
#   scripts/run_sanitizers.sh [CTEST ARGS...]      e.g. -L unit
#   SANITIZE_TARGETS="treestore_test auth_fuzz_replay" scripts/run_sanitizers.sh
#       builds and runs only those test binaries (what CI does: scripts/run_ci_extras.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Release -DSHAREDLLM_SANITIZE=address,undefined \
  >/dev/null
read -r -a only <<<"${SANITIZE_TARGETS:-}"
ninja -C build-asan -j "${SHAREDLLM_BUILD_JOBS:-$(nproc)}" "${only[@]}"
# Leak checking stays on; libraries the project does not build (libtorch's and gRPC's static
# state) are not instrumented, so only what this project allocates is judged.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
source scripts/blas_env.sh
cd build-asan
if [ ${#only[@]} -eq 0 ]; then
  exec ctest --output-on-failure -j "$(nproc)" --timeout 1800 "$@"
fi
status=0
for t in "${only[@]}"; do
  echo "== $t"
  case $t in
    *_fuzz_replay) ctest --output-on-failure -R "^fuzz_replay_${t%_replay}\$" || status=1 ;;
    *) ./bin/"$t" --gtest_filter='-*CrashChild*' || status=1 ;;  # the crash child dies on purpose
  esac
done
exit $status

#!/usr/bin/env bash
# The README's test command: setup, build, then every ctest test (labels: unit, model, e2e).
# Pass ctest arguments to narrow it, e.g. `scripts/run_tests.sh -L unit`. With CI=true (and no
# arguments) it then runs scripts/run_ci_extras.sh: short fuzz runs and sanitizer builds.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
(cd build && ctest --output-on-failure -j "$(nproc)" "$@")
# Under CI: the short fuzz runs and the sanitizer builds CI has time for (docs/TESTING.md).
if [ "${CI:-}" = true ] && [ $# -eq 0 ]; then
  bash scripts/run_ci_extras.sh
fi

#!/usr/bin/env bash
# The README's test command: setup, build, then every ctest test (labels: unit, model, e2e).
# Pass ctest arguments to narrow it, e.g. `scripts/run_tests.sh -L unit`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
cd build
ctest --output-on-failure -j "$(nproc)" "$@"

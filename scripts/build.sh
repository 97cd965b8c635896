#!/usr/bin/env bash
# Installs the Debian packages (scripts/setup.sh), then configures and builds into build/.
# Extra arguments go to cmake's configure step, e.g. -DSHAREDLLM_SANITIZE=address.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
# Each libtorch translation unit needs ~1 GB to compile; two jobs fit any 2-core CI machine.
ninja -C build -j "${SHAREDLLM_BUILD_JOBS:-$(nproc)}"

#!/usr/bin/env bash
# Installs every Debian 12 package the project builds, tests or runs with. Idempotent: packages
# already present are skipped by apt-get, and nothing is fetched when all are installed.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config git ca-certificates curl
  # model: libtorch 1.13 (+ OpenBLAS so fp32 matmul does not fall back to the reference BLAS);
  # sentencepiece brings spm_train/spm_encode (tokenizer training and parity tests)
  libtorch-dev libopenblas0-openmp
  sentencepiece nlohmann-json3-dev libgoogle-glog-dev
  # service and store
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  librocksdb-dev prometheus-cpp-dev libcpp-httplib-dev libssl-dev
  # cli/python (stubs generated at run time) and the real Prometheus scrape/lint tests
  python3-grpcio python3-grpc-tools prometheus
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # independent reference implementation for parity tests
  python3 python3-torch python3-numpy
  # offline checks of deploy/ (yamllint brings python3-yaml)
  yamllint
  # docs/RESULTS.md plots (recipes/make_results.py)
  gnuplot-nox
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#PACKAGES[@]} packages present" >&2
fi

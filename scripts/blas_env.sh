# Sourced by the training and evaluation scripts: the OpenBLAS and OpenMP settings of a run.
# OMP_WAIT_POLICY=PASSIVE: OpenBLAS's OpenMP threads otherwise spin and starve a busy 2-core box.
# OPENBLAS_CORETYPE: Debian's OpenBLAS falls back to its SSE3 kernels on virtual Xeons it does not
# recognise (4x slower, docs/PERFORMANCE.md), so on a CPU with AVX-512 the SkylakeX kernels are
# forced; anywhere else OpenBLAS keeps its own choice (Zen, Haswell, ...), since a kernel family
# the CPU lacks dies with "Illegal instruction". A value already set is kept.
# SHAREDLLM_CPUINFO names the cpuinfo file to read (tests).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
if [[ -z "${OPENBLAS_CORETYPE:-}" ]] && grep -qw avx512f "${SHAREDLLM_CPUINFO:-/proc/cpuinfo}" 2>/dev/null; then
  export OPENBLAS_CORETYPE=SkylakeX
fi

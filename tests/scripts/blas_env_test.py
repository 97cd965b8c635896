#!/usr/bin/python3
"""scripts/blas_env.sh: SkylakeX kernels only on a CPU with AVX-512 (anything else would die with an
illegal instruction), OpenBLAS's own choice elsewhere, a value already set kept.
Usage: blas_env_test.py SOURCE_DIR"""
import os
import subprocess
import sys
import tempfile

src = sys.argv[1]
sys.path.insert(0, os.path.join(src, "tests"))
from pycheck import check, finish  # noqa: E402

script = os.path.join(src, "scripts", "blas_env.sh")


def coretype(flags, preset=None):
    with tempfile.NamedTemporaryFile("w", suffix=".cpuinfo") as f:
        f.write("processor\t: 0\nflags\t\t: " + flags + "\n")
        f.flush()
        env = {k: v for k, v in os.environ.items()
               if k not in ("OPENBLAS_CORETYPE", "OMP_WAIT_POLICY")}
        env["SHAREDLLM_CPUINFO"] = f.name
        if preset is not None:
            env["OPENBLAS_CORETYPE"] = preset
        out = subprocess.run(
            ["bash", "-c", f'set -eu; source "{script}"; echo "${{OPENBLAS_CORETYPE:-}}|$OMP_WAIT_POLICY"'],
            env=env, capture_output=True, text=True, check=True).stdout.strip()
    return out


check(coretype("fpu sse3 avx2 avx512f avx512bw") == "SkylakeX|PASSIVE", "AVX-512: SkylakeX")
check(coretype("fpu sse3 avx2 fma") == "|PASSIVE", "AVX2 only (e.g. AMD EPYC Zen 2/3): left to OpenBLAS")
check(coretype("fpu sse3 avx512_bf16") == "|PASSIVE", "a flag that only contains 'avx512' is not avx512f")
check(coretype("fpu avx512f", preset="Haswell") == "Haswell|PASSIVE", "a preset OPENBLAS_CORETYPE is kept")
finish("blas_env")

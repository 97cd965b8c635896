#!/usr/bin/python3
"""experiments/tools/scale_injection.py on a tiny SharedLLM (models/tiny, 2 injection layers) trained 3 steps
so its cross-attention is not zero: scale 1 copies every tensor; --layers 0 at 0.5 halves layer 0's
o_proj and nothing else; scale 0 makes `sharedllm eval ppl` score SharedLLM exactly as the
truncated base model (and the trained model differs from it); bad inputs are refused.
Usage: scale_injection_test.py SOURCE_DIR SHAREDLLM_BIN"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
from pycheck import check, finish  # noqa: E402
src, binary = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(src, "tests", "reference"))
import safetensors_io  # noqa: E402
from tiny_run import train_tiny_sharedllm  # noqa: E402

script = os.path.join(src, "experiments", "tools", "scale_injection.py")
O0, O1 = "model.layers.0.cross_attn.o_proj.weight", "model.layers.1.cross_attn.o_proj.weight"


def shared(d):
    return safetensors_io.load_file(os.path.join(d, "sharedllm.safetensors"))[0]


def scale(model, s, out, *extra):
    return subprocess.run([sys.executable, script, "--model", model, "--scale", str(s), "--out", out,
                           *extra], capture_output=True, text=True)


def ratios(model, tmp, shard):
    out = os.path.join(tmp, "ppl.json")
    r = subprocess.run([binary, "eval", "ppl", "--model", model, "--shard", shard, "--lengths", "2",
                        "--windows", "3", "--threads", "1", "--out", out], capture_output=True, text=True)
    if r.returncode != 0:
        return [r.stderr.strip()[-300:]]
    with open(out) as f:
        return [(p["sharedllm_ppl"], p["truncated_ppl"]) for p in json.load(f)["points"]]


with tempfile.TemporaryDirectory() as tmp:
    _, run, shard, r = train_tiny_sharedllm(src, binary, tmp, layers=2, doc_tokens=600, seed=5)
    check(r.returncode == 0, "the tiny run trains: " + r.stderr.strip()[-300:])
    trained = shared(run)
    check(np.abs(trained[O0]).sum() > 0 and np.abs(trained[O1]).sum() > 0, "the cross-attention trained")

    r = scale(run, 1, os.path.join(tmp, "same"))
    same = shared(os.path.join(tmp, "same"))
    check(r.returncode == 0 and sorted(same) == sorted(trained) and
          all(np.array_equal(same[n], trained[n]) for n in trained), "scale 1 copies every tensor")

    r = scale(run, 0.5, os.path.join(tmp, "half0"), "--layers", "0")
    half = shared(os.path.join(tmp, "half0"))
    check(r.returncode == 0 and np.array_equal(half[O0], trained[O0] * np.float32(0.5)),
          "--layers 0: layer 0's o_proj halved")
    check(all(np.array_equal(half[n], trained[n]) for n in trained if n != O0), "... and nothing else")

    r = scale(run, 0, os.path.join(tmp, "zero"))
    check(r.returncode == 0, "scale 0 writes: " + r.stderr)
    base = ratios(os.path.join(tmp, "zero"), tmp, shard)
    check(all(isinstance(p, tuple) and p[0] == p[1] for p in base),
          f"scale 0: SharedLLM scores as the truncated model {base}")
    full = ratios(run, tmp, shard)
    check(all(isinstance(p, tuple) and p[0] != p[1] for p in full),
          f"the trained model does not {full}")

    r = scale(run, -1, os.path.join(tmp, "neg"))
    check(r.returncode != 0 and "--scale" in r.stderr, "refuses a negative scale")
    r = scale(run, 0.5, os.path.join(tmp, "l7"), "--layers", "7")
    check(r.returncode != 0 and "layers [7]" in r.stderr, "refuses layers without an injection")
    r = scale(run, 0.5, run)
    check(r.returncode != 0 and "must differ" in r.stderr, "refuses to overwrite its input")
    r = scale(tmp, 0.5, os.path.join(tmp, "x"))
    check(r.returncode != 0 and "scale_injection:" in r.stderr, "refuses a directory without a model")

finish("scale_injection")

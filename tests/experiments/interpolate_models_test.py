#!/usr/bin/python3
"""experiments/tools/interpolate_models.py on a tiny SharedLLM (models/tiny) and the 3-step run trained from it
(upper model frozen, so the two share one base):
W = 0 and W = 1 copy the two runs, W = 0.5 is their mean tensor by tensor, the result loads and
scores with `sharedllm eval ppl`, and mismatched models and bad weights are refused.
Usage: interpolate_models_test.py SOURCE_DIR SHAREDLLM_BIN"""
import json
import os
import shutil
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

script = os.path.join(src, "experiments", "tools", "interpolate_models.py")


def shared(d):
    return safetensors_io.load_file(os.path.join(d, "sharedllm.safetensors"))[0]


def interpolate(a, b, w, out):
    return subprocess.run([sys.executable, script, "--a", a, "--b", b, "--weight", str(w), "--out", out],
                          capture_output=True, text=True)


with tempfile.TemporaryDirectory() as tmp:
    init, run, shard, r = train_tiny_sharedllm(src, binary, tmp, layers=2, doc_tokens=600, seed=5,
                                               upper_trainable=False)
    check(r.returncode == 0, "the tiny run trains: " + r.stderr.strip()[-300:])
    a, b = shared(init), shared(run)
    check(any(not np.array_equal(a[n], b[n]) for n in a), "training changed the SharedLLM weights")

    for w, want in ((0, a), (1, b)):
        out = os.path.join(tmp, f"w{w}")
        r = interpolate(init, run, w, out)
        got = shared(out) if r.returncode == 0 else {}
        check(r.returncode == 0 and sorted(got) == sorted(want) and
              all(np.array_equal(got[n], want[n]) for n in want), f"W = {w} copies its run: {r.stderr}")

    half = os.path.join(tmp, "half")
    r = interpolate(init, run, 0.5, half)
    check(r.returncode == 0, "W = 0.5 writes: " + r.stderr)
    mid = shared(half)
    check(all(np.allclose(mid[n], (a[n] + b[n]) / 2, rtol=0, atol=1e-7) for n in a),
          "W = 0.5 is the mean of every tensor")
    for f in ("model.safetensors", "config.json", "sharedllm.json", "tokenizer.model"):
        with open(os.path.join(half, f), "rb") as x, open(os.path.join(init, f), "rb") as y:
            check(x.read() == y.read(), f"{f} is copied unchanged")
    out = os.path.join(tmp, "ppl.json")
    r = subprocess.run([binary, "eval", "ppl", "--model", half, "--shard", shard, "--lengths", "2",
                        "--windows", "2", "--threads", "1", "--out", out], capture_output=True, text=True)
    check(r.returncode == 0, "the interpolated model loads and scores: " + r.stderr.strip()[-300:])

    r = interpolate(init, run, 1.5, os.path.join(tmp, "x"))
    check(r.returncode != 0 and "--weight" in r.stderr, "refuses a weight outside [0, 1]")
    r = interpolate(init, run, 0.5, run)
    check(r.returncode != 0 and "must differ" in r.stderr, "refuses to overwrite an input")
    other = os.path.join(tmp, "other")
    shutil.copytree(run, other)
    with open(os.path.join(other, "sharedllm.json")) as f:
        cfg = json.load(f)
    cfg["alphas"] = [1, 1]
    with open(os.path.join(other, "sharedllm.json"), "w") as f:
        json.dump(cfg, f)
    r = interpolate(init, other, 0.5, os.path.join(tmp, "y"))
    check(r.returncode != 0 and "differ in sharedllm.json" in r.stderr, "refuses two different models")
    r = interpolate(tmp, run, 0.5, os.path.join(tmp, "z"))
    check(r.returncode != 0 and "interpolate_models:" in r.stderr, "refuses a directory without a model")

finish("interpolate_models")

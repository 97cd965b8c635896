#!/usr/bin/python3
"""Writes a SharedLLM model whose trained weights lie between two runs of the same model.

  experiments/tools/interpolate_models.py --a DIR --b DIR --weight W --out DIR

Every tensor of sharedllm.safetensors becomes (1 - W) * A + W * B: W = 0 copies A, W = 1 copies B,
W = 0.5 is their mean (a "model soup"). It is meant for two runs where B continued A, or both
started from one init, so their weights share one basin and the line between them is a model too.
A and B must agree on everything else: the same base model (model.safetensors), the same
config.json and sharedllm.json, and the same tensor names, shapes and dtype (F32), else it refuses.
The other files are copied from A.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "recipes"))
from checkpoint_to_model import f32_tensor, read_safetensors, write_with_sharedllm  # noqa: E402


def _same_tensors(x, y):
    hx, dx = read_safetensors(x)
    hy, dy = read_safetensors(y)
    return sorted(hx) == sorted(hy) and all(
        hx[n]["dtype"] == hy[n]["dtype"] and hx[n]["shape"] == hy[n]["shape"] and
        dx[slice(*hx[n]["data_offsets"])] == dy[slice(*hy[n]["data_offsets"])] for n in hx)


def _same_json(x, y):
    with open(x) as f, open(y) as g:
        return json.load(f) == json.load(g)


def interpolate(a, b, weight, out):
    for f, same in (("model.safetensors", _same_tensors), ("config.json", _same_json),
                    ("sharedllm.json", _same_json)):
        if not same(os.path.join(a, f), os.path.join(b, f)):
            raise ValueError(f"{a} and {b} differ in {f}: only runs of one model can be interpolated")
    ha, da = read_safetensors(os.path.join(a, "sharedllm.safetensors"))
    hb, db = read_safetensors(os.path.join(b, "sharedllm.safetensors"))
    if sorted(ha) != sorted(hb):
        raise ValueError(f"{a} and {b} hold different tensors: {sorted(set(ha) ^ set(hb))[:4]}")
    data = bytearray(da)
    w = np.float32(weight)
    for name, t in ha.items():
        if t["shape"] != hb[name]["shape"]:
            raise ValueError(f"{name}: shape {t['shape']} in {a}, {hb[name]['shape']} in {b}")
        x, y = f32_tensor(ha, da, name), f32_tensor(hb, db, name)
        begin, end = t["data_offsets"]
        data[begin:end] = ((np.float32(1) - w) * x + w * y).astype("<f4").tobytes()
    write_with_sharedllm(a, out, ha, data)
    return len(ha)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", required=True, help="first SharedLLM model directory (weight 1 - W)")
    p.add_argument("--b", required=True, help="second SharedLLM model directory (weight W)")
    p.add_argument("--weight", type=float, required=True, help="W in [0, 1]: the share of --b")
    p.add_argument("--out", required=True, help="directory to write (created)")
    a = p.parse_args()
    if not 0 <= a.weight <= 1:
        sys.exit(f"--weight must lie in [0, 1], got {a.weight}")
    if os.path.abspath(a.out) in (os.path.abspath(a.a), os.path.abspath(a.b)):
        sys.exit("--out must differ from --a and --b")
    try:
        n = interpolate(a.a, a.b, a.weight, a.out)
    except (OSError, ValueError) as e:
        sys.exit(f"interpolate_models: {e}")
    print(f"{a.out}: {n} tensors, {1 - a.weight:g} x {a.a} + {a.weight:g} x {a.b}")


if __name__ == "__main__":
    main()

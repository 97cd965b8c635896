#!/usr/bin/python3
"""Writes a copy of a SharedLLM model whose cross-attention output is multiplied by SCALE.

  tools/scale_injection.py --model DIR --scale S [--layers 1,...] --out DIR

Every `*.cross_attn.o_proj.weight` in sharedllm.safetensors is multiplied by S, which multiplies
what each injection layer adds to the residual stream by S (the gate acts on the heads before
o_proj, so nothing else changes); the other files are copied unchanged. S = 1 copies the model,
S = 0 gives the truncated base model. --layers limits it to those decoder layers' injections.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checkpoint_to_model import f32_tensor, read_safetensors, write_with_sharedllm  # noqa: E402


def scale_injection(model, scale, out, layers=None):
    header, data = read_safetensors(os.path.join(model, "sharedllm.safetensors"))
    data = bytearray(data)
    scaled = 0
    for name, t in header.items():
        if not name.endswith(".cross_attn.o_proj.weight"):
            continue
        if layers is not None and int(name.split(".layers.")[1].split(".")[0]) not in layers:
            continue
        begin, end = t["data_offsets"]
        w = f32_tensor(header, data, name) * np.float32(scale)
        data[begin:end] = w.astype("<f4").tobytes()
        scaled += 1
    if scaled == 0:
        raise ValueError(f"{model}/sharedllm.safetensors has no cross_attn.o_proj.weight"
                         + (f" in layers {sorted(layers)}" if layers is not None else ""))
    write_with_sharedllm(model, out, header, data)
    return scaled


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="SharedLLM model directory")
    p.add_argument("--scale", type=float, required=True, help="factor for the cross-attention output")
    p.add_argument("--layers", help="comma-separated decoder layer indices (default: every injection)")
    p.add_argument("--out", required=True, help="directory to write (created)")
    a = p.parse_args()
    if not a.scale >= 0:
        sys.exit(f"--scale must be >= 0, got {a.scale}")
    if os.path.abspath(a.out) == os.path.abspath(a.model):
        sys.exit("--out must differ from --model")
    try:
        layers = None if a.layers is None else {int(x) for x in a.layers.split(",")}
    except ValueError:
        sys.exit(f"--layers must be comma-separated integers, got {a.layers!r}")
    try:
        n = scale_injection(a.model, a.scale, a.out, layers)
    except (OSError, ValueError) as e:
        sys.exit(f"scale_injection: {e}")
    print(f"{a.out}: {n} cross-attention output projections scaled by {a.scale}")


if __name__ == "__main__":
    main()

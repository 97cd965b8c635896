#!/usr/bin/python3
"""Writes a copy of a SharedLLM model whose cross-attention output is multiplied by SCALE.

  experiments/tools/scale_injection.py --model DIR --scale S [--layers 1,...] [--heads L:H,...] --out DIR

Every `*.cross_attn.o_proj.weight` in sharedllm.safetensors is multiplied by S, which multiplies
what each injection layer adds to the residual stream by S (the gate acts on the heads before
o_proj, so nothing else changes); the other files are copied unchanged. S = 1 copies the model,
S = 0 gives the truncated base model. --layers limits it to those decoder layers' injections;
--heads to those heads (decoder layer L, query head H: o_proj's input columns H*D..(H+1)*D-1,
D = config.json's head_dim), so S = 0 there takes single heads out.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "recipes"))
from checkpoint_to_model import f32_tensor, read_safetensors, write_with_sharedllm  # noqa: E402


def parse_heads(text):
    """"2:1,2:4" -> {(2, 1), (2, 4)}; ValueError on anything else."""
    try:
        heads = {tuple(int(x) for x in item.split(":")) for item in text.split(",")}
    except ValueError:
        heads = set()
    if not heads or any(len(h) != 2 or min(h) < 0 for h in heads):
        raise ValueError(f"--heads must be LAYER:HEAD,... (e.g. 2:1,2:4), got {text!r}")
    return heads


def decoder_layer(name):
    """The decoder layer index of a `model.layers.L....` tensor name."""
    return int(name.split(".layers.")[1].split(".")[0])


def scale_injection(model, scale, out, layers=None, heads=None):
    """Writes `out`: `model` with the o_proj of the injections in `layers` (None: all), or only the
    columns of `heads` ({(layer, head)}), multiplied by `scale`. Returns how many o_proj changed."""
    header, data = read_safetensors(os.path.join(model, "sharedllm.safetensors"))
    data = bytearray(data)
    head_dim = None
    if heads is not None:
        with open(os.path.join(model, "config.json")) as f:
            config = json.load(f)
        head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        for layer, head in sorted(heads):
            if head >= config["num_attention_heads"]:
                raise ValueError(f"head {layer}:{head}: the model has {config['num_attention_heads']} heads")
        layers = {layer for layer, _ in heads}
    scaled = set()
    for name, t in header.items():
        if not name.endswith(".cross_attn.o_proj.weight"):
            continue
        layer = decoder_layer(name)
        if layers is not None and layer not in layers:
            continue
        begin, end = t["data_offsets"]
        w = f32_tensor(header, data, name).reshape(t["shape"])
        if heads is None:
            w = w * np.float32(scale)
        else:
            for h in sorted(h for l, h in heads if l == layer):
                w[:, h * head_dim:(h + 1) * head_dim] *= np.float32(scale)
        data[begin:end] = w.astype("<f4").tobytes()
        scaled.add(layer)
    missing = sorted(layers - scaled) if layers is not None else []
    if not scaled or missing:
        raise ValueError(f"{model}/sharedllm.safetensors has no cross_attn.o_proj.weight"
                         + (f" in layers {missing or sorted(layers)}" if layers is not None else ""))
    write_with_sharedllm(model, out, header, data)
    return len(scaled)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="SharedLLM model directory")
    p.add_argument("--scale", type=float, required=True, help="factor for the cross-attention output")
    p.add_argument("--layers", help="comma-separated decoder layer indices (default: every injection)")
    p.add_argument("--heads", help="LAYER:HEAD,... : only these query heads (not with --layers)")
    p.add_argument("--out", required=True, help="directory to write (created)")
    a = p.parse_args()
    if a.heads is not None and a.layers is not None:
        sys.exit("give --layers or --heads, not both")
    if not a.scale >= 0:
        sys.exit(f"--scale must be >= 0, got {a.scale}")
    if os.path.abspath(a.out) == os.path.abspath(a.model):
        sys.exit("--out must differ from --model")
    try:
        layers = None if a.layers is None else {int(x) for x in a.layers.split(",")}
    except ValueError:
        sys.exit(f"--layers must be comma-separated integers, got {a.layers!r}")
    try:
        heads = None if a.heads is None else parse_heads(a.heads)
    except ValueError as e:
        sys.exit(str(e))
    try:
        n = scale_injection(a.model, a.scale, a.out, layers, heads)
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"scale_injection: {e}")
    print(f"{a.out}: {n} cross-attention output projections scaled by {a.scale}")


if __name__ == "__main__":
    main()

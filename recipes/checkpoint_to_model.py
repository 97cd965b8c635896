#!/usr/bin/env python3
"""Turn a trainer checkpoint into a SharedLLM model directory.

    recipes/checkpoint_to_model.py RUN_DIR INIT_DIR OUT_DIR

RUN_DIR/checkpoint/model.safetensors (written by `sharedllm train`, e.g. a run that ended on
"stop_after") holds every parameter of the model in one file. OUT_DIR gets the two files a model
directory has: model.safetensors (the base model) and sharedllm.safetensors (cross-attention and
compressor tensors, the names `sharedllm` saves there), plus config.json, sharedllm.json and
tokenizer.model from INIT_DIR, the run's "init". Tensors are copied byte for byte. Prints the
checkpoint's step. Standard library only.
"""
import argparse
import json
import os
import shutil
import struct
import sys


# What a model directory takes from the run's init unchanged.
INIT_FILES = ("config.json", "sharedllm.json", "tokenizer.model")


def is_sharedllm_parameter(name):
    """As sharedllm/sharedllm.cpp's IsSharedLLMParameter: cross-attention and compressor tensors."""
    return ".cross_attn." in name or name.startswith("compressor.")


def read_safetensors(path):
    """(header dict without __metadata__, data bytes); raises ValueError on a malformed file."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    n = struct.unpack("<Q", raw[:8])[0]
    if 8 + n > len(raw):
        raise ValueError(f"{path}: header length {n} runs past the end of the file")
    try:
        header = json.loads(raw[8:8 + n])
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: header is not JSON: {e}") from e
    header.pop("__metadata__", None)
    data = raw[8 + n:]
    for name, t in header.items():
        begin, end = t["data_offsets"]
        if not 0 <= begin <= end <= len(data):
            raise ValueError(f"{path}: tensor {name} lies outside the data")
    return header, data


def write_safetensors(path, header, data, names):
    out, blobs, offset = {}, [], 0
    for name in names:
        t = header[name]
        begin, end = t["data_offsets"]
        out[name] = {"dtype": t["dtype"], "shape": t["shape"],
                     "data_offsets": [offset, offset + end - begin]}
        blobs.append(data[begin:end])
        offset += end - begin
    out["__metadata__"] = {"format": "pt"}
    text = json.dumps(out).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def f32_tensor(header, data, name):
    """Tensor `name` of a read_safetensors result as a flat float32 array (a copy); ValueError
    unless it is F32."""
    import numpy as np
    t = header[name]
    if t["dtype"] != "F32":
        raise ValueError(f"{name}: dtype {t['dtype']}, only F32 is supported")
    begin, end = t["data_offsets"]
    return np.frombuffer(data[begin:end], dtype="<f4").copy()


def write_with_sharedllm(model, out, header, data):
    """Writes model directory `out`: `model`'s files, with sharedllm.safetensors from (header, data)."""
    os.makedirs(out, exist_ok=True)
    for f in INIT_FILES + ("model.safetensors",):
        shutil.copyfile(os.path.join(model, f), os.path.join(out, f))
    write_safetensors(os.path.join(out, "sharedllm.safetensors"), header, bytes(data), list(header))


def convert(run_dir, init_dir, out_dir):
    ckpt = os.path.join(run_dir, "checkpoint")
    state_path = os.path.join(ckpt, "state.json")
    if not os.path.isfile(state_path):
        raise ValueError(f"{ckpt} holds no complete checkpoint (state.json missing)")
    for f in INIT_FILES:
        if not os.path.isfile(os.path.join(init_dir, f)):
            raise ValueError(f"{init_dir} has no {f}: INIT_DIR must be the run's SharedLLM init")
    header, data = read_safetensors(os.path.join(ckpt, "model.safetensors"))
    names = sorted(header)
    shared = [n for n in names if is_sharedllm_parameter(n)]
    if not shared:
        raise ValueError(f"{ckpt}: no cross-attention tensors: not a SharedLLM run")
    os.makedirs(out_dir, exist_ok=True)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), header, data,
                      [n for n in names if not is_sharedllm_parameter(n)])
    write_safetensors(os.path.join(out_dir, "sharedllm.safetensors"), header, data, shared)
    if os.path.abspath(init_dir) != os.path.abspath(out_dir):
        for f in INIT_FILES:
            shutil.copy(os.path.join(init_dir, f), out_dir)
    with open(state_path) as f:
        return json.load(f)["step"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("run_dir", help="the training run's \"out\" directory (holds checkpoint/)")
    p.add_argument("init_dir", help="the run's \"init\" model directory")
    p.add_argument("out_dir", help="model directory to write (may be run_dir)")
    a = p.parse_args()
    try:
        print(convert(a.run_dir, a.init_dir, a.out_dir))
    except (ValueError, OSError, KeyError) as e:
        print(f"checkpoint_to_model: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

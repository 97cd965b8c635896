"""Minimal safetensors reader/writer, written from the format description.

File layout:
  * 8 bytes: N, the header length, unsigned 64-bit little-endian;
  * N bytes: a UTF-8 JSON object
        {"<tensor name>": {"dtype": "F32"|"F16"|"BF16"|...,
                           "shape": [d0, d1, ...],
                           "data_offsets": [begin, end]},
         ...,
         "__metadata__": {"<str>": "<str>"}}     (optional)
    (writers pad the JSON with trailing spaces so that 8 + N is a multiple of 8);
  * the byte buffer; data_offsets are relative to its start, the data is
    little-endian and row-major (C order).

Sharded checkpoints: ``model.safetensors.index.json`` holds
  {"metadata": {"total_size": <bytes of tensor data>},
   "weight_map": {"<tensor name>": "model-00001-of-00002.safetensors", ...}}

Only numpy is needed.  Arrays are returned as numpy arrays: F32 -> float32,
F16 -> float16, F64 -> float64, BF16 -> float32 (exact: bf16 is the upper half
of a float32).  Writing takes numpy arrays plus the safetensors dtype name to
store them as; BF16 rounding is round-to-nearest-even (what torch does).
"""

import json
import os
import struct

import numpy as np

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

# safetensors dtype name -> (numpy storage dtype, bytes per element)
_STORAGE = {
    "F64": (np.dtype("<f8"), 8),
    "F32": (np.dtype("<f4"), 4),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2),  # raw bits; widened to float32 on read
}

# Refuse absurd header sizes (a corrupt length field) before allocating.
_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """A file that is not a well-formed safetensors file."""


# --------------------------------------------------------------------------- bf16

def bf16_bits_to_f32(bits):
    """uint16 bf16 bit patterns -> float32 values (exact)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(x):
    """float32 values -> uint16 bf16 bit patterns, round to nearest even.

    NaNs are kept NaN (quiet) rather than being rounded into infinities.
    """
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))
    out = ((u + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = ((u[nan] >> 16) | np.uint32(0x0040)).astype(np.uint16)
    return out


# --------------------------------------------------------------------------- read

def read_header(path):
    """Returns (header dict without __metadata__, metadata dict, data start, file size)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise SafetensorsError(
                f"{path}: truncated: {size} bytes, too short for the 8-byte header length")
        (n,) = struct.unpack("<Q", raw)
        if n > _MAX_HEADER:
            raise SafetensorsError(f"{path}: header length {n} is implausibly large (corrupt file?)")
        if 8 + n > size:
            raise SafetensorsError(
                f"{path}: truncated: header length says {n} bytes of JSON but the file has only "
                f"{size - 8} bytes after the length field")
        blob = f.read(n)
    try:
        header = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{path}: header is not valid UTF-8 JSON: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header JSON is not an object")
    metadata = header.pop("__metadata__", None) or {}
    return header, metadata, 8 + n, size


def _check_entry(path, name, entry, buffer_len):
    for key in ("dtype", "shape", "data_offsets"):
        if key not in entry:
            raise SafetensorsError(f"{path}: tensor {name!r} has no {key!r}")
    dtype = entry["dtype"]
    if dtype not in _STORAGE:
        raise SafetensorsError(f"{path}: tensor {name!r} has unsupported dtype {dtype!r}")
    shape = entry["shape"]
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise SafetensorsError(f"{path}: tensor {name!r} has a bad shape {shape!r}")
    begin, end = entry["data_offsets"]
    numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
    want = numel * _STORAGE[dtype][1]
    if not (0 <= begin <= end):
        raise SafetensorsError(f"{path}: tensor {name!r} has bad data_offsets {[begin, end]}")
    if end - begin != want:
        raise SafetensorsError(
            f"{path}: tensor {name!r}: data_offsets span {end - begin} bytes but "
            f"{dtype}{shape} needs {want}")
    if end > buffer_len:
        raise SafetensorsError(
            f"{path}: truncated: tensor {name!r} ends at byte {end} of the data buffer but the "
            f"buffer holds only {buffer_len} bytes")


def load_file(path, names=None):
    """Reads a .safetensors file -> (dict name -> numpy array, metadata dict).

    With ``names`` only those tensors are returned (all must exist).
    Raises SafetensorsError on any malformation, including truncation.
    """
    header, metadata, start, size = read_header(path)
    buffer_len = size - start
    for name, entry in header.items():
        _check_entry(path, name, entry, buffer_len)
    wanted = header.keys() if names is None else names
    out = {}
    with open(path, "rb") as f:
        for name in wanted:
            if name not in header:
                raise SafetensorsError(f"{path}: no tensor named {name!r}")
            entry = header[name]
            begin, end = entry["data_offsets"]
            f.seek(start + begin)
            raw = f.read(end - begin)
            if len(raw) != end - begin:  # file shrank under us
                raise SafetensorsError(f"{path}: truncated while reading {name!r}")
            storage, _ = _STORAGE[entry["dtype"]]
            arr = np.frombuffer(raw, dtype=storage).reshape(entry["shape"])
            if entry["dtype"] == "BF16":
                arr = bf16_bits_to_f32(arr)
            out[name] = arr.astype(arr.dtype.newbyteorder("="), copy=True)
    return out, metadata


def tensor_dtypes(path):
    """dict name -> safetensors dtype string, from the header only."""
    header, _, _, _ = read_header(path)
    return {k: v["dtype"] for k, v in header.items()}


def load_checkpoint(directory):
    """Loads every tensor of a Hugging Face checkpoint directory.

    Uses ``model.safetensors.index.json`` (sharded) when present, otherwise
    ``model.safetensors``.  Returns dict name -> numpy array.
    """
    index_path = os.path.join(directory, INDEX_NAME)
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
        if "weight_map" not in index:
            raise SafetensorsError(f"{index_path}: no 'weight_map'")
        by_file = {}
        for name, fname in index["weight_map"].items():
            by_file.setdefault(fname, []).append(name)
        tensors = {}
        for fname, names in sorted(by_file.items()):
            part, _ = load_file(os.path.join(directory, fname))
            missing = set(names) - part.keys()
            if missing:
                raise SafetensorsError(
                    f"{fname}: index maps {sorted(missing)} to it but the file lacks them")
            extra = part.keys() - set(names)
            if extra:
                raise SafetensorsError(f"{fname}: holds {sorted(extra)} not in the index")
            tensors.update(part)
        return tensors
    single = os.path.join(directory, SINGLE_NAME)
    if os.path.exists(single):
        return load_file(single)[0]
    raise SafetensorsError(f"{directory}: neither {INDEX_NAME} nor {SINGLE_NAME} found")


# --------------------------------------------------------------------------- write

def _encode(arr, dtype):
    if dtype == "BF16":
        return f32_to_bf16_bits(np.asarray(arr, dtype=np.float32)).astype("<u2").tobytes()
    storage, _ = _STORAGE[dtype]
    return np.ascontiguousarray(arr).astype(storage).tobytes()


def save_file(tensors, path, dtype="F32", metadata=None):
    """Writes tensors (dict name -> numpy array) to ``path``.

    ``dtype`` is the safetensors dtype for all tensors, or a dict name -> dtype.
    Tensors are stored in the dict's order; returns the number of data bytes.
    """
    header = {}
    chunks = []
    offset = 0
    for name, arr in tensors.items():
        dt = dtype[name] if isinstance(dtype, dict) else dtype
        if dt not in _STORAGE:
            raise SafetensorsError(f"cannot write dtype {dt!r}")
        arr = np.asarray(arr)
        data = _encode(arr, dt)
        header[name] = {"dtype": dt, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * ((-len(blob)) % 8)  # pad so the data buffer starts 8-aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for data in chunks:
            f.write(data)
    return offset


def shard_file_name(i, k):
    return f"model-{i + 1:05d}-of-{k:05d}.safetensors"


def save_checkpoint(tensors, directory, dtype="F32", shards=1):
    """Writes a checkpoint as ``model.safetensors`` or as ``shards`` files + index.

    Tensors keep their order and are split into contiguous groups of roughly
    equal byte size (every shard gets at least one tensor).
    """
    os.makedirs(directory, exist_ok=True)
    meta = {"format": "pt"}
    if shards <= 1:
        save_file(tensors, os.path.join(directory, SINGLE_NAME), dtype, meta)
        return
    names = list(tensors)
    if shards > len(names):
        raise ValueError(f"cannot split {len(names)} tensors into {shards} shards")
    itemsize = _STORAGE[dtype][1] if not isinstance(dtype, dict) else None
    sizes = [np.asarray(tensors[n]).size * (itemsize or _STORAGE[dtype[n]][1]) for n in names]
    total = sum(sizes)
    # Greedy contiguous split by cumulative size, forcing >= 1 tensor per shard.
    groups, current, acc = [], [], 0
    for i, (name, sz) in enumerate(zip(names, sizes)):
        remaining_names = len(names) - i
        remaining_shards = shards - len(groups)
        if current and (acc >= total * (len(groups) + 1) / shards
                        or remaining_names < remaining_shards):
            groups.append(current)
            current = []
        current.append(name)
        acc += sz
    groups.append(current)
    assert len(groups) == shards, (len(groups), shards)
    weight_map = {}
    for i, group in enumerate(groups):
        fname = shard_file_name(i, shards)
        sub = {n: tensors[n] for n in group}
        sub_dtype = {n: dtype[n] for n in group} if isinstance(dtype, dict) else dtype
        save_file(sub, os.path.join(directory, fname), sub_dtype, meta)
        for n in group:
            weight_map[n] = fname
    with open(os.path.join(directory, INDEX_NAME), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")

"""Token shard files (SLTOKv1): pre-tokenised documents, so training never tokenises on the fly.

Layout, all integers little-endian:
    offset  size      field
    0       8         magic  b"SLTOKv1\\0"
    8       4         u32 vocab_size       (every token id is < vocab_size)
    12      4         u32 dtype code       (2 = uint16 tokens, 4 = uint32 tokens)
    16      8         u64 num_tokens
    24      8         u64 num_documents
    32      8*D       u64 document start offsets (token indices): offsets[0] == 0, strictly
                      increasing, each < num_tokens; document i is tokens
                      [offsets[i], offsets[i+1]) (the last one ends at num_tokens)
    32+8*D  dtype*N   the tokens
    ...     4         u32 CRC-32 (zlib's polynomial, as zlib.crc32) of every byte before it

The C++ reader is model/token_shards.{h,cpp}; this module is the writer (and a reader for tools).
Run as a script to write a shard from JSON ({"vocab_size": V, "documents": [[ids], ...]}):
`python3 shards.py OUT.bin DOCS.json` (or the JSON on stdin); the C++ test uses it to check the
reader against this writer.
"""

import json
import os
import struct
import sys
import zlib

import numpy as np

MAGIC = b"SLTOKv1\0"
HEADER = struct.Struct("<8sIIQQ")  # 32 bytes


def dtype_for(vocab_size):
    return (2, np.dtype("<u2")) if vocab_size <= 1 << 16 else (4, np.dtype("<u4"))


def write_shard(path, vocab_size, documents):
    """Writes `documents` (a list of non-empty 1-D integer arrays) to `path`; returns the number
    of tokens."""
    code, dt = dtype_for(vocab_size)
    lengths = np.array([len(d) for d in documents], dtype=np.int64)
    if (lengths <= 0).any():
        raise ValueError("empty document")
    offsets = np.zeros(len(documents), dtype="<u8")
    if len(documents) > 1:
        offsets[1:] = np.cumsum(lengths)[:-1]
    tokens = np.concatenate([np.asarray(d, dtype=np.int64) for d in documents]) \
        if documents else np.zeros(0, dtype=np.int64)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError("token id out of range [0, %d)" % vocab_size)
    parts = [HEADER.pack(MAGIC, vocab_size, code, int(tokens.size), len(documents)),
             offsets.tobytes(), tokens.astype(dt).tobytes()]
    crc = 0
    for p in parts:
        crc = zlib.crc32(p, crc)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        for p in parts:
            f.write(p)
        f.write(struct.pack("<I", crc))
    os.replace(tmp, path)
    return int(tokens.size)


def read_shard(path):
    """(vocab_size, tokens as a numpy array, offsets as a numpy array); checks everything the C++
    reader checks except the model's vocabulary."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < HEADER.size + 4:
        raise ValueError("%s: truncated" % path)
    magic, vocab, code, n, d = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ValueError("%s: bad magic" % path)
    if code not in (2, 4):
        raise ValueError("%s: unknown dtype %d" % (path, code))
    want = HEADER.size + 8 * d + code * n + 4
    if len(data) != want:
        raise ValueError("%s: size %d, expected %d" % (path, len(data), want))
    if zlib.crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0]:
        raise ValueError("%s: checksum mismatch" % path)
    offsets = np.frombuffer(data, dtype="<u8", count=d, offset=HEADER.size)
    tokens = np.frombuffer(data, dtype="<u2" if code == 2 else "<u4", count=n,
                           offset=HEADER.size + 8 * d)
    if d and (offsets[0] != 0 or (np.diff(offsets.astype(np.int64)) <= 0).any()
              or offsets[-1] >= n):
        raise ValueError("%s: bad document offsets" % path)
    return vocab, tokens, offsets


def documents_of(tokens, offsets):
    bounds = list(offsets.astype(np.int64)) + [len(tokens)]
    return [tokens[bounds[i]:bounds[i + 1]] for i in range(len(offsets))]


if __name__ == "__main__":
    if len(sys.argv) > 2:
        with open(sys.argv[2]) as f:
            spec = json.load(f)
    else:
        spec = json.load(sys.stdin)
    write_shard(sys.argv[1], int(spec["vocab_size"]),
                [np.array(d, dtype=np.int64) for d in spec["documents"]])

#!/usr/bin/python3
"""Writes a token shard holding the documents of some sources of a training shard: a view of
training text (nothing new), so a SharedLLM stage can weight one genre with train_shard_weights.

  /usr/bin/python3 tools/corpus/select_sources.py --index data/shards/INDEX.json \\
      --shard train-0000.bin --sources python-stdlib,sympy --out data/shards/view-python.bin

Document names come from INDEX.json (`<source>/<index>`, make_shards.py); the documents keep
their order. Prints the documents and tokens written.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shards  # noqa: E402


def select(index, shard_dir, shard, sources, out):
    entry = [s for s in index["shards"] if s["path"] == shard]
    if not entry:
        raise ValueError("%s is not in the index" % shard)
    names = entry[0]["document_names"]
    vocab, tokens, offsets = shards.read_shard(os.path.join(shard_dir, shard))
    docs = shards.documents_of(tokens, offsets)
    if len(docs) != len(names):
        raise ValueError("%s has %d documents, the index names %d" % (shard, len(docs), len(names)))
    known = set(n.split("/")[0] for n in names)
    unknown = sorted(set(sources) - known)
    if unknown:
        raise ValueError("no source %s in %s (it has %s)" % (unknown, shard, ", ".join(sorted(known))))
    picked = [np.asarray(d, dtype=np.int64) for d, n in zip(docs, names) if n.split("/")[0] in sources]
    return len(picked), shards.write_shard(out, vocab, picked)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--index", required=True, help="INDEX.json of make_shards.py")
    ap.add_argument("--shard", required=True, help="a training shard named in the index")
    ap.add_argument("--sources", required=True, help="comma-separated source names")
    ap.add_argument("--out", required=True, help="the shard to write")
    args = ap.parse_args()
    with open(args.index) as f:
        index = json.load(f)
    try:
        docs, toks = select(index, os.path.dirname(args.index), args.shard,
                            set(args.sources.split(",")), args.out)
    except ValueError as e:
        sys.exit("select_sources: %s" % e)
    print("%s: %d documents, %d tokens" % (args.out, docs, toks))


if __name__ == "__main__":
    main()

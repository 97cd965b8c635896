#!/usr/bin/python3
"""Writes a token shard holding the documents of some sources of a training shard: a view of
training text (nothing new), so a SharedLLM stage can weight one genre with train_shard_weights,
or a seeded sample of its documents (--fraction), small enough to send to another machine.

  /usr/bin/python3 corpus/select_sources.py --index data/shards/INDEX.json \\
      --shard train-0000.bin --sources python-stdlib,sympy --out data/shards/view-python.bin
  /usr/bin/python3 corpus/select_sources.py --index data/shards/INDEX.json \\
      --shard train-0000.bin --fraction 0.4 --seed 1 --out data/gpu/code/train-sample.bin

Document names come from INDEX.json (`<source>/<index>`, make_shards.py); the documents keep
their order. With --fraction F each selected document is kept with probability F (numpy's
default_rng(seed)), so the same seed writes the same bytes. Prints the documents and tokens
written.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shards  # noqa: E402


def select(index, shard_dir, shard, sources, out, fraction=1.0, seed=0):
    """Writes the documents of `sources` (None: every source) of `shard`, each kept with
    probability `fraction`; returns (documents, tokens) written."""
    if not 0 < fraction <= 1:
        raise ValueError("fraction must be in (0, 1], not %g" % fraction)
    entry = [s for s in index["shards"] if s["path"] == shard]
    if not entry:
        raise ValueError("%s is not in the index" % shard)
    names = entry[0]["document_names"]
    vocab, tokens, offsets = shards.read_shard(os.path.join(shard_dir, shard))
    docs = shards.documents_of(tokens, offsets)
    if len(docs) != len(names):
        raise ValueError("%s has %d documents, the index names %d" % (shard, len(docs), len(names)))
    known = set(n.split("/")[0] for n in names)
    if sources is None:
        sources = known
    unknown = sorted(set(sources) - known)
    if unknown:
        raise ValueError("no source %s in %s (it has %s)" % (unknown, shard, ", ".join(sorted(known))))
    keep = np.random.default_rng(seed).random(len(docs)) < fraction
    picked = [np.asarray(d, dtype=np.int64) for d, n, k in zip(docs, names, keep)
              if k and n.split("/")[0] in sources]
    if not picked:
        raise ValueError("no document of %s was selected" % shard)
    return len(picked), shards.write_shard(out, vocab, picked)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--index", required=True, help="INDEX.json of make_shards.py")
    ap.add_argument("--shard", required=True, help="a training shard named in the index")
    ap.add_argument("--sources", help="comma-separated source names (default: every source)")
    ap.add_argument("--fraction", type=float, default=1.0,
                    help="keep each selected document with this probability (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the --fraction sample (default 0)")
    ap.add_argument("--out", required=True, help="the shard to write")
    args = ap.parse_args()
    with open(args.index) as f:
        index = json.load(f)
    try:
        docs, toks = select(index, os.path.dirname(args.index), args.shard,
                            set(args.sources.split(",")) if args.sources else None, args.out,
                            args.fraction, args.seed)
    except ValueError as e:
        sys.exit("select_sources: %s" % e)
    print("%s: %d documents, %d tokens" % (args.out, docs, toks))


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Writes a deterministic sample of the training corpus for spm_train (one sentence per line).

Every training source contributes the same fraction of its bytes (its share of the corpus is
kept), chosen by whole documents: a document is taken when the sha256 of "<source>/<index>" falls
below the fraction, then, if short, more documents in hash order until the source's quota is met.
Lines are written as they are (spm_train treats each line as a sentence; empty lines are skipped).
"""

import argparse
import hashlib
import os
import sys


def documents(path):
    with open(path, "rb") as f:
        data = f.read().decode("utf-8")
    docs = data.split("\x1e\n")
    if docs and docs[-1] == "":
        docs.pop()
    return docs


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", required=True, help="data/corpus")
    ap.add_argument("--mb", type=float, required=True, help="sample size in MiB")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    train = os.path.join(args.corpus, "train")
    sources = sorted(f[:-4] for f in os.listdir(train) if f.endswith(".txt"))
    total = sum(os.path.getsize(os.path.join(train, s + ".txt")) for s in sources)
    fraction = min(1.0, args.mb * 2**20 / total)
    out = []
    for source in sources:
        docs = documents(os.path.join(train, source + ".txt"))
        size = sum(len(d.encode("utf-8")) for d in docs)
        quota = fraction * size
        order = sorted(range(len(docs)),
                       key=lambda i: hashlib.sha256(("%s/%d" % (source, i)).encode()).digest())
        chosen, got = [], 0
        for i in order:
            if got >= quota:
                break
            chosen.append(i)
            got += len(docs[i].encode("utf-8"))
        for i in sorted(chosen):
            out.append(docs[i])
        print("[sample] %-15s %6.2f MiB of %6.2f MiB (%d of %d documents)"
              % (source, got / 2**20, size / 2**20, len(chosen), len(docs)), file=sys.stderr)
    text = "".join(out)
    with open(args.out, "wb") as f:
        f.write(text.encode("utf-8"))
    print("[sample] %.2f MiB -> %s" % (len(text.encode("utf-8")) / 2**20, args.out),
          file=sys.stderr)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Writes the bundled demo document: about --tokens tokens of the GNU GPL-3 text (shipped by every
Debian system in /usr/share/common-licenses), paragraphs in a seeded order, with one pass-key
sentence hidden at --depth (0..1). Deterministic: the same arguments give the same bytes."""
import argparse
import random


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--bytes", type=int, default=26000, help="approximate size (~8K tokens)")
    p.add_argument("--depth", type=float, default=0.4)
    p.add_argument("--key", default="71432")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--source", default="/usr/share/common-licenses/GPL-3")
    a = p.parse_args()
    text = open(a.source, encoding="utf-8").read()
    paragraphs = [" ".join(x.split()) for x in text.split("\n\n") if len(x.split()) > 8]
    rng = random.Random(a.seed)
    out, size = [], 0
    while size < a.bytes:
        para = paragraphs[rng.randrange(len(paragraphs))]
        out.append(para)
        size += len(para) + 2
    needle = f"The pass key is {a.key}. Remember it. {a.key} is the pass key."
    out.insert(int(len(out) * a.depth), needle)
    with open(a.out, "w", encoding="utf-8") as f:
        f.write("\n\n".join(out) + "\n")


if __name__ == "__main__":
    main()

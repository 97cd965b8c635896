#!/usr/bin/python3
"""Tokens per byte of sentencepiece models on the held-out documents (and the training sample).

Counts are exact whole-document counts (each "\\n" is one <0x0A> token; see make_shards.py), BOS
excluded. Prints a Markdown table; with --docs FILE, also replaces the lines between
"<!-- tokenizer-table:begin -->" and "<!-- tokenizer-table:end -->" in FILE.
"""

import argparse
import os
import re
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spm_model  # noqa: E402

BEGIN, END = "<!-- tokenizer-table:begin -->", "<!-- tokenizer-table:end -->"


def count(model_path, text, byte_ids):
    """(tokens, byte-fallback tokens) of `text` encoded as one string."""
    body = text if text.endswith("\n") else text + "\n"
    out = subprocess.run(["spm_encode", "--model=" + model_path, "--output_format=id"],
                         input=body.encode("utf-8"), stdout=subprocess.PIPE, check=True).stdout
    ids = np.fromstring(out, dtype=np.int64, sep=" ") if out.strip() else np.zeros(0, np.int64)
    newlines = body.count("\n") - (0 if text.endswith("\n") else 1)
    fallback = int(np.isin(ids, byte_ids).sum()) + newlines
    return len(ids) + newlines, fallback


def load_sets(corpus, sample):
    sets = {}
    for split in ("books", "code", "proofs"):
        d = os.path.join(corpus, "heldout", split)
        texts = []
        for f in sorted(os.listdir(d)):
            with open(os.path.join(d, f), encoding="utf-8") as fh:
                texts.append(fh.read())
        sets["held-out " + split] = texts
    if sample:
        with open(sample, encoding="utf-8") as fh:
            sets["training sample"] = [fh.read()]
    return sets


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--sample", help="the tokenizer training sample (in-domain reference)")
    ap.add_argument("--docs", help="Markdown file whose tokenizer table to replace")
    ap.add_argument("models", nargs="+", help="tokenizer.model files, smallest vocabulary first")
    args = ap.parse_args()

    sets = load_sets(args.corpus, args.sample)
    names = list(sets)
    rows = []
    for path in args.models:
        m = spm_model.SpmModel(path)
        byte_ids = np.array([i for i, p in enumerate(m.pieces) if p[2] == spm_model.BYTE])
        cells, fb_total, tok_total = [], 0, 0
        for name in names:
            tokens = fallback = nbytes = 0
            for text in sets[name]:
                t, f = count(path, text, byte_ids)
                tokens += t
                fallback += f
                nbytes += len(text.encode("utf-8"))
            cells.append((tokens, nbytes))
            fb_total += fallback
            tok_total += tokens
            print("[measure] vocab %d %-16s %9d tokens / %9d bytes = %.4f tokens/byte"
                  % (m.vocab_size(), name, tokens, nbytes, tokens / nbytes), file=sys.stderr)
        rows.append((m.vocab_size(), cells, fb_total / tok_total))

    header = ("| vocab | " + " | ".join(names) + " | byte-fallback tokens |\n"
              "|---:|" + "---:|" * len(names) + "---:|\n")
    lines = []
    for vocab, cells, fb in rows:
        lines.append("| %d | " % vocab
                     + " | ".join("%.3f" % (t / b) for t, b in cells) + " | %.1f %% |" % (100 * fb))
    table = header + "\n".join(lines) + "\n"
    table += ("\nTokens per byte (lower is better), whole-document counts with BOS excluded; "
              "byte-fallback share includes the <0x0A> newline tokens. Sizes: "
              + ", ".join("%s %.1f MiB" % (n, sum(len(t.encode()) for t in sets[n]) / 2**20)
                          for n in names) + ".\n")
    print(table)
    if args.docs:
        with open(args.docs, encoding="utf-8") as f:
            doc = f.read()
        if BEGIN not in doc or END not in doc:
            sys.exit("%s has no %s ... %s block" % (args.docs, BEGIN, END))
        doc = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END),
                     lambda _: BEGIN + "\n" + table + END, doc, flags=re.S)
        with open(args.docs, "w", encoding="utf-8") as f:
            f.write(doc)
        print("[measure] updated %s" % args.docs, file=sys.stderr)


if __name__ == "__main__":
    main()

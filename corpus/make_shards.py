#!/usr/bin/python3
"""Tokenises data/corpus/ into token shards (format: corpus/shards.py, docs/design/data.md).

  data/shards/train-0000.bin, ...      every training document, in a fixed pseudo-random order
                                       (sha256 of "<source>/<index>") so that sources mix in every
                                       shard; at most --shard-tokens tokens a shard
  data/shards/adapt-<source>.bin       the documents of data/corpus/adapt/<source>.txt (text only
                                       SharedLLM stages train on), in file order
  data/shards/heldout-<split>.bin      held-out books, code and proofs: one document per file of
                                       data/corpus/heldout/<split>/, in file-name order
  data/shards/INDEX.json               per shard: tokens, documents (names in order), sha256

Each document is [BOS] + the ids of the document's text encoded as ONE string. spm_encode is
line-based, so the text is encoded line by line and each "\\n" becomes the byte-fallback piece
<0x0A> (the tokenizer is trained with --add_dummy_prefix=false and sees no newlines in training,
so no piece spans a line break and this equals whole-string encoding). A sample of documents is
re-encoded whole by a pure-Python BPE encoder (spm_model.py) and compared; any difference fails.
"""

import argparse
import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shards  # noqa: E402
import spm_model  # noqa: E402

CHUNK_BYTES = 4 << 20
_MODEL = None
_NEWLINE = None


def log(msg):
    print("[make_shards] " + msg, flush=True)


def read_train_docs(path):
    with open(path, "rb") as f:
        text = f.read().decode("utf-8")
    docs = text.split("\x1e\n")
    if docs and docs[-1] == "":
        docs.pop()
    return docs


def encode_chunk(docs):
    """Token arrays (without BOS) of `docs`, each encoded as one string via line-based
    spm_encode: ids of line 1, <0x0A>, ids of line 2, <0x0A>, ..."""
    inputs, lines_per_doc, trailing = [], [], []
    for d in docs:
        ends_with_newline = d.endswith("\n")
        body = d if ends_with_newline else d + "\n"
        inputs.append(body)
        lines_per_doc.append(body.count("\n"))
        trailing.append(ends_with_newline)
    data = "".join(inputs).encode("utf-8")
    proc = subprocess.run(["spm_encode", "--model=" + _MODEL, "--output_format=id"],
                          input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise RuntimeError("spm_encode failed: " + proc.stderr.decode())
    out = proc.stdout
    if out.count(b"\n") != sum(lines_per_doc):
        raise RuntimeError("spm_encode returned %d lines for %d"
                           % (out.count(b"\n"), sum(lines_per_doc)))
    # Every output line ends with "\n": turn each into the newline token (-1 marks it first).
    flat = np.fromstring(out.replace(b"\n", b" -1 "), dtype=np.int64, sep=" ")
    ends = np.flatnonzero(flat == -1)
    flat[ends] = _NEWLINE
    result, start, line = [], 0, 0
    for n, has_nl in zip(lines_per_doc, trailing):
        line += n
        stop = ends[line - 1] + 1
        ids = flat[start:stop]
        if not has_nl:
            ids = ids[:-1]
        result.append(ids)
        start = stop
    return result


def _init(model, newline):
    global _MODEL, _NEWLINE
    _MODEL, _NEWLINE = model, newline


def chunks(docs):
    batch, size = [], 0
    for d in docs:
        batch.append(d)
        size += len(d)
        if size >= CHUNK_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def encode_all(pool, docs):
    out = []
    for part in pool.imap(encode_chunk, list(chunks(docs))):
        out.extend(part)
    return out


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", required=True, help="data/tokenizer/tokenizer.model")
    ap.add_argument("--corpus", required=True, help="data/corpus")
    ap.add_argument("--out", required=True, help="data/shards")
    ap.add_argument("--shard-tokens", type=int, default=64 << 20,
                    help="most tokens in one training shard (default 64Mi)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel spm_encode processes")
    ap.add_argument("--verify-docs", type=int, default=48,
                    help="documents re-encoded whole in Python and compared (0 = none)")
    args = ap.parse_args()

    model = spm_model.SpmModel(args.model)
    if model.add_dummy_prefix or model.remove_extra_whitespaces:
        sys.exit("make_shards: the tokenizer must be trained with --add_dummy_prefix=false and "
                 "--remove_extra_whitespaces=false (line-by-line encoding would differ from "
                 "whole-document encoding otherwise); see corpus/train_tokenizer.sh")
    newline = model.piece_id("<0x0A>")
    bos = model.piece_id("<s>")
    if newline is None or bos is None:
        sys.exit("make_shards: the tokenizer has no <0x0A> byte piece or no <s>")
    vocab = model.vocab_size()
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()

    # Training documents, in a fixed pseudo-random order across sources.
    train_dir = os.path.join(args.corpus, "train")
    entries = []  # (sort key, source, index, text)
    for f in sorted(os.listdir(train_dir)):
        if not f.endswith(".txt"):
            continue
        source = f[:-4]
        for i, d in enumerate(read_train_docs(os.path.join(train_dir, f))):
            key = hashlib.sha256(("%s/%d" % (source, i)).encode()).digest()
            entries.append((key, source, i, d))
    entries.sort(key=lambda e: e[0])
    log("%d training documents, %.1f MiB" % (len(entries),
                                             sum(len(e[3]) for e in entries) / 2**20))

    adapt = []  # (source, index, text)
    adapt_dir = os.path.join(args.corpus, "adapt")
    if os.path.isdir(adapt_dir):
        for f in sorted(os.listdir(adapt_dir)):
            if f.endswith(".txt"):
                for i, d in enumerate(read_train_docs(os.path.join(adapt_dir, f))):
                    adapt.append((f[:-4], i, d))

    held = []  # (split, name, text)
    held_dir = os.path.join(args.corpus, "heldout")
    for split in sorted(os.listdir(held_dir)):
        for f in sorted(os.listdir(os.path.join(held_dir, split))):
            if f.endswith(".txt"):
                with open(os.path.join(held_dir, split, f), "rb") as fh:
                    held.append((split, f[:-4], fh.read().decode("utf-8")))

    with multiprocessing.Pool(args.jobs, initializer=_init,
                              initargs=(args.model, newline)) as pool:
        log("encoding training text with %d spm_encode processes" % args.jobs)
        train_ids = encode_all(pool, [e[3] for e in entries])
        log("  %.0fs" % (time.time() - t0))
        log("encoding adaptation text")
        adapt_ids = encode_all(pool, [a[2] for a in adapt])
        log("  %.0fs" % (time.time() - t0))
        log("encoding held-out documents")
        held_ids = encode_all(pool, [h[2] for h in held])
        log("  %.0fs" % (time.time() - t0))

    index = {"format": "SLTOKv1", "vocab_size": vocab, "bos_id": bos, "newline_id": newline,
             "tokenizer_sha256": sha256_file(args.model), "shards": []}
    wanted = set()

    def emit(name, docs, names, by_source=None):
        path = os.path.join(args.out, name)
        ntok = shards.write_shard(path, vocab, docs)
        wanted.add(name)
        entry = {"path": name, "tokens": ntok, "documents": len(docs),
                 "bytes": os.path.getsize(path), "sha256": sha256_file(path),
                 "document_names": names}
        if by_source:
            entry["tokens_by_source"] = by_source
        index["shards"].append(entry)
        log("wrote %s: %d documents, %d tokens" % (name, len(docs), ntok))

    # Training shards.
    docs, names, by_source, k = [], [], {}, 0
    total = 0
    for e, ids in zip(entries, train_ids):
        doc = np.concatenate([[bos], ids]).astype(np.int64)
        if docs and total + len(doc) > args.shard_tokens:
            emit("train-%04d.bin" % k, docs, names, dict(sorted(by_source.items())))
            docs, names, by_source, total, k = [], [], {}, 0, k + 1
        docs.append(doc)
        names.append("%s/%d" % (e[1], e[2]))
        by_source[e[1]] = by_source.get(e[1], 0) + len(doc)
        total += len(doc)
    if docs:
        emit("train-%04d.bin" % k, docs, names, dict(sorted(by_source.items())))

    # Adaptation shards, one per source.
    for source in sorted(set(a[0] for a in adapt)):
        sel = [(a, ids) for a, ids in zip(adapt, adapt_ids) if a[0] == source]
        emit("adapt-%s.bin" % source,
             [np.concatenate([[bos], ids]).astype(np.int64) for _, ids in sel],
             ["%s/%d" % (a[0], a[1]) for a, _ in sel])

    # Held-out shards, one per split.
    for split in sorted(set(h[0] for h in held)):
        sel = [(h, ids) for h, ids in zip(held, held_ids) if h[0] == split]
        emit("heldout-%s.bin" % split,
             [np.concatenate([[bos], ids]).astype(np.int64) for _, ids in sel],
             [h[1] for h, _ in sel])

    for f in os.listdir(args.out):
        if f.endswith(".bin") and f not in wanted:
            os.remove(os.path.join(args.out, f))

    # Check: a sample of documents (up to 16 KiB each, chosen by hash) encoded whole in Python
    # must equal what the shards hold.
    if args.verify_docs:
        candidates = [("train", "%s/%d" % (e[1], e[2]), e[3], ids)
                      for e, ids in zip(entries, train_ids)]
        candidates += [("adapt", "%s/%d" % (a[0], a[1]), a[2], ids)
                       for a, ids in zip(adapt, adapt_ids)]
        candidates += [("heldout", "%s/%s" % (h[0], h[1]), h[2], ids)
                       for h, ids in zip(held, held_ids)]
        small = [c for c in candidates if len(c[2]) <= 16384]
        small.sort(key=lambda c: hashlib.sha256(c[1].encode()).digest())
        sample = small[:args.verify_docs]
        # ...plus the first 16 KiB (at a line boundary) of a few long held-out documents.
        for h, ids in list(zip(held, held_ids))[::max(1, len(held) // 8)]:
            head = h[2][:16384]
            head = head[:head.rfind("\n") + 1]
            sample.append(("heldout", "%s/%s (head)" % (h[0], h[1]), head,
                           encode_chunk_local(args.model, newline, head)))
        bad = 0
        for split, name, text, ids in sample:
            whole = model.encode(text)
            if list(ids) != whole:
                bad += 1
                log("MISMATCH %s %s" % (split, name))
        if bad:
            sys.exit("make_shards: %d of %d sampled documents differ from whole-string encoding"
                     % (bad, len(sample)))
        log("verified %d documents: line-based shards == whole-string encoding" % len(sample))

    # Shard files are checked by reading them back.
    for s in index["shards"]:
        v, toks, offs = shards.read_shard(os.path.join(args.out, s["path"]))
        assert v == vocab and len(toks) == s["tokens"] and len(offs) == s["documents"]
    index["totals"] = {
        "train_tokens": sum(s["tokens"] for s in index["shards"] if s["path"].startswith("train")),
        "heldout_tokens": {s["path"][8:-4]: s["tokens"] for s in index["shards"]
                           if s["path"].startswith("heldout")},
        "adapt_tokens": {s["path"][6:-4]: s["tokens"] for s in index["shards"]
                         if s["path"].startswith("adapt-")},
    }
    with open(os.path.join(args.out, "INDEX.json.tmp"), "w") as f:
        json.dump(index, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(os.path.join(args.out, "INDEX.json.tmp"), os.path.join(args.out, "INDEX.json"))
    log("done in %.0fs: %d training tokens" % (time.time() - t0, index["totals"]["train_tokens"]))


def encode_chunk_local(model_path, newline, text):
    _init(model_path, newline)
    return encode_chunk([text])[0]


if __name__ == "__main__":
    main()

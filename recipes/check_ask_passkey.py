#!/usr/bin/python3
"""Pass-key retrieval through `sharedllm ask`, the command a user runs: writes --docs documents of
the GNU GPL-3 text with one pass-key sentence each (scripts/make_demo_document.py: a haystack the
training never showed, unlike the repeated filler of `sharedllm eval passkey`), of about --bytes
bytes (default: ~32x the 256-token window of the mini models), at depths spread evenly over 0..1 and
seeded keys, asks each "What is the pass key? The pass key is" (or --question), and counts
answers whose first integer is the key ("correct") and answers with the key's digits anywhere in
them ("contains_key": for a question that is not about the key, how often the key leaks into the
answer anyway). Prints one line per document and writes a JSON summary with --out.

  recipes/check_ask_passkey.py --model models/mini --out docs/results/ask-seed1.json
"""
import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEMO_DOCUMENT = os.path.join(HERE, "..", "scripts", "make_demo_document.py")
QUESTION = "What is the pass key? The pass key is"


def score_answer(text, key):
    """(first integer of text or "", it equals key, key appears in text's digits run together)."""
    m = re.search(r"\d+", text)
    answer = m.group(0) if m else ""
    return answer, answer == key, key in re.sub(r"\D", "", text)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="SharedLLM model directory")
    p.add_argument("--docs", type=int, default=20, help="documents (default 20)")
    p.add_argument("--bytes", type=int, default=34000, help="document size (default 34000: over 8,192 tokens = 32x256)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--question", default=QUESTION, help=f"what to ask (default {QUESTION!r})")
    p.add_argument("--max-tokens", type=int, default=8, help="answer tokens (default 8)")
    p.add_argument("--bin", default=os.path.join(HERE, "..", "build", "bin", "sharedllm"))
    p.add_argument("--out", help="also write the JSON summary here")
    a = p.parse_args()
    if a.docs < 1:
        sys.exit("--docs must be >= 1")
    if not os.path.isfile(os.path.join(a.model, "sharedllm.json")):
        sys.exit(f"{a.model}: not a SharedLLM model directory (no sharedllm.json)")
    rng = random.Random(a.seed)
    rows, correct, contains = [], 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.docs):
            depth = i / (a.docs - 1) if a.docs > 1 else 0.5
            key = str(rng.randrange(10000, 100000))
            doc = os.path.join(tmp, f"doc{i}.txt")
            subprocess.run([sys.executable, DEMO_DOCUMENT, "--out", doc,
                            "--bytes", str(a.bytes), "--depth", f"{depth:.4f}", "--key", key,
                            "--seed", str(a.seed * 1000 + i)], check=True)
            r = subprocess.run([a.bin, "ask", "--model", a.model, "--document", doc, "--question", a.question,
                                "--max-tokens", str(a.max_tokens), "--threads", str(a.threads)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"sharedllm ask failed on document {i}:\n{r.stderr}")
            answer, is_key, has_key = score_answer(r.stdout, key)
            tokens = re.search(r"document (\d+) tokens in (\d+) chunks", r.stderr)
            row = {"depth": round(depth, 4), "key": key, "answer": answer, "correct": is_key,
                   "contains_key": has_key, "text": r.stdout.strip(),
                   "tokens": int(tokens.group(1)) if tokens else None,
                   "chunks": int(tokens.group(2)) if tokens else None}
            correct += row["correct"]
            contains += row["contains_key"]
            rows.append(row)
            print(f"doc {i:2d} depth {depth:.2f} tokens {row['tokens']} key {key} -> {answer!r}"
                  f" {'ok' if row['correct'] else 'WRONG'}", flush=True)
    summary = {"model": a.model, "question": a.question, "bytes": a.bytes, "seed": a.seed,
               "max_tokens": a.max_tokens, "correct": correct, "contains_key": contains,
               "documents": a.docs, "rows": rows}
    print(f"{correct} / {a.docs} pass keys answered; the key in {contains} / {a.docs} answers")
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()

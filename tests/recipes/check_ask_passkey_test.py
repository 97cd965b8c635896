#!/usr/bin/python3
"""recipes/check_ask_passkey.py end to end on a tiny untrained SharedLLM (models/tiny): it runs
`sharedllm ask` once per document, reports every document and a summary whose count matches its
rows, and refuses a directory that is not a SharedLLM model. Usage: check_ask_passkey_test.py
SOURCE_DIR SHAREDLLM_BIN"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
from pycheck import check, finish  # noqa: E402
sys.path.insert(0, os.path.join(sys.argv[1], "recipes"))
import check_ask_passkey  # noqa: E402

src, binary = sys.argv[1], sys.argv[2]
script = os.path.join(src, "recipes", "check_ask_passkey.py")


# Scoring: the first integer decides "correct"; the key anywhere in the digits is a leak.
score = check_ask_passkey.score_answer
check(score(" 71432..", "71432") == ("71432", True, True), "the key as answer")
check(score(" be a7143..\n\nSynopsis\n 71432..", "71432") == ("7143", False, True),
      "a wrong first number, the key later: not correct, contains the key")
check(score(" 714 32", "71432") == ("714", False, True), "digits run together")
check(score(" the licence", "71432") == ("", False, False), "no number")

with tempfile.TemporaryDirectory() as tmp:
    model = os.path.join(tmp, "model")
    subprocess.run([binary, "init", "--base", os.path.join(src, "models", "tiny"), "--out", model,
                    "--layers", "1", "--chunk-size", "16", "--depth", "2", "--alphas", "2,1"],
                   check=True, capture_output=True)
    out = os.path.join(tmp, "summary.json")
    r = subprocess.run([sys.executable, script, "--model", model, "--docs", "3", "--bytes", "2000",
                        "--threads", "1", "--bin", binary, "--out", out], capture_output=True, text=True)
    check(r.returncode == 0, "runs on a tiny model: " + r.stderr.strip()[-300:])
    lines = [l for l in r.stdout.splitlines() if l.startswith("doc ")]
    check(len(lines) == 3, "one line per document")
    if os.path.exists(out):
        s = json.load(open(out))
        check(len(s["rows"]) == 3, "three rows")
        check([row["depth"] for row in s["rows"]] == [0.0, 0.5, 1.0], "depths spread over 0..1")
        check(all(len(row["key"]) == 5 and row["key"].isdigit() for row in s["rows"]), "5-digit keys")
        check(all(row["tokens"] and row["tokens"] > 300 for row in s["rows"]), "document sizes read from ask")
        check(s["correct"] == sum(row["correct"] for row in s["rows"]), "the count is the rows' count")
        check(all(row["correct"] == (row["answer"] == row["key"]) for row in s["rows"]), "correct iff equal")
    else:
        check(False, "summary written")
    # Another question and answer length are passed through and recorded.
    out2 = os.path.join(tmp, "other.json")
    r = subprocess.run([sys.executable, script, "--model", model, "--docs", "2", "--bytes", "2000",
                        "--threads", "1", "--bin", binary, "--question", "The licence is",
                        "--max-tokens", "3", "--out", out2], capture_output=True, text=True)
    check(r.returncode == 0, "runs with --question: " + r.stderr.strip()[-300:])
    if os.path.exists(out2):
        s = json.load(open(out2))
        check(s["question"] == "The licence is" and s["max_tokens"] == 3, "question and length recorded")
        check(s["contains_key"] == sum(row["contains_key"] for row in s["rows"]), "leak count = rows'")
    else:
        check(False, "summary written with --question")
    bad = subprocess.run([sys.executable, script, "--model", tmp, "--bin", binary],
                         capture_output=True, text=True)
    check(bad.returncode != 0 and "not a SharedLLM model directory" in bad.stderr, "refuses a non-model")

finish("check_ask_passkey")

#!/usr/bin/python3
"""recipes/make_results.py's pass-key summary and `sharedllm ask` table on hand-made results whose
answers are known: keys counted over every cell, the weakest length and depth found, each run's
seed and trials shown, the ask table's counts and document sizes; and RESULTS.md written with both
sections; pooled perplexity runs. Usage: make_results_test.py SOURCE_DIR"""
import json
import math
import os
import subprocess
import sys
import tempfile

src = sys.argv[1]
sys.path.insert(0, os.path.join(src, "tests"))
sys.path.insert(0, os.path.join(src, "recipes"))
from pycheck import check, finish  # noqa: E402
import make_results  # noqa: E402


def passkey_run(seed, trials, misses):
    """Lengths 1, 2, 4 x depths 0, 0.5, 1; `misses` maps (length, depth) to keys missed."""
    points = []
    for x in (1, 2, 4):
        for d in (0, 0.5, 1):
            ok = trials - misses.get((x, d), 0)
            points.append({"length_multiple": x, "depth": d, "trials": trials,
                           "sharedllm_correct": ok, "truncated_correct": trials if d == 1 else 0})
    return {"task": "passkey", "model": "m", "window": 256, "seed": seed, "points": points}


a = passkey_run(1, 4, {(2, 0): 1})
b = passkey_run(2, 10, {(4, 0.5): 3, (4, 1): 1, (1, 0.5): 1})
rows = make_results.passkey_summary([("a.json", a), ("b.json", b)]).splitlines()
check(len(rows) == 4, "a header, a rule and one row per run")
check("| `a.json` | 1 | 4 | 35/36 (97.2 %) | 2×: 11/12 | 0: 11/12 | 12/36 |" == rows[2], rows[2])
check("| `b.json` | 2 | 10 | 85/90 (94.4 %) | 4×: 26/30 | 0.5: 26/30 | 30/90 |" == rows[3], rows[3])
no_seed = dict(a)
del no_seed["seed"]
check("| — |" in make_results.passkey_summary([("old.json", no_seed)]), "a run without a seed: —")

ask = {"seed": 2, "correct": 19, "contains_key": 20, "documents": 20, "question": "Q?",
       "rows": [{"tokens": 8400, "chunks": 132}, {"tokens": 9300, "chunks": 146},
                {"tokens": 8800, "chunks": 140}]}
table = make_results.ask_table([("ask.json", ask)]).splitlines()
check(table[2] == "| `ask.json` | Q? | 2 | 19/20 | 20/20 | 8400–9300 | 132–146 |", table[2])
old_ask = {k: v for k, v in ask.items() if k != "contains_key"}
check("| 19/20 | — |" in make_results.ask_table([("old.json", old_ask)]), "a run without the leak count: —")

# The perplexity table: the ratio, with its paired 95 % interval where the run measured its spread.
ppl = {"task": "ppl", "points": [
    {"length_multiple": 2.0, "windows": 30, "sharedllm_ppl": 20.0, "truncated_ppl": 20.0 / 0.98,
     "log_ratio_se": 0.01},
    {"length_multiple": 4.0, "windows": 30, "sharedllm_ppl": 21.0, "truncated_ppl": 20.0,
     "streaming_ppl": 22.0}]}
rows_ppl = make_results.ppl_table([("proofs", ppl)]).splitlines()
check("| 0.980 (0.961–0.999) |" in rows_ppl[2], rows_ppl[2])
check("| 1.050 |" in rows_ppl[3], "an older run without the spread: the ratio alone")
check("| 22.000 |" in rows_ppl[3], "StreamingLLM without its spread: the perplexity alone")
streaming = {"task": "ppl", "points": [
    {"length_multiple": 2.0, "windows": 30, "sharedllm_ppl": 20.0, "truncated_ppl": 20.0,
     "log_ratio_se": 0.0, "streaming_ppl": 21.0, "streaming_log_ratio_se": 0.01}]}
row_s = make_results.ppl_table([("code", streaming)]).splitlines()[2]
check("| 21.000 (1.050: 1.030–1.071) |" in row_s, row_s)

# Pooled runs: per length the windows-weighted log ratio and sqrt(sum (n SE)^2) / sum n; a length
# not in every run, or without a spread, is left out.
def pool_run(ratio2, se2, windows):
    return {"task": "ppl", "model": "m", "shard": "code.bin", "points": [
        {"length_multiple": 1.0, "windows": windows, "sharedllm_ppl": 9.0, "truncated_ppl": 9.0, "log_ratio_se": 0.0},
        {"length_multiple": 2.0, "windows": windows, "sharedllm_ppl": 9.0 * ratio2, "truncated_ppl": 9.0,
         "log_ratio_se": se2}]}
r1, r2 = pool_run(0.99, 0.01, 100), pool_run(0.97, 0.02, 300)
pooled = make_results.pooled_points([r1, r2])
want = math.exp((100 * math.log(0.99) + 300 * math.log(0.97)) / 400)
want_se = math.sqrt((100 * 0.01) ** 2 + (300 * 0.02) ** 2) / 400
check(len(pooled) == 1 and pooled[0][:2] == (2.0, 400) and abs(pooled[0][2] - want) < 1e-12
      and abs(pooled[0][3] - want_se) < 1e-12, f"pooled 2x: {pooled}, want {want}, {want_se}")
row = make_results.pooled_table([("code-all", ["c1", "c2"])], [("c1", r1), ("c2", r2)]).splitlines()[2]
check(row.startswith(f"| code-all | c1, c2 | 2 | 400 | {want:.4f} (") and row.endswith(f"| {-math.log(want) / want_se:.1f} |"), row)

with tempfile.TemporaryDirectory() as tmp:
    pool_files = []
    for name, run in (("c1", r1), ("c2", dict(r2, model="other"))):
        pool_files.append(os.path.join(tmp, name + ".json"))
        json.dump(dict(run, window=256), open(pool_files[-1], "w"))
    base_cmd = [sys.executable, os.path.join(src, "recipes", "make_results.py"), "--ppl", "c1=" + pool_files[0],
                "--ppl", "c2=" + pool_files[1], "--out", os.path.join(tmp, "p")]
    r = subprocess.run(base_cmd + ["--pool", "all=c1,c2"], capture_output=True, text=True)
    check(r.returncode != 0 and "share the model" in r.stderr, "refuses to pool two models: " + r.stderr[-200:])
    r = subprocess.run(base_cmd + ["--pool", "all=c1,c3"], capture_output=True, text=True)
    check(r.returncode != 0 and "c3" in r.stderr, "refuses a run it was not given: " + r.stderr[-200:])
    json.dump(dict(r2, window=256), open(pool_files[1], "w"))
    r = subprocess.run(base_cmd + ["--pool", "all=c1,c2"], capture_output=True, text=True)
    text = open(os.path.join(tmp, "p", "RESULTS.md")).read() if r.returncode == 0 else r.stderr
    check("Pooled:" in text and "| all | c1, c2 | 2 | 400 |" in text, "RESULTS.md: the pooled table")

with tempfile.TemporaryDirectory() as tmp:
    files = []
    for name, run in (("a.json", a), ("b.json", b), ("ask.json", ask)):
        files.append(os.path.join(tmp, name))
        json.dump(run, open(files[-1], "w"))
    out = os.path.join(tmp, "docs")
    subprocess.run([sys.executable, os.path.join(src, "recipes", "make_results.py"),
                    "--passkey", files[0], "--passkey", files[1], "--ask", files[2], "--out", out],
                   check=True)
    text = open(os.path.join(out, "RESULTS.md")).read()
    check("## Pass-key retrieval" in text and "Every run" in text and rows[3] in text,
          "RESULTS.md: the first run's table and every run's summary row")
    check("## Pass keys through `sharedllm ask`" in text and table[2] in text,
          "RESULTS.md: the ask section")
    ppl_file = os.path.join(tmp, "ppl.json")
    json.dump(dict(ppl, shard="heldout-proofs.bin", model="m", window=256), open(ppl_file, "w"))
    with_ppl = os.path.join(tmp, "with-ppl")
    subprocess.run([sys.executable, os.path.join(src, "recipes", "make_results.py"),
                    "--ppl", "proofs=" + ppl_file, "--out", with_ppl], check=True)
    text = open(os.path.join(with_ppl, "RESULTS.md")).read()
    check(rows_ppl[2] in text and "ppl_ratio_vs_length.png" in text and
          os.path.getsize(os.path.join(with_ppl, "ppl_ratio_vs_length.png")) > 0,
          "RESULTS.md: the perplexity table and the plot of the ratios with their intervals")
    check("In the StreamingLLM column" not in text, "no StreamingLLM spread: its parenthesis not explained")
    json.dump(dict(streaming, shard="heldout-code.bin", model="m", window=256), open(ppl_file, "w"))
    subprocess.run([sys.executable, os.path.join(src, "recipes", "make_results.py"),
                    "--ppl", "code=" + ppl_file, "--out", with_ppl], check=True)
    text = open(os.path.join(with_ppl, "RESULTS.md")).read()
    check(row_s in text and "In the StreamingLLM column, the parenthesis is StreamingLLM / truncated"
          in text, "RESULTS.md: StreamingLLM's ratio and interval, and what its parenthesis means")
    one = os.path.join(tmp, "one")
    subprocess.run([sys.executable, os.path.join(src, "recipes", "make_results.py"),
                    "--passkey", files[0], "--out", one], check=True)
    check("Every run" not in open(os.path.join(one, "RESULTS.md")).read(),
          "one pass-key run: no summary table")

finish("make_results")

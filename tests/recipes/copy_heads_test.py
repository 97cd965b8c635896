#!/usr/bin/python3
"""recipes/copy_heads.py on a tiny SharedLLM (models/tiny, 2 injection layers, 4 heads) trained 3
steps, with layer 1's injection then zeroed (experiments/tools/scale_injection.py): every layer-1 head must
score exactly 0 (taking out a head that adds nothing changes nothing) and layer 0's heads not all
0; the kept heads follow the --keep rule; the written model zeroes exactly the dropped heads'
o_proj columns, removes layer 1 (left with no head: `sharedllm edit --drop-heads`, whose other
layouts tests/cli/sharedllm_cli_test.cpp covers) and scores exactly as with it; --keep 0 copies the model;
bad inputs are refused. Also
scale_injection.py --heads on its own.
Usage: copy_heads_test.py SOURCE_DIR SHAREDLLM_BIN"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
from pycheck import check, finish  # noqa: E402
src, binary = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(src, "tests", "reference"))
import safetensors_io  # noqa: E402
from tiny_run import train_tiny_sharedllm  # noqa: E402

recipes = os.path.join(src, "recipes")
tools = os.path.join(src, "experiments", "tools")
O = "model.layers.{}.cross_attn.o_proj.weight"
D = 16  # models/tiny head_dim


def shared(d):
    return safetensors_io.load_file(os.path.join(d, "sharedllm.safetensors"))[0]


def tool(name, *args):
    where = recipes if name == "copy_heads.py" else tools
    return subprocess.run([sys.executable, os.path.join(where, name), *args], capture_output=True, text=True)


def copy_heads(model, out, *extra):
    return tool("copy_heads.py", "--model", model, "--out", out, "--bin", binary, "--windows", "2",
                "--threads", "1", *extra)


with tempfile.TemporaryDirectory() as tmp:
    _, run, _, r = train_tiny_sharedllm(src, binary, tmp, layers=2, doc_tokens=600, seed=5)
    check(r.returncode == 0, "the tiny run trains: " + r.stderr.strip()[-300:])
    trained = shared(run)

    # scale_injection --heads: only that head's columns.
    r = tool("scale_injection.py", "--model", run, "--scale", "0", "--heads", "0:1", "--out",
             os.path.join(tmp, "h01"))
    h01 = shared(os.path.join(tmp, "h01"))
    want = trained[O.format(0)].copy()
    want[:, D:2 * D] = 0
    check(r.returncode == 0 and np.array_equal(h01[O.format(0)], want),
          "--heads 0:1: layer 0's o_proj columns 16..31 zero, the others kept " + r.stderr)
    check(all(np.array_equal(h01[n], trained[n]) for n in trained if n != O.format(0)), "... and nothing else")
    r = tool("scale_injection.py", "--model", run, "--scale", "0", "--heads", "0:4", "--out", os.path.join(tmp, "x"))
    check(r.returncode != 0 and "4 heads" in r.stderr, "refuses a head the model does not have")
    r = tool("scale_injection.py", "--model", run, "--scale", "0", "--heads", "0:1", "--layers", "0",
             "--out", os.path.join(tmp, "x"))
    check(r.returncode != 0 and "not both" in r.stderr, "refuses --heads with --layers")
    r = tool("scale_injection.py", "--model", run, "--scale", "0", "--heads", "0-1", "--out", os.path.join(tmp, "x"))
    check(r.returncode != 0 and "LAYER:HEAD" in r.stderr, "refuses a malformed --heads")

    # copy_heads: layer 1 made neutral first.
    neutral1 = os.path.join(tmp, "neutral1")
    r = tool("scale_injection.py", "--model", run, "--scale", "0", "--layers", "1", "--out", neutral1)
    check(r.returncode == 0, "layer 1 zeroed: " + r.stderr)
    report_path = os.path.join(tmp, "report.json")
    out = os.path.join(tmp, "kept")
    r = copy_heads(neutral1, out, "--layers", "0,1", "--keep", "0.5", "--report", report_path)
    check(r.returncode == 0, "copy_heads runs: " + r.stderr.strip()[-500:])
    with open(report_path) as f:
        report = json.load(f)
    scores = report["scores"]
    check(sorted(scores) == [f"{l}:{h}" for l in (0, 1) for h in range(4)], f"a score per head {sorted(scores)}")
    check(all(scores[f"1:{h}"] == 0 for h in range(4)), f"layer 1's neutral heads score 0: {scores}")
    check(any(scores[f"0:{h}"] != 0 for h in range(4)), f"layer 0's heads change the scores: {scores}")
    best = max(scores.values())
    want_kept = [h for h, s in scores.items() if s > 0 and s >= 0.5 * best]
    check(report["kept"] == want_kept, f"kept {report['kept']}, the rule gives {want_kept}")
    written, source = shared(out), shared(neutral1)
    w = source[O.format(0)].copy()
    for h in range(4):
        if f"0:{h}" not in report["kept"]:
            w[:, h * D:(h + 1) * D] = 0
    check(np.array_equal(written[O.format(0)], w), "layer 0: exactly the dropped heads zero")
    # Layer 1, the top injection, kept no head: removed from the written model.
    check(report["removed_layers"] == [1], f"the silent top layer removed: {report['removed_layers']}")
    with open(os.path.join(out, "sharedllm.json")) as f:
        check(json.load(f)["num_injection_layers"] == 1, "sharedllm.json: one injection layer left")
    check(sorted(written) == sorted(n for n in source if ".layers.1." not in n),
          f"layer 1's tensors gone, the rest kept: {sorted(set(source) ^ set(written))}")
    check(all(np.array_equal(written[n], source[n]) for n in written if n != O.format(0)),
          "nothing else changes")
    check("removed the silent top injection layers [1]" in r.stdout and "took out" in r.stdout,
          "says what it kept and removed: " + r.stdout[-300:])
    # ... and it scores exactly as the same heads zeroed with layer 1 still in place.
    zeroed = os.path.join(tmp, "zeroed")
    dropped = ",".join(f"{l}:{h}" for l in (0, 1) for h in range(4) if f"{l}:{h}" not in report["kept"])
    r = tool("scale_injection.py", "--model", neutral1, "--scale", "0", "--heads", dropped, "--out", zeroed)
    check(r.returncode == 0, "the same heads zeroed in place: " + r.stderr)
    sys.path.insert(0, recipes)
    import copy_heads as ch  # noqa: E402
    shard = os.path.join(tmp, "repeat.bin")
    ch.repeat_shard(shard, 1000, 256, 2, 3)  # models/tiny: V 1000, W 256
    scores = [ch.log_ppl(binary, m, shard, 2, 1, os.path.join(tmp, "p.json")) for m in (out, zeroed)]
    check(scores[0] == scores[1], f"the removed layer changes nothing: {scores}")

    r = copy_heads(run, os.path.join(tmp, "all"), "--layers", "0", "--keep", "0")
    check(r.returncode == 0 and all(np.array_equal(shared(os.path.join(tmp, "all"))[n], trained[n]) for n in trained),
          "--keep 0 copies the model " + r.stderr[-300:])

    r = copy_heads(run, os.path.join(tmp, "x"), "--layers", "0", "--keep", "2")
    check(r.returncode != 0 and "--keep" in r.stderr, "refuses --keep outside [0, 1]")
    r = copy_heads(run, run, "--layers", "0")
    check(r.returncode != 0 and "must differ" in r.stderr, "refuses to overwrite its input")
    r = copy_heads(run, os.path.join(tmp, "x"), "--layers", "7")
    check(r.returncode != 0 and "copy_heads:" in r.stderr and "7" in r.stderr,
          "refuses layers without an injection: " + r.stderr[-200:])
    r = copy_heads(tmp, os.path.join(tmp, "x"), "--layers", "0")
    check(r.returncode != 0 and "config.json" in r.stderr, "refuses a directory without a model")

finish("copy_heads")

#!/usr/bin/python3
"""Finds the injection heads that copy from the context, and writes a model that keeps only them.

  recipes/copy_heads.py --model DIR --layers 2,3 --out DIR [--keep 0.25] [--report F.json]

A head's copy score is measured on data no corpus holds: --windows documents of random tokens,
each one window (W = config.json's max_position_embeddings) of ids drawn from [V/8, V) repeated
four times (seeded by --seed). At 2x the window SharedLLM reads the first W tokens as context and
scores the next W, every one of which the context alone predicts. `sharedllm eval ppl --lengths 2`
scores the model, then the model with one head of --layers taken out (`sharedllm edit
--drop-heads LAYER:HEAD`: its o_proj columns zero); the score is log(perplexity without the head)
- log(perplexity with it). Heads scoring at least --keep x the highest score are kept; every
other head of --layers is taken out of the written model by `sharedllm edit --drop-heads`, which
also removes top injection layers left with no head (they add nothing, yet encoding, the stored
tree and decoding would pay for them).

Why: the base model's own heads, inherited as readers (`sharedllm edit --inherit-o-scale
--own-lower`), copy through a few of them; the rest read the context as if it were the previous
tokens and cost the tokens the context does not predict (docs/design/decisions.md).
"""
import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "corpus"))
from shards import write_shard  # noqa: E402


def repeat_shard(path, vocab, window, docs, seed, bos=1):
    """Writes the copy-score shard: `docs` documents [BOS] + R R R R, R `window` ids from [V/8, V)."""
    rng = random.Random(seed)
    lo = max(vocab // 8, 3)
    documents = []
    for _ in range(docs):
        r = [rng.randrange(lo, vocab) for _ in range(window)]
        documents.append([bos] + r * 4)
    write_shard(path, vocab, documents)


def head_name(head):
    """(2, 4) -> "2:4", as --heads and the report write it."""
    return f"{head[0]}:{head[1]}"


def log_ppl(binary, model, shard, windows, threads, out):
    cmd = [binary, "eval", "ppl", "--model", model, "--shard", shard, "--lengths", "2",
           "--windows", str(windows), "--seed", "1", "--threads", str(threads), "--out", out]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()[-500:]}")
    with open(out) as f:
        point = json.load(f)["points"][-1]
    return math.log(point["sharedllm_ppl"])


def drop_heads(binary, model, heads, out):
    """`sharedllm edit --drop-heads`: writes `out`, `model` without `heads` ((layer, head) pairs),
    top injection layers left with none removed. Returns the written num_injection_layers."""
    cmd = [binary, "edit", "--model", model, "--out", out,
           "--drop-heads", ",".join(head_name(h) for h in sorted(heads))]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()[-500:]}")
    with open(os.path.join(out, "sharedllm.json")) as f:
        return json.load(f)["num_injection_layers"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="SharedLLM model directory")
    p.add_argument("--layers", required=True, help="decoder layers whose injection heads are scored")
    p.add_argument("--out", required=True, help="directory to write (created)")
    p.add_argument("--keep", type=float, default=0.25,
                   help="keep heads scoring >= KEEP x the best score (default 0.25; 0 keeps all)")
    p.add_argument("--windows", type=int, default=50, help="random documents scored (default 50)")
    p.add_argument("--seed", type=int, default=1, help="seed of the random documents")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--report", help="also write the scores and the kept heads here (JSON)")
    p.add_argument("--bin", default=os.path.join(ROOT, "build", "bin", "sharedllm"))
    a = p.parse_args()
    if not 0 <= a.keep <= 1:
        sys.exit(f"--keep must lie in [0, 1], got {a.keep}")
    if a.windows < 1:
        sys.exit(f"--windows must be positive, got {a.windows}")
    if os.path.abspath(a.out) == os.path.abspath(a.model):
        sys.exit("--out must differ from --model")
    try:
        layers = sorted({int(x) for x in a.layers.split(",")})
    except ValueError:
        sys.exit(f"--layers must be comma-separated integers, got {a.layers!r}")
    try:
        with open(os.path.join(a.model, "config.json")) as f:
            config = json.load(f)
        vocab, heads = config["vocab_size"], config["num_attention_heads"]
        window = config["max_position_embeddings"]
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"copy_heads: {a.model}: no readable config.json ({e})")

    with tempfile.TemporaryDirectory() as tmp:
        shard = os.path.join(tmp, "repeat.bin")
        repeat_shard(shard, vocab, window, a.windows, a.seed, config.get("bos_token_id", 1))
        try:
            base = log_ppl(a.bin, a.model, shard, a.windows, a.threads, os.path.join(tmp, "base.json"))
            scores = {}
            for layer in layers:
                for head in range(heads):
                    without = os.path.join(tmp, f"without-{layer}-{head}")
                    drop_heads(a.bin, a.model, {(layer, head)}, without)
                    s = log_ppl(a.bin, without, shard, a.windows, a.threads, os.path.join(tmp, "h.json"))
                    shutil.rmtree(without)
                    scores[(layer, head)] = s - base
                    print(f"head {layer}:{head}: copy score {s - base:+.4f}", flush=True)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            sys.exit(f"copy_heads: {e}")
    best = max(scores.values())
    # --keep 0 keeps every head; otherwise a head must copy (score > 0) and come near the best.
    kept = [h for h, s in scores.items() if a.keep == 0 or (s > 0 and s >= a.keep * best)]
    dropped = {h for h in scores if h not in kept}
    try:
        with open(os.path.join(a.model, "sharedllm.json")) as f:
            m = json.load(f)["num_injection_layers"]
        if dropped:
            new_m = drop_heads(a.bin, a.model, dropped, a.out)
        else:  # nothing to take out: the model as it is
            os.makedirs(a.out, exist_ok=True)
            for name in os.listdir(a.model):
                if name.endswith((".json", ".safetensors", ".model")):
                    with open(os.path.join(a.model, name), "rb") as src, \
                         open(os.path.join(a.out, name), "wb") as dst:
                        dst.write(src.read())
            new_m = m
        removed = list(range(new_m, m))
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        sys.exit(f"copy_heads: {e}")
    report = {"model": a.model, "out": a.out, "layers": layers, "windows": a.windows, "seed": a.seed,
              "keep": a.keep, "log_ppl": base,
              "scores": {head_name(h): v for h, v in scores.items()}, "kept": [head_name(h) for h in kept],
              "removed_layers": removed}
    if a.report:
        with open(a.report, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
    print(f"{a.out}: kept {', '.join(map(head_name, kept)) or 'no head'} of layers {a.layers}"
          f" (best score {best:+.4f}); took out {len(dropped)}"
          + (f"; removed the silent top injection layers {removed}" if removed else ""))


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Finds the injection heads that copy from the context, and writes a model that keeps only them.

  tools/copy_heads.py --model DIR --layers 2,3 --out DIR [--keep 0.25] [--report F.json]

A head's copy score is measured on data no corpus holds: --windows documents of random tokens,
each one window (W = config.json's max_position_embeddings) of ids drawn from [V/8, V) repeated
four times (seeded by --seed). At 2x the window SharedLLM reads the first W tokens as context and
scores the next W, every one of which the context alone predicts. `sharedllm eval ppl --lengths 2`
scores the model, then the model with one head of --layers taken out (its o_proj columns zero,
tools/scale_injection.py --heads); the score is log(perplexity without the head) - log(perplexity
with it). Heads scoring at least --keep x the highest score are kept; every other head of --layers
is taken out of the written model (the other layers, and everything else, unchanged). With a
bottom injection, top injection layers left with no head add nothing: they are removed from the
written model (num_injection_layers lowered, their tensors and per-layer settings dropped), which
then scores exactly as with them, while encoding, the stored tree and decoding no longer pay for
them.

Why: the base model's own heads, inherited as readers (`inherit_o_scale`, `separate_layers`),
copy through a few of them; the rest read the context as if it were the previous tokens and cost
the tokens the context does not predict (models/mini-passkey/README.md, "Twenty-fourth round").
"""
import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "corpus"))
from checkpoint_to_model import read_safetensors, write_safetensors  # noqa: E402
from scale_injection import decoder_layer, scale_injection  # noqa: E402
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


def remove_silent_top_layers(out, scored, kept):
    """In the model directory `out` (bottom injection), removes the top injection layers that were
    scored (`scored`: layer indices) and kept no head (`kept`: (layer, head) pairs): everything they
    add is zero. Returns the removed layers."""
    path = os.path.join(out, "sharedllm.json")
    with open(path) as f:
        config = json.load(f)
    if config.get("injection", "bottom") != "bottom":
        return []
    m = config["num_injection_layers"]
    live = {layer for layer, _ in kept}
    new_m = m
    while new_m > 1 and new_m - 1 in scored and new_m - 1 not in live:
        new_m -= 1
    if new_m == m:
        return []

    def wanted(name):
        if name.startswith("compressor."):  # the separate compressor's copy of lower layer j
            return int(name.split(".")[1]) < new_m
        if ".layers." in name and ".cross_attn." in name:
            return decoder_layer(name) < new_m
        return True

    st = os.path.join(out, "sharedllm.safetensors")
    header, data = read_safetensors(st)
    write_safetensors(st, header, data, [n for n in header if wanted(n)])
    config["num_injection_layers"] = new_m
    if config.get("separate_layers", 0) >= new_m:
        del config["separate_layers"]  # every remaining layer reads the copy: a plain separate one
    for key in ("sink_keys_ref", "sink_keys_slope"):
        if isinstance(config.get(key), list) and len(config[key]) == m:
            config[key] = config[key][:new_m]
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    return list(range(new_m, m))


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
    p.add_argument("--bin", default=os.path.join(HERE, "..", "build", "bin", "sharedllm"))
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
                    without = os.path.join(tmp, "without")
                    scale_injection(a.model, 0.0, without, heads={(layer, head)})
                    s = log_ppl(a.bin, without, shard, a.windows, a.threads, os.path.join(tmp, "h.json"))
                    scores[(layer, head)] = s - base
                    print(f"head {layer}:{head}: copy score {s - base:+.4f}", flush=True)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            sys.exit(f"copy_heads: {e}")
    best = max(scores.values())
    # --keep 0 keeps every head; otherwise a head must copy (score > 0) and come near the best.
    kept = [h for h, s in scores.items() if a.keep == 0 or (s > 0 and s >= a.keep * best)]
    dropped = {h for h in scores if h not in kept}
    try:
        scale_injection(a.model, 0.0 if dropped else 1.0, a.out, heads=dropped or None)
        removed = remove_silent_top_layers(a.out, set(layers), kept)
    except (OSError, ValueError, KeyError) as e:
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

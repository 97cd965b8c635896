"""A tiny SharedLLM trained a few steps, for the tests of the tools that read trained models:
models/tiny under `sharedllm init` (chunk 16, depth 2, alphas 2/1), then `sharedllm train lm` on
a shard of random ids, so the cross-attention is no longer its zero initialisation."""
import json
import os
import random
import subprocess
import sys


def train_tiny_sharedllm(src, binary, tmp, layers, doc_tokens, seed, **overrides):
    """Returns (init dir, run dir, shard path, the training CompletedProcess); `overrides` are
    trainer config fields that replace the defaults below."""
    sys.path.insert(0, os.path.join(src, "corpus"))
    from shards import write_shard
    init = os.path.join(tmp, "init")
    subprocess.run([binary, "init", "--base", os.path.join(src, "models", "tiny"), "--out", init,
                    "--layers", str(layers), "--chunk-size", "16", "--depth", "2", "--alphas", "2,1"],
                   check=True, capture_output=True)
    rng = random.Random(seed)
    shard = os.path.join(tmp, "train.bin")
    write_shard(shard, 1000, [[rng.randrange(3, 1000) for _ in range(doc_tokens)] for _ in range(5)])
    run = os.path.join(tmp, "run")
    config = {"mode": "lm", "init": init, "out": run, "train_shards": [shard], "eval_shards": [],
              "seq_len": 16, "context_chunks": 2, "batch_size": 2, "steps": 3, "warmup_steps": 1,
              "lr": 1e-2, "new_params_lr_scale": 2.0, "checkpoint_every": 0, "eval_every": 0,
              "threads": 1, "seed": 1}
    config.update(overrides)
    with open(os.path.join(tmp, "train.json"), "w") as f:
        json.dump(config, f)
    r = subprocess.run([binary, "train", "lm", "--config", os.path.join(tmp, "train.json")],
                       capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return init, run, shard, r

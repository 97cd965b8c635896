"""Usage: surgery_equivalence.py OLD_SHAREDLLM NEW_SHAREDLLM [WORKDIR]
Surgery in the old trainer (in memory, before training) against `sharedllm edit` then training:
the same losses and the same trained weights. Run once, before/after the house restructuring."""
import json, os, random, subprocess, sys
old, new, src = sys.argv[1], sys.argv[2], os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(src, "corpus"))
from shards import write_shard
tmp = sys.argv[3] if len(sys.argv) > 3 else "/tmp/surgery-equivalence"; os.makedirs(tmp, exist_ok=True)
init = os.path.join(tmp, "init")
if not os.path.exists(init):
    subprocess.run([new, "init", "--base", os.path.join(src, "models", "tiny"), "--out", init,
                    "--layers", "1", "--chunk-size", "16", "--depth", "2", "--alphas", "2,1"], check=True)
rng = random.Random(5)
shard = os.path.join(tmp, "train.bin")
write_shard(shard, 1000, [[rng.randrange(3, 1000) for _ in range(600)] for _ in range(5)])
base = {"mode": "lm", "train_shards": [shard], "eval_shards": [], "seq_len": 16, "context_chunks": 2,
        "batch_size": 2, "steps": 6, "warmup_steps": 1, "lr": 1e-2, "new_params_lr_scale": 2.0,
        "checkpoint_every": 0, "eval_every": 0, "threads": 1, "seed": 1, "log_every": 1,
        "lower_trainable": True}
surgery = {"separate_compressor": True, "gate": True, "sink": True, "sink_logit": 2.0,
           "num_injection_layers": 2, "inherit_o_scale": 0.5, "own_lower": True}
def train(binary, cfg, name):
    p = os.path.join(tmp, name + ".json"); json.dump(cfg, open(p, "w"))
    r = subprocess.run([binary, "train", "lm", "--config", p], capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr
    return [json.loads(l) for l in open(os.path.join(cfg["out"], "train_log.jsonl"))]
a = train(old, dict(base, init=init, out=os.path.join(tmp, "old-run"), **surgery), "old")
edited = os.path.join(tmp, "edited")
subprocess.run([new, "edit", "--model", init, "--out", edited, "--separate-compressor", "--gate", "--sink",
                "--sink-logit", "2", "--injection-layers", "2", "--inherit-o-scale", "0.5", "--own-lower"], check=True)
b = train(new, dict(base, init=edited, out=os.path.join(tmp, "new-run")), "new")
keys = ("loss", "grad_norm", "lr")
la = [[r.get(k) for k in keys] for r in a if "loss" in r]; lb = [[r.get(k) for k in keys] for r in b if "loss" in r]
print("old:", la); print("new:", lb); print("logs equal:", la == lb)
sys.path.insert(0, os.path.join(src, "tests", "reference"))
import safetensors_io, numpy as np
ta = safetensors_io.load_file(os.path.join(tmp, "old-run", "sharedllm.safetensors"))[0]
tb = safetensors_io.load_file(os.path.join(tmp, "new-run", "sharedllm.safetensors"))[0]
print("tensors:", sorted(ta) == sorted(tb), all(np.array_equal(ta[k], tb[k]) for k in ta))
print("configs equal:", open(os.path.join(tmp, "old-run", "sharedllm.json")).read() == open(os.path.join(tmp, "new-run", "sharedllm.json")).read())

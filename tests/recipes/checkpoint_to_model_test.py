#!/usr/bin/python3
"""recipes/checkpoint_to_model.py against the trainer: a tiny SharedLLM (models/tiny) trains 3 steps
of `sharedllm train lm`; its final checkpoint, converted, must equal the model directory the trainer
itself saved, tensor for tensor and file for file in how the names split (read with the
independent reader of tests/reference, not the tool's own); the converted directory loads in
`sharedllm score`; bad inputs are refused. Usage: checkpoint_to_model_test.py SOURCE_DIR
SHAREDLLM_BIN"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
from pycheck import check, finish  # noqa: E402
src, binary = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(src, "tests", "reference"))
import safetensors_io  # noqa: E402
from tiny_run import train_tiny_sharedllm  # noqa: E402

script = os.path.join(src, "recipes", "checkpoint_to_model.py")


def tensors(path):
    """name -> (safetensors dtype, shape, the values' bytes)."""
    arrays, _ = safetensors_io.load_file(path)
    dtypes = safetensors_io.tensor_dtypes(path)
    return {n: (dtypes[n], list(a.shape), a.tobytes()) for n, a in arrays.items()}


with tempfile.TemporaryDirectory() as tmp:
    init, run, shard, r = train_tiny_sharedllm(src, binary, tmp, layers=1, doc_tokens=400, seed=4)
    check(r.returncode == 0, "the tiny run trains: " + r.stderr.strip()[-300:])
    out = os.path.join(tmp, "converted")
    c = subprocess.run([sys.executable, script, run, init, out], capture_output=True, text=True)
    check(c.returncode == 0 and c.stdout.strip() == "3", "converts, printing the step: " + c.stdout + c.stderr)
    for name in ("model.safetensors", "sharedllm.safetensors"):
        if c.returncode != 0:
            break
        want, got = tensors(os.path.join(run, name)), tensors(os.path.join(out, name))
        check(sorted(want) == sorted(got), f"{name}: the trainer's tensor names")
        check(all(want[n] == got.get(n) for n in want), f"{name}: every tensor byte for byte")
    moved = c.returncode == 0 and \
        tensors(os.path.join(out, "sharedllm.safetensors")) != tensors(os.path.join(init, "sharedllm.safetensors"))
    check(moved, "the converted cross-attention is the trained one, not the init's")
    s = subprocess.run([binary, "score", "--model", out, "--token-ids", "5,6,7,8", "--threads", "1"],
                       capture_output=True, text=True)
    check(s.returncode == 0, "sharedllm score loads the converted directory: " + s.stderr.strip()[-300:])
    bad = subprocess.run([sys.executable, script, init, init, os.path.join(tmp, "x")],
                         capture_output=True, text=True)
    check(bad.returncode != 0 and "no complete checkpoint" in bad.stderr, "refuses a run without a checkpoint")
    bad = subprocess.run([sys.executable, script, run, tmp, os.path.join(tmp, "y")],
                         capture_output=True, text=True)
    check(bad.returncode != 0 and "INIT_DIR" in bad.stderr, "refuses an init that is not a model")
    with open(os.path.join(run, "checkpoint", "model.safetensors"), "r+b") as f:
        f.write(b"\xff" * 8)
    bad = subprocess.run([sys.executable, script, run, init, os.path.join(tmp, "z")],
                         capture_output=True, text=True)
    check(bad.returncode != 0 and "header length" in bad.stderr, "refuses a malformed checkpoint")

finish("checkpoint_to_model")

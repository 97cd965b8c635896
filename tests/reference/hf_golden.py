#!/usr/bin/env python3
"""Golden outputs from Hugging Face transformers itself, for tests/llm/hf_golden_test.cpp.

  hf_golden.py --out DIR [--only NAME ...]

Needs `transformers` and `torch` (the GPU machine's Python has both; this machine has neither
transformers nor a way to install it, so the outputs are committed in tests/fixtures/hf/).

For every case a tiny random checkpoint is built by transformers' own config and model classes
and written with `save_pretrained` (so config.json has exactly the fields, names and layout that
the installed transformers writes: `rope_parameters` in v5, `rope_theta`/`rope_scaling` in v4),
then loaded back with `from_pretrained` and run in float64 with eager attention:

  DIR/NAME/config.json, model.safetensors   the checkpoint as transformers wrote it
  DIR/NAME/golden.json                      {"transformers": version, "token_ids": [...],
                                             "nll": [...], "prompt": [...], "greedy": [...],
                                             "greedy_min_margin": x}

`nll[t]` is -log p(token_ids[t+1] | token_ids[..t]) (natural log); `greedy` the 16 tokens that
argmax decoding appends to `prompt` (EOS not treated specially; one full forward per step, no
cache), `greedy_min_margin` the smallest top-1 minus top-2 logit gap along the way.
"""

import argparse
import json
import os
import shutil
import sys
import traceback

import torch
import transformers
from transformers import AutoModelForCausalLM

SEQ = 96          # scored tokens (longer than the rope-scaled cases' original window of 64)
PROMPT = 8
NEW = 16
VOCAB = 256


def common(**extra):
    c = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
             rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    c.update(extra)
    return c


# name -> (config class, config kwargs, rope: theta and scaling (None = default))
CASES = {
    "llama": ("LlamaConfig", common(), (10000.0, None)),
    "llama-tied-theta": ("LlamaConfig", common(tie_word_embeddings=True), (500000.0, None)),
    "llama3-rope": ("LlamaConfig", common(), (500000.0, {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64})),
    "llama-yarn": ("LlamaConfig", common(), (10000.0, {
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64})),
    "llama-linear": ("LlamaConfig", common(), (10000.0, {"rope_type": "linear", "factor": 2.0})),
    "qwen2": ("Qwen2Config", common(tie_word_embeddings=True, use_sliding_window=False),
              (1000000.0, None)),
    "mistral-window": ("MistralConfig", common(sliding_window=24), (10000.0, None)),
}


def make_config(cls_name, kwargs, rope):
    theta, scaling = rope
    config = getattr(transformers, cls_name)(**kwargs)
    if hasattr(config, "rope_parameters"):  # transformers >= 5
        params = {"rope_type": "default", "rope_theta": theta}
        if scaling:
            params.update(scaling)
        config.rope_parameters = params
    else:
        config.rope_theta = theta
        config.rope_scaling = dict(scaling) if scaling else None
    return config


def perturb(model, seed):
    """Weights far from transformers' near-zero init, so logits and rotary matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            else:  # matrices and biases
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def load(d):
    try:
        return AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager",
                                                    dtype=torch.float32)
    except TypeError:
        return AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager",
                                                    torch_dtype=torch.float32)


def build(name, out, seed):
    cls_name, kwargs, rope = CASES[name]
    d = os.path.join(out, name)
    shutil.rmtree(d, ignore_errors=True)
    config = make_config(cls_name, kwargs, rope)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").float()
    perturb(model, seed)
    model.save_pretrained(d)
    if os.path.exists(os.path.join(d, "generation_config.json")):
        os.remove(os.path.join(d, "generation_config.json"))

    model = load(d).double().eval()
    g = torch.Generator().manual_seed(seed + 1)
    ids = [1] + torch.randint(3, VOCAB, (SEQ - 1,), generator=g).tolist()
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], dim=-1)
        nll = [-logp[t, ids[t + 1]].item() for t in range(SEQ - 1)]
        seq = ids[:PROMPT]
        margin = float("inf")
        for _ in range(NEW):
            last = model(torch.tensor([seq])).logits[0, -1]
            top = torch.topk(last, 2).values
            margin = min(margin, (top[0] - top[1]).item())
            seq.append(int(torch.argmax(last)))
    golden = {"transformers": transformers.__version__, "torch": torch.__version__,
              "case": name, "token_ids": ids, "nll": nll, "mean_nll": sum(nll) / len(nll),
              "prompt": ids[:PROMPT], "greedy": seq[PROMPT:], "greedy_min_margin": margin}
    with open(os.path.join(d, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
    print(f"{name}: mean_nll {golden['mean_nll']:.6f} greedy {golden['greedy']} "
          f"min margin {margin:.2e}")
    print(open(os.path.join(d, "config.json")).read())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--seed", type=int, default=20261127)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    failed = 0
    for i, name in enumerate(a.only or CASES):
        try:
            build(name, a.out, a.seed + 10 * i)
        except Exception:  # one broken case must not hide the others
            failed += 1
            print(f"FAILED {name}:\n{traceback.format_exc()}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

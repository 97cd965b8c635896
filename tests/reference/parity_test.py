#!/usr/bin/python3
"""Parity test: the C++ scorer against the float64 Python reference (llama_ref.py).

  parity_test.py --sharedllm PATH_TO_BINARY [--workdir DIR] [--tol 1e-4] [--only NAME ...]
  parity_test.py --self-test [--workdir DIR]

For every case (each llama_ref variant in float32, plus llama in 3 shards, llama in
bf16, qwen2 in f16, and llama-dynamic on a sequence shorter than
max_position_embeddings) a tiny random checkpoint is written, 30 token ids
are drawn with a fixed seed, and

    PATH_TO_BINARY score --model DIR --token-ids a,b,c,... --json

must print the same JSON object as `llama_ref.py score`
({"tokens": n, "nll": [...], "mean_nll": x, "ppl": y}) with every nll within
--tol (absolute) of the reference.  One line per case
(`PASS llama max_abs_diff=3.1e-07` / `FAIL ...`), then `N passed, M failed`;
exit status 1 if anything failed.

--self-test checks the reference itself (no binary needed).
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
sys.path.insert(0, HERE)

import llama_ref  # noqa: E402  (exits with a clear message if torch is missing)
import numpy as np  # noqa: E402
import safetensors_io  # noqa: E402
import torch  # noqa: E402

CHECKPOINT_SEED = 0
TOKEN_SEED = 12345
N_TOKENS = 30


def cases():
    """(name, variant, dtype, shards, n_tokens)"""
    out = [(v, v, "f32", 1, N_TOKENS) for v in llama_ref.VARIANTS]
    out += [
        ("llama-shards3", "llama", "f32", 3, N_TOKENS),
        ("llama-bf16", "llama", "bf16", 1, N_TOKENS),
        ("qwen2-f16", "qwen2", "f16", 1, N_TOKENS),
        # 12 <= max_position_embeddings (16): dynamic NTK must leave the base alone
        ("llama-dynamic-short", "llama-dynamic", "f32", 1, 12),
    ]
    return out


def token_ids(vocab, n, case_name):
    # Fixed seed, mixed with the case name so cases do not all share one sequence.
    rng = random.Random(f"{TOKEN_SEED}:{case_name}")
    return [rng.randrange(vocab) for _ in range(n)]


def parse_json_output(text):
    """The whole stdout as JSON, else the last line that parses as a JSON object."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON object on stdout")


def compare(ref, got, tol):
    """Returns (max_abs_diff, problem or None)."""
    if not isinstance(got, dict):
        return math.inf, "output is not a JSON object"
    for key in ("tokens", "nll", "mean_nll", "ppl"):
        if key not in got:
            return math.inf, f"output lacks {key!r}"
    if got["tokens"] != ref["tokens"]:
        return math.inf, f"tokens={got['tokens']}, expected {ref['tokens']}"
    if len(got["nll"]) != len(ref["nll"]):
        return math.inf, f"{len(got['nll'])} nll values, expected {len(ref['nll'])}"
    diffs = []
    for a, b in zip(ref["nll"], got["nll"]):
        try:
            diffs.append(abs(a - float(b)))
        except (TypeError, ValueError):
            return math.inf, f"non-numeric nll {b!r}"
    nan = any(d != d for d in diffs)
    worst = math.nan if nan else max(diffs)
    bad = [i for i, d in enumerate(diffs) if not d <= tol]  # `not <=` also catches NaN
    if bad:
        i = bad[0]
        return worst, (f"{len(bad)} of {len(diffs)} nll off; first at nll[{i}]: "
                       f"{got['nll'][i]!r} vs reference {ref['nll'][i]!r}")
    if not abs(float(got["mean_nll"]) - ref["mean_nll"]) <= tol:
        return worst, f"mean_nll={got['mean_nll']!r} vs reference {ref['mean_nll']!r}"
    if not abs(float(got["ppl"]) - ref["ppl"]) <= tol * ref["ppl"]:
        return worst, f"ppl={got['ppl']!r} vs reference {ref['ppl']!r}"
    return worst, None


def run_parity(binary, workdir, tol, only):
    selected = [c for c in cases() if not only or c[0] in only]
    if only:
        unknown = set(only) - {c[0] for c in selected}
        if unknown:
            print(f"unknown case(s): {', '.join(sorted(unknown))}; known: "
                  f"{', '.join(c[0] for c in cases())}", file=sys.stderr)
            return 2
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        print(f"FAIL binary not found or not executable: {binary}")
        print(f"0 passed, {len(selected)} failed")
        return 1
    passed = failed = 0
    for name, variant, dtype, shards, n in selected:
        model_dir = os.path.join(workdir, name)
        shutil.rmtree(model_dir, ignore_errors=True)
        cfg = llama_ref.make_checkpoint(variant, model_dir, CHECKPOINT_SEED, dtype, shards)
        ids = token_ids(cfg["vocab_size"], n, name)
        id_text = ",".join(map(str, ids))
        ref = llama_ref.score(model_dir, ids)
        cmd = [binary, "score", "--model", model_dir, "--token-ids", id_text, "--json"]
        problem, worst = None, math.inf
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            proc, problem = None, "timed out after 600 s"
        if proc is not None:
            if proc.returncode != 0:
                problem = f"exit status {proc.returncode}"
            else:
                try:
                    worst, problem = compare(ref, parse_json_output(proc.stdout), tol)
                except ValueError as e:
                    problem = str(e)
        if problem is None:
            passed += 1
            print(f"PASS {name} max_abs_diff={worst:.1e}")
        else:
            failed += 1
            print(f"FAIL {name} max_abs_diff={worst:.1e} ({problem})")
            print(f"  command: {' '.join(cmd)}")
            if proc is not None:
                for label, text in (("stderr", proc.stderr), ("stdout", proc.stdout)):
                    text = text.strip()
                    if text:
                        tail = text if len(text) < 4000 else "..." + text[-4000:]
                        print(f"  {label}:\n    " + tail.replace("\n", "\n    "))
        sys.stdout.flush()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


# =============================================================================
# Self-test of the reference
# =============================================================================

def naive_nll(model_dir, ids):
    """A second, deliberately different forward pass (numpy, explicit loops over heads
    and positions, complex-number RoPE on (x[k], x[k + d/2]) pairs) for cross-checking
    llama_ref.forward_logits.  Shares only config parsing, weight loading and the
    inverse-frequency computation (itself checked against HF's formulas)."""
    cfg = llama_ref.load_config(model_dir)
    w = {k: v.numpy() for k, v in llama_ref.load_weights(model_dir, cfg, torch.float64).items()}
    n, hd, half = len(ids), cfg.head_dim, cfg.head_dim // 2
    inv, att = llama_ref.rope_inv_freq(cfg, n)
    rot = att * np.exp(1j * np.outer(np.arange(n), inv.numpy()))  # [n, half]

    def rope(x):  # x [n, heads, hd]
        z = (x[..., :half] + 1j * x[..., half:]) * rot[:, None, :]
        return np.concatenate([z.real, z.imag], axis=-1)

    def norm(x, g):
        return g * x / np.sqrt((x * x).mean(-1, keepdims=True) + cfg.eps)

    def lin(x, name):
        y = x @ w[name + ".weight"].T
        return y + w[name + ".bias"] if name + ".bias" in w else y

    x = w["model.embed_tokens.weight"][ids]
    for layer in range(cfg.layers):
        p = f"model.layers.{layer}."
        h = norm(x, w[p + "input_layernorm.weight"])
        q = rope(lin(h, p + "self_attn.q_proj").reshape(n, cfg.heads, hd))
        k = rope(lin(h, p + "self_attn.k_proj").reshape(n, cfg.kv_heads, hd))
        v = lin(h, p + "self_attn.v_proj").reshape(n, cfg.kv_heads, hd)
        win = cfg.windows[layer]
        out = np.zeros((n, cfg.heads, hd))
        for head in range(cfg.heads):
            kvh = head * cfg.kv_heads // cfg.heads
            for i in range(n):
                first = 0 if win is None else max(0, i - win + 1)
                s = np.array([q[i, head] @ k[j, kvh] for j in range(first, i + 1)]) / math.sqrt(hd)
                e = np.exp(s - s.max())
                out[i, head] = (e / e.sum()) @ v[first:i + 1, kvh]
        x = x + lin(out.reshape(n, -1), p + "self_attn.o_proj")
        h = norm(x, w[p + "post_attention_layernorm.weight"])
        g = lin(h, p + "mlp.gate_proj")
        x = x + lin(g / (1 + np.exp(-g)) * lin(h, p + "mlp.up_proj"), p + "mlp.down_proj")
    logits = norm(x, w["model.norm.weight"]) @ w["lm_head.weight"].T
    m = logits.max(-1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
    return [-logp[i, ids[i + 1]] for i in range(n - 1)]


def self_test(workdir):
    results = []

    def check(label, ok, detail=""):
        results.append(ok)
        print(f"{'PASS' if ok else 'FAIL'} self-test {label}" + (f" ({detail})" if detail else ""))
        sys.stdout.flush()

    def maxdiff(a, b):
        return max(abs(x - y) for x, y in zip(a, b))

    def mk(name, variant, dtype="f32", shards=1, seed=CHECKPOINT_SEED):
        d = os.path.join(workdir, "self", name)
        shutil.rmtree(d, ignore_errors=True)
        return d, llama_ref.make_checkpoint(variant, d, seed, dtype, shards)

    scores = {}
    for v in llama_ref.VARIANTS:
        d, cfg = mk(v, v)
        ids = token_ids(cfg["vocab_size"], N_TOKENS, v)
        s = llama_ref.score(d, ids)
        scores[v] = (d, ids, s)
        finite = all(math.isfinite(x) and x > 0 for x in s["nll"])
        check(f"{v}: finite", finite and len(s["nll"]) == N_TOKENS - 1
              and abs(s["ppl"] - math.exp(s["mean_nll"])) < 1e-9 * s["ppl"],
              f"mean_nll={s['mean_nll']:.4f}")
        s32 = llama_ref.score(d, ids, torch.float32)
        diff = maxdiff(s["nll"], s32["nll"])
        check(f"{v}: float32 run agrees with float64", diff <= 2e-5, f"max_abs_diff={diff:.1e}")
        naive = naive_nll(d, ids)
        diff = maxdiff(s["nll"], naive)
        check(f"{v}: loop/complex-RoPE forward agrees", diff <= 1e-10, f"max_abs_diff={diff:.1e}")

    # Same weights and ids; only lm_head differs.
    d_tied, _ = scores["llama-tied"][0], None
    s_tied = llama_ref.score(d_tied, scores["llama"][1])
    diff = maxdiff(scores["llama"][2]["nll"], s_tied["nll"])
    check("llama-tied differs from llama", diff > 1e-2, f"max_abs_diff={diff:.2e}")

    # Sharding must not change anything.
    d3, _ = mk("llama-shards3", "llama", shards=3)
    files = sorted(f for f in os.listdir(d3) if f.endswith(".safetensors"))
    with open(os.path.join(d3, safetensors_io.INDEX_NAME)) as f:
        index = json.load(f)
    total = sum(os.path.getsize(os.path.join(d3, f)) - safetensors_io.read_header(
        os.path.join(d3, f))[2] for f in files)
    check("3 shards + index written", len(files) == 3 and not os.path.exists(
        os.path.join(d3, "model.safetensors")) and index["metadata"]["total_size"] == total
        and set(index["weight_map"].values()) == set(files), ", ".join(files))
    s3 = llama_ref.score(d3, scores["llama"][1])
    check("sharded scores identically", s3["nll"] == scores["llama"][2]["nll"])

    # dynamic NTK leaves short sequences alone: same weights as "llama" (same seed/shapes).
    d_dyn, ids = scores["llama-dynamic"][0], scores["llama"][1][:12]
    diff = maxdiff(llama_ref.score(d_dyn, ids)["nll"], llama_ref.score(scores["llama"][0], ids)["nll"])
    check("llama-dynamic == llama for 12 <= max_position_embeddings tokens", diff == 0.0)
    ids = scores["llama"][1]
    diff = maxdiff(llama_ref.score(d_dyn, ids)["nll"], scores["llama"][2]["nll"])
    check("llama-dynamic != llama for 30 tokens", diff > 1e-3, f"max_abs_diff={diff:.2e}")

    # Sliding window: for n <= window Mistral equals full attention; it bites after.
    d_mis, ids, s_mis = scores["mistral"]
    cfg = llama_ref.load_config(d_mis)
    w = llama_ref.load_weights(d_mis, cfg, torch.float64)
    full = llama_ref.Config(dict(cfg.raw, sliding_window=None))
    lp_win = torch.log_softmax(llama_ref.forward_logits(cfg, w, ids), -1)
    lp_full = torch.log_softmax(llama_ref.forward_logits(full, w, ids), -1)
    same = torch.equal(lp_win[:8], lp_full[:8])
    bites = float((lp_win[8] - lp_full[8]).abs().max()) > 1e-6
    check("mistral window 8: positions 0-7 unaffected, position 8 affected", same and bites)

    # Qwen2's sliding_window is ignored while use_sliding_window is false.
    cfg = llama_ref.load_config(scores["qwen2"][0])
    check("qwen2 decoy sliding_window ignored", cfg.windows == [None] * cfg.layers)

    # Reduced-precision storage: bf16 / f16 bits equal torch's own conversion.
    d_bf, _ = mk("llama-bf16", "llama", dtype="bf16")
    d_h, _ = mk("qwen2-f16", "qwen2", dtype="f16")
    f32 = safetensors_io.load_checkpoint(scores["llama"][0])
    bf = safetensors_io.load_checkpoint(d_bf)
    ok = all(np.array_equal(bf[k], torch.from_numpy(f32[k]).to(torch.bfloat16).float().numpy())
             for k in f32)
    check("bf16 storage == torch bfloat16 rounding", ok and all(
        v == "BF16" for v in safetensors_io.tensor_dtypes(os.path.join(d_bf, "model.safetensors")).values()))
    f32q = safetensors_io.load_checkpoint(scores["qwen2"][0])
    hh = safetensors_io.load_checkpoint(d_h)
    ok = all(hh[k].dtype == np.float16 and np.array_equal(
        hh[k], torch.from_numpy(f32q[k]).half().numpy()) for k in f32q)
    check("f16 storage == torch half rounding", ok)
    for d, v in ((d_bf, "llama"), (d_h, "qwen2")):
        s = llama_ref.score(d, scores[v][1])
        diff = maxdiff(s["nll"], scores[v][2]["nll"])
        check(f"{os.path.basename(d)}: finite, close to but not equal to f32",
              all(math.isfinite(x) for x in s["nll"]) and 0 < diff < 0.1, f"max_abs_diff={diff:.1e}")

    # Writer layout and reader robustness.
    path = os.path.join(scores["llama"][0], "model.safetensors")
    _, _, start, size = safetensors_io.read_header(path)
    check("header padded to 8 bytes", start % 8 == 0)
    blob = open(path, "rb").read()
    for label, cut in (("data", len(blob) - 100), ("header", 40), ("length field", 5)):
        bad = os.path.join(workdir, "self", f"truncated-{label.replace(' ', '-')}.safetensors")
        with open(bad, "wb") as f:
            f.write(blob[:cut])
        try:
            safetensors_io.load_file(bad)
            check(f"truncated {label} rejected", False, "no error raised")
        except safetensors_io.SafetensorsError as e:
            check(f"truncated {label} rejected", "truncated" in str(e), str(e))
    # Round trip of every dtype the writer supports.
    arr = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    rt = os.path.join(workdir, "self", "roundtrip.safetensors")
    safetensors_io.save_file({"a": arr, "b": arr[0], "c": np.float32(1.5).reshape(())}, rt, "F32",
                             {"k": "v"})
    back, meta = safetensors_io.load_file(rt)
    check("F32 round trip (incl. scalar and metadata)", np.array_equal(back["a"], arr)
          and np.array_equal(back["b"], arr[0]) and back["c"].shape == () and meta == {"k": "v"})

    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sharedllm", help="path to the C++ binary")
    ap.add_argument("--workdir", help="keep checkpoints here (default: a temporary directory)")
    ap.add_argument("--tol", type=float, default=1e-4, help="max abs nll difference")
    ap.add_argument("--only", nargs="+", metavar="CASE", help="run only these cases")
    ap.add_argument("--list", action="store_true", help="list case names and exit")
    ap.add_argument("--self-test", action="store_true", help="check the reference itself")
    args = ap.parse_args()
    if args.list:
        print("\n".join(c[0] for c in cases()))
        return 0
    if not args.self_test and not args.sharedllm:
        ap.error("--sharedllm is required (or use --self-test)")
    tmp = None
    if args.workdir:
        workdir = os.path.abspath(args.workdir)
        os.makedirs(workdir, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="parity-")
        workdir = tmp.name
    try:
        if args.self_test:
            return self_test(workdir)
        return run_parity(os.path.abspath(args.sharedllm), workdir, args.tol, args.only)
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())

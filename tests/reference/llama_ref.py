#!/usr/bin/python3
"""Independent float64 reference for LLaMA-family causal LMs (Llama, Mistral, Qwen2).

Written against the Hugging Face transformers semantics (modeling_llama.py,
modeling_mistral.py, modeling_qwen2.py, modeling_rope_utils.py, masking_utils.py)
so that a C++ implementation can be checked for parity.  Needs torch + numpy only
(Debian's python3-torch; run with /usr/bin/python3 if another python3 is first on PATH).

Subcommands:

  make-checkpoint --variant V --out DIR [--seed S] [--dtype f32|bf16|f16] [--shards K]
      Writes a tiny random checkpoint in Hugging Face layout (config.json +
      model.safetensors, or K shards + model.safetensors.index.json).

  score --model DIR --token-ids 1,2,3,... [--compute-dtype f64|f32] [--json]
      Prints one JSON object:
        {"tokens": n, "nll": [n-1 floats], "mean_nll": x, "ppl": y}
      nll[i] = -log softmax(logits at position i)[token i+1] (natural log),
      computed in float64 over a full causal pass at positions 0..n-1.
"""

import argparse
import json
import math
import os
import sys

try:
    import numpy as np
    import torch
except ImportError as e:  # pragma: no cover - environment problem, say so clearly
    sys.exit(f"llama_ref: {e}; needs numpy and torch (Debian: python3-torch, python3-numpy; "
             f"run with /usr/bin/python3 if another python3 shadows it)")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

# =============================================================================
# Variants for make-checkpoint
# =============================================================================

_BASE = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 97,
    "hidden_size": 64,
    "intermediate_size": 176,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "max_position_embeddings": 64,
    "rope_scaling": None,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "mlp_bias": False,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "initializer_range": 0.02,
    "use_cache": True,
}

# Each variant = overrides of _BASE (None-valued keys in an override are kept as null).
VARIANTS = {
    # MHA with GQA (4 query heads share 2 kv heads), untied lm_head.
    "llama": {},
    # lm_head.weight absent from the file; logits use embed_tokens.
    "llama-tied": {"tie_word_embeddings": True},
    # plain multi-head attention.
    "llama-mha": {"num_key_value_heads": 4},
    # explicit head_dim (32) != hidden/heads (16): q_proj is [128, 64], o_proj [64, 128];
    # the rotary dimension is head_dim too.
    "llama-headdim": {"head_dim": 32},
    # legacy "type" key (not "rope_type"), as old checkpoints have it.
    "llama-linear": {"rope_scaling": {"type": "linear", "factor": 2.0}},
    # max_position_embeddings 16 so that a 30-token input triggers the NTK base change.
    "llama-dynamic": {"rope_scaling": {"type": "dynamic", "factor": 2.0},
                      "max_position_embeddings": 16},
    # original_max_position_embeddings 4096 with head_dim 16 and theta 1e4 puts the YaRN
    # ramp boundaries at low=2, high=6, so frequency indices 0-2 are kept, 3-5 blended
    # (ramp 0.25/0.5/0.75) and 6-7 fully interpolated. max_position_embeddings =
    # factor * original, so HF versions that derive the factor from that ratio agree.
    "llama-yarn": {"rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                                    "original_max_position_embeddings": 4096},
                   "max_position_embeddings": 16384},
    # original_max_position_embeddings 64 with head_dim 16, theta 5e5 gives one frequency
    # of each kind: wavelength 6.3 (< 64/4: kept), 32.4 (between: smoothed), >=167 (/8).
    "llama3": {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 64},
               "rope_theta": 500000.0, "max_position_embeddings": 512},
    # sliding window 8 on every layer: query i sees keys j with i-8 < j <= i.
    "mistral": {"architectures": ["MistralForCausalLM"], "model_type": "mistral",
                "sliding_window": 8, "rms_norm_eps": 1e-6},
    # q/k/v biases (no o_proj bias), tied embeddings, theta 1e6, as small Qwen2 ship.
    # "sliding_window": 8 is a decoy: with use_sliding_window false HF ignores it.
    "qwen2": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
              "tie_word_embeddings": True, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
              "use_sliding_window": False, "sliding_window": 8, "max_window_layers": 3},
    # Llama attention_bias: biases on q, k, v AND o_proj (unlike Qwen2).
    "llama-bias": {"attention_bias": True},
}

_DTYPES = {  # --dtype -> (safetensors dtype, config torch_dtype)
    "f32": ("F32", "float32"),
    "bf16": ("BF16", "bfloat16"),
    "f16": ("F16", "float16"),
}


def variant_config(variant):
    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    cfg = dict(_BASE)
    cfg.update(json.loads(json.dumps(VARIANTS[variant])))  # deep copy
    arch = cfg["architectures"][0]
    if arch == "MistralForCausalLM":  # Mistral has neither attention_bias nor mlp_bias
        cfg.pop("attention_bias")
        cfg.pop("mlp_bias")
    if arch == "Qwen2ForCausalLM":  # Qwen2's q/k/v bias is unconditional
        cfg.pop("attention_bias")
        cfg.pop("mlp_bias")
    return cfg


# =============================================================================
# Parsed model configuration (HF semantics)
# =============================================================================

class Config:
    def __init__(self, raw):
        self.raw = raw
        archs = raw.get("architectures") or []
        self.arch = archs[0] if archs else {"llama": "LlamaForCausalLM",
                                              "mistral": "MistralForCausalLM",
                                              "qwen2": "Qwen2ForCausalLM"}.get(raw.get("model_type"))
        if self.arch not in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"):
            raise ValueError(f"unsupported architecture {self.arch!r}")
        act = raw.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"unsupported hidden_act {act!r}")
        self.vocab = raw["vocab_size"]
        self.hidden = raw["hidden_size"]
        self.intermediate = raw["intermediate_size"]
        self.layers = raw["num_hidden_layers"]
        self.heads = raw["num_attention_heads"]
        # Missing/null num_key_value_heads means MHA.
        self.kv_heads = raw.get("num_key_value_heads") or self.heads
        if self.heads % self.kv_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        # head_dim may be given explicitly (and differ from hidden/heads); null means default.
        self.head_dim = raw.get("head_dim") or self.hidden // self.heads
        self.eps = raw.get("rms_norm_eps", 1e-6)
        self.rope_theta = float(raw.get("rope_theta", 10000.0))
        self.max_pos = raw.get("max_position_embeddings", 2048)
        self.rope_scaling = raw.get("rope_scaling") or None
        self.tie = bool(raw.get("tie_word_embeddings", False))
        if raw.get("partial_rotary_factor", 1.0) != 1.0:
            raise ValueError("partial_rotary_factor != 1 is not supported")
        if raw.get("mlp_bias"):
            raise ValueError("mlp_bias is not supported by this reference")

        # Which projections carry a bias.
        if self.arch == "Qwen2ForCausalLM":
            self.qkv_bias, self.o_bias = True, False
        elif self.arch == "MistralForCausalLM":
            self.qkv_bias, self.o_bias = False, False
        else:  # Llama: attention_bias switches on q, k, v *and* o_proj biases
            ab = bool(raw.get("attention_bias", False))
            self.qkv_bias, self.o_bias = ab, ab

        # Per-layer sliding window (None = full causal attention).
        self.windows = [None] * self.layers
        if self.arch == "MistralForCausalLM":
            sw = raw.get("sliding_window")
            self.windows = [sw] * self.layers
        elif self.arch == "Qwen2ForCausalLM":
            # Qwen2 only uses sliding_window when use_sliding_window is true, and then only
            # on layers with index >= max_window_layers.
            if raw.get("use_sliding_window", False) and raw.get("sliding_window") is not None:
                mwl = raw.get("max_window_layers", self.layers)
                self.windows = [raw["sliding_window"] if i >= mwl else None
                                for i in range(self.layers)]

    def rope_type(self):
        if not self.rope_scaling:
            return "default"
        # BC: "rope_type" was originally called "type".
        return self.rope_scaling.get("rope_type", self.rope_scaling.get("type", "default"))


def load_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return Config(json.load(f))


# =============================================================================
# Rotary embeddings
# =============================================================================

def rope_inv_freq(cfg, seq_len):
    """Returns (inv_freq [head_dim/2] float64, attention_scaling) for a pass over
    positions 0..seq_len-1, following modeling_rope_utils.ROPE_INIT_FUNCTIONS."""
    dim = cfg.head_dim
    base = cfg.rope_theta
    rs = cfg.rope_scaling or {}
    kind = cfg.rope_type()
    exps = torch.arange(0, dim, 2, dtype=torch.float64) / dim  # 2i/dim

    if kind == "default":
        return 1.0 / base ** exps, 1.0

    if kind == "linear":
        # Position interpolation: positions / factor == inv_freq / factor.
        return 1.0 / base ** exps / rs["factor"], 1.0

    if kind == "dynamic":
        # Dynamic NTK: only when the sequence exceeds max_position_embeddings is the base
        # enlarged; seq_len is (max position id + 1), i.e. the current total length.
        # HF caches this statefully during generation; for one full pass it is n.
        factor = rs["factor"]
        mp = cfg.max_pos
        seq = max(seq_len, mp)
        if seq > mp:
            base = base * ((factor * seq / mp) - (factor - 1)) ** (dim / (dim - 2))
        return 1.0 / base ** exps, 1.0

    if kind == "yarn":
        factor = rs.get("factor")
        orig = rs.get("original_max_position_embeddings")
        if factor is None:  # newest HF: derive the factor from the context ratio
            factor = cfg.max_pos / orig
        elif orig is not None and abs(cfg.max_pos / orig - factor) > 1e-9:
            # transformers 4.4x-4.5x *replace* factor by max_position_embeddings/original
            # when original is given; newer versions keep factor.  Ambiguous config.
            print(f"llama_ref: warning: yarn factor {factor} != max_position_embeddings/"
                  f"original_max_position_embeddings = {cfg.max_pos / orig}; using factor",
                  file=sys.stderr)
        if orig is None:
            orig = cfg.max_pos

        def mscale(scale, m=1.0):
            return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

        attention_factor = rs.get("attention_factor")
        if attention_factor is None:
            m, m_all = rs.get("mscale"), rs.get("mscale_all_dim")
            if m and m_all:
                attention_factor = mscale(factor, m) / mscale(factor, m_all)
            else:
                attention_factor = mscale(factor)  # 0.1*ln(factor)+1
        beta_fast = rs.get("beta_fast") or 32
        beta_slow = rs.get("beta_slow") or 1

        def correction_dim(n_rot):
            # dimension index at which a wavelength fits n_rot times into orig positions
            return dim * math.log(orig / (n_rot * 2 * math.pi)) / (2 * math.log(base))

        low, high = correction_dim(beta_fast), correction_dim(beta_slow)
        if rs.get("truncate", True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001  # avoid a zero-width ramp
        ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
        extrap_weight = 1.0 - ramp  # 1: keep original frequency, 0: divide by factor
        pos_freqs = base ** exps
        inv_extrap = 1.0 / pos_freqs
        inv_interp = 1.0 / (factor * pos_freqs)
        inv = inv_interp * (1 - extrap_weight) + inv_extrap * extrap_weight
        # attention_factor multiplies both cos and sin (so q.k scales by its square).
        return inv, float(attention_factor)

    if kind == "llama3":
        inv = 1.0 / base ** exps
        factor = rs["factor"]
        low_ff, high_ff = rs["low_freq_factor"], rs["high_freq_factor"]
        old_ctx = rs["original_max_position_embeddings"]
        low_freq_wavelen = old_ctx / low_ff
        high_freq_wavelen = old_ctx / high_ff
        wavelen = 2 * math.pi / inv
        # long wavelengths (> low_freq_wavelen): divided by factor; short ones
        # (< high_freq_wavelen): kept; in between (inclusive): smooth blend.
        out = torch.where(wavelen > low_freq_wavelen, inv / factor, inv)
        smooth = (old_ctx / wavelen - low_ff) / (high_ff - low_ff)
        blended = (1 - smooth) * out / factor + smooth * out
        medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
        return torch.where(medium, blended, out), 1.0

    raise ValueError(f"unsupported rope type {kind!r}")


def rotate_half(x):
    # HF (GPT-NeoX) convention: the two halves of the head dim form the pairs.
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


# =============================================================================
# Forward pass
# =============================================================================

def weight_names(cfg):
    names = ["model.embed_tokens.weight"]
    for i in range(cfg.layers):
        p = f"model.layers.{i}."
        names.append(p + "input_layernorm.weight")
        for proj in ("q", "k", "v", "o"):
            names.append(p + f"self_attn.{proj}_proj.weight")
            if (proj != "o" and cfg.qkv_bias) or (proj == "o" and cfg.o_bias):
                names.append(p + f"self_attn.{proj}_proj.bias")
        names.append(p + "post_attention_layernorm.weight")
        for proj in ("gate", "up", "down"):
            names.append(p + f"mlp.{proj}_proj.weight")
    names.append("model.norm.weight")
    if not cfg.tie:
        names.append("lm_head.weight")
    return names


def weight_shapes(cfg):
    h, d, q, kv = cfg.hidden, cfg.head_dim, cfg.heads, cfg.kv_heads
    shapes = {}
    for n in weight_names(cfg):
        leaf = n.split(".")[-2] + "." + n.split(".")[-1]
        shapes[n] = {
            "embed_tokens.weight": (cfg.vocab, h),
            "lm_head.weight": (cfg.vocab, h),
            "input_layernorm.weight": (h,),
            "post_attention_layernorm.weight": (h,),
            "norm.weight": (h,),
            "q_proj.weight": (q * d, h), "q_proj.bias": (q * d,),
            "k_proj.weight": (kv * d, h), "k_proj.bias": (kv * d,),
            "v_proj.weight": (kv * d, h), "v_proj.bias": (kv * d,),
            "o_proj.weight": (h, q * d), "o_proj.bias": (h,),
            "gate_proj.weight": (cfg.intermediate, h),
            "up_proj.weight": (cfg.intermediate, h),
            "down_proj.weight": (h, cfg.intermediate),
        }[leaf]
    return shapes


def load_weights(model_dir, cfg, dtype):
    raw = safetensors_io.load_checkpoint(model_dir)
    expected = weight_shapes(cfg)
    missing = [n for n in expected if n not in raw]
    if missing:
        raise ValueError(f"checkpoint lacks tensors: {missing}")
    for n, arr in raw.items():
        if n in expected:
            if tuple(arr.shape) != expected[n]:
                raise ValueError(f"{n}: shape {tuple(arr.shape)}, expected {expected[n]}")
        elif n == "lm_head.weight" and cfg.tie:
            pass  # HF ties lm_head to embed_tokens and ignores a stored copy
        elif n.endswith("rotary_emb.inv_freq"):
            pass  # stale buffer in old checkpoints; HF ignores it
        else:
            raise ValueError(f"unexpected tensor in checkpoint: {n}")
    w = {n: torch.from_numpy(np.asarray(raw[n], dtype=np.float64)).to(dtype) for n in expected}
    if cfg.tie:
        w["lm_head.weight"] = w["model.embed_tokens.weight"]
    return w


def rms_norm(x, weight, eps):
    # HF LlamaRMSNorm: normalise (in float32 there, float64 here), then multiply by weight.
    var = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(var + eps))


def linear(x, w, name):
    y = x @ w[name + ".weight"].T
    b = w.get(name + ".bias")
    return y if b is None else y + b


def attention_mask(n, window):
    """Boolean [n, n], True where query i may attend key j."""
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    allowed = j <= i
    if window is not None:
        # masking_utils.sliding_window_overlay: kv_idx > q_idx - sliding_window,
        # i.e. the query itself plus the window-1 previous keys.
        allowed &= j > i - window
    return allowed


def forward_logits(cfg, w, ids, dtype=torch.float64):
    n = len(ids)
    hd, nq, nkv = cfg.head_dim, cfg.heads, cfg.kv_heads
    group = nq // nkv

    inv_freq, att_scale = rope_inv_freq(cfg, n)
    pos = torch.arange(n, dtype=torch.float64)
    freqs = pos[:, None] * inv_freq[None, :]              # [n, hd/2]
    emb = torch.cat((freqs, freqs), dim=-1)               # [n, hd]
    cos = (emb.cos() * att_scale).to(dtype)[:, None, :]   # [n, 1, hd]
    sin = (emb.sin() * att_scale).to(dtype)[:, None, :]

    x = w["model.embed_tokens.weight"][torch.tensor(ids, dtype=torch.long)]  # [n, H]
    for layer in range(cfg.layers):
        p = f"model.layers.{layer}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], cfg.eps)
        q = linear(h, w, p + "self_attn.q_proj").view(n, nq, hd)
        k = linear(h, w, p + "self_attn.k_proj").view(n, nkv, hd)
        v = linear(h, w, p + "self_attn.v_proj").view(n, nkv, hd)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # GQA (repeat_kv): query head h reads kv head h // group.
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))  # [heads, n, hd]
        scores = (q @ k.transpose(1, 2)) * hd ** -0.5       # scale uses head_dim
        mask = attention_mask(n, cfg.windows[layer])
        scores = scores.masked_fill(~mask, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        ctx = (probs @ v).transpose(0, 1).reshape(n, nq * hd)
        x = x + linear(ctx, w, p + "self_attn.o_proj")

        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], cfg.eps)
        gate = linear(h, w, p + "mlp.gate_proj")
        up = linear(h, w, p + "mlp.up_proj")
        x = x + linear(torch.nn.functional.silu(gate) * up, w, p + "mlp.down_proj")

    x = rms_norm(x, w["model.norm.weight"], cfg.eps)
    return x @ w["lm_head.weight"].T  # [n, vocab]


def score(model_dir, ids, dtype=torch.float64):
    if len(ids) < 2:
        raise ValueError("need at least 2 token ids")
    cfg = load_config(model_dir)
    bad = [t for t in ids if not 0 <= t < cfg.vocab]
    if bad:
        raise ValueError(f"token ids out of range [0, {cfg.vocab}): {bad}")
    w = load_weights(model_dir, cfg, dtype)
    with torch.no_grad():
        logits = forward_logits(cfg, w, ids, dtype).to(torch.float64)
        logp = torch.log_softmax(logits, dim=-1)
        target = torch.tensor(ids[1:], dtype=torch.long)
        nll = (-logp[:-1].gather(1, target[:, None])[:, 0]).tolist()
    mean = sum(nll) / len(nll)
    return {"tokens": len(ids), "nll": nll, "mean_nll": mean, "ppl": math.exp(mean)}


# =============================================================================
# Checkpoint generation
# =============================================================================

def make_checkpoint(variant, out_dir, seed=0, dtype="f32", shards=1):
    cfg_raw = variant_config(variant)
    st_dtype, torch_dtype = _DTYPES[dtype]
    cfg_raw["torch_dtype"] = torch_dtype
    cfg = Config(cfg_raw)
    torch.manual_seed(seed)
    tensors = {}
    for name, shape in weight_shapes(cfg).items():
        r = torch.randn(shape, dtype=torch.float32)
        if name.endswith("norm.weight"):
            t = 1.0 + 0.1 * r       # near 1 but not 1, so a missing multiply shows
        elif name.endswith(".bias"):
            t = 0.05 * r
        else:
            t = 0.08 * r            # embeddings and projections: non-trivial logits
        tensors[name] = t.numpy()
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg_raw, f, indent=2)
        f.write("\n")
    safetensors_io.save_checkpoint(tensors, out_dir, dtype=st_dtype, shards=shards)
    return cfg_raw


# =============================================================================
# CLI
# =============================================================================

def parse_ids(text):
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --token-ids {text!r}") from None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make-checkpoint", help="write a tiny random HF checkpoint")
    mk.add_argument("--variant", required=True, choices=list(VARIANTS))
    mk.add_argument("--out", required=True)
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--dtype", choices=list(_DTYPES), default="f32")
    mk.add_argument("--shards", type=int, default=1)
    sc = sub.add_parser("score", help="per-token NLL of a token sequence")
    sc.add_argument("--model", required=True)
    sc.add_argument("--token-ids", required=True, type=parse_ids)
    sc.add_argument("--compute-dtype", choices=["f64", "f32"], default="f64",
                    help="arithmetic precision (f32 only for self-checks)")
    sc.add_argument("--json", action="store_true", help="accepted for CLI parity; output is JSON")
    sub.add_parser("variants", help="list variant names")
    args = ap.parse_args(argv)

    try:
        if args.cmd == "make-checkpoint":
            make_checkpoint(args.variant, args.out, args.seed, args.dtype, args.shards)
        elif args.cmd == "score":
            dt = torch.float64 if args.compute_dtype == "f64" else torch.float32
            print(json.dumps(score(args.model, args.token_ids, dt)))
        else:
            print("\n".join(VARIANTS))
    except (ValueError, KeyError, OSError) as e:
        print(f"llama_ref: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Rebuilds models/tiny: a ~0.2 M-parameter LLaMA-architecture model with RANDOM weights and a
# 1,000-piece sentencepiece BPE tokenizer (byte fallback) trained on the GPL-3 text that every
# Debian system ships. It exists to exercise the code paths end to end (loading, tokenising,
# generation) in seconds; its text is noise. Trained models live beside it (models/mini, its card models/mini/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
out=models/tiny
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

spm_train --input=/usr/share/common-licenses/GPL-3 --model_prefix="$work/tok" --vocab_size=1000 \
  --model_type=bpe --byte_fallback=true --character_coverage=1.0 --num_threads=1 \
  --normalization_rule_name=identity --split_digits=true \
  --input_sentence_size=0 --shuffle_input_sentence=false --minloglevel=2
cat > "$work/config.json" <<'JSON'
{
  "architectures": ["LlamaForCausalLM"],
  "model_type": "llama",
  "vocab_size": 1000,
  "hidden_size": 64,
  "intermediate_size": 176,
  "num_hidden_layers": 2,
  "num_attention_heads": 4,
  "num_key_value_heads": 2,
  "max_position_embeddings": 256,
  "rms_norm_eps": 1e-5,
  "rope_theta": 10000.0,
  "tie_word_embeddings": false,
  "bos_token_id": 1,
  "eos_token_id": 2
}
JSON
mkdir -p "$out"
build/bin/sharedllm new --config "$work/config.json" --out "$out" --seed 1 --std 0.2 \
  --tokenizer "$work/tok.model"
sha256sum "$out"/config.json "$out"/model.safetensors "$out"/tokenizer.model

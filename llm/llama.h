// LLaMA-family decoder (Llama-2/3, Mistral, Qwen2) as libtorch modules. Module and parameter
// names are Hugging Face's (`model.layers.3.self_attn.q_proj.weight`), so a checkpoint loads with
// one loop over named_parameters() and no key mapping.
#pragma once

#include <memory>
#include <optional>
#include <utility>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include "llm/config.h"
#include "llm/kv_cache.h"
#include "llm/layers.h"
#include "llm/rope.h"

namespace sharedllm {

// A residual update that a model built on this one adds inside decoder layers, after the
// self-attention residual and before the MLP (SharedLLM's cross-attention to a context tree is
// one). The LLaMA core only calls it; what it reads and which layers it touches are its own.
class LayerInjection {
 public:
  virtual ~LayerInjection() = default;
  // h: [B, T, hidden] after decoder layer `layer`'s self-attention residual -> the update
  // [B, T, hidden] to add, or an undefined tensor to leave the layer as it is.
  virtual at::Tensor Update(int64_t layer, const at::Tensor& h) const = 0;
};

// What every layer of one forward pass shares.
struct LayerInputs {
  at::Tensor cos, sin;    // rotary tables for the new positions: float32 [T, head_dim]
  at::Tensor mask;        // additive float32 [T, S] (0 / -inf), or undefined for "see all"
  KVCache* cache = nullptr;  // null: no cache, the keys are just the new positions
  // Lower model (compressor): each layer appends its keys (before rotary) and values here.
  std::vector<std::pair<at::Tensor, at::Tensor>>* capture = nullptr;
  // The residual update added inside each layer (null: none, the plain LLaMA forward).
  const LayerInjection* injection = nullptr;
};

class LlamaAttentionImpl : public torch::nn::Module {
 public:
  LlamaAttentionImpl(const ModelConfig& c, int64_t layer, const at::TensorOptions& options);
  // x: [B, T, hidden] -> [B, T, hidden]
  at::Tensor forward(const at::Tensor& x, const LayerInputs& in);
  // The keys (before rotary) and values forward() would capture, appended to *in.capture, and
  // nothing else: for a lower model's top layer, whose output feeds nothing.
  void CaptureKV(const at::Tensor& x, const LayerInputs& in);
  // k_proj(x) and v_proj(x) as [B, KVH, T, D], before rotary (forward and CaptureKV).
  std::pair<at::Tensor, at::Tensor> KeysValues(const at::Tensor& x);
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  int64_t layer, heads, kv_heads, head_dim;
};
TORCH_MODULE(LlamaAttention);

class LlamaMLPImpl : public torch::nn::Module {
 public:
  LlamaMLPImpl(const ModelConfig& c, const at::TensorOptions& options);
  // x: [B, T, hidden] -> [B, T, hidden]; down(silu(gate(x)) * up(x))
  at::Tensor forward(const at::Tensor& x);
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(LlamaMLP);

class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  LlamaDecoderLayerImpl(const ModelConfig& c, int64_t layer, const at::TensorOptions& options);
  // h: [B, T, hidden] -> [B, T, hidden]. With an injection, its update comes after the
  // self-attention residual and before the MLP.
  at::Tensor forward(const at::Tensor& h, const LayerInputs& in);
  // Only this layer's keys and values for h (see LlamaAttentionImpl::CaptureKV).
  void CaptureKV(const at::Tensor& h, const LayerInputs& in) { self_attn->CaptureKV(input_layernorm(h), in); }
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  LlamaAttention self_attn{nullptr};
  LlamaMLP mlp{nullptr};
  int64_t index;
};
TORCH_MODULE(LlamaDecoderLayer);

// `model.*` of a Hugging Face checkpoint: embeddings, decoder layers, final norm.
class LlamaModelImpl : public torch::nn::Module {
 public:
  LlamaModelImpl(const ModelConfig& c, const at::TensorOptions& options);
  Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
  LlamaDecoderLayerImpl& layer(int64_t i) { return *layers->ptr<LlamaDecoderLayerImpl>(i); }
};
TORCH_MODULE(LlamaModel);

// The causal language model. Stateless across calls: per-request state is the KVCache.
class CausalLMImpl : public torch::nn::Module {
 public:
  CausalLMImpl(const ModelConfig& c, const at::TensorOptions& options);

  // ids: int64 [B, T] at positions [cache.length(), +T) -> final-normed hidden [B, T, hidden].
  // With a cache the new keys/values are appended and the cache advanced by T. With an
  // injection, each layer adds its update (LayerInjection).
  at::Tensor ForwardHidden(const at::Tensor& ids, KVCache* cache = nullptr,
                           const LayerInjection* injection = nullptr);
  // hidden: [B, T, hidden] -> float32 logits [B, T, vocab]
  at::Tensor Logits(const at::Tensor& hidden);
  // ids: int64 [B, T] -> float32 logits [B, T, vocab]
  at::Tensor forward(const at::Tensor& ids, KVCache* cache = nullptr,
                     const LayerInjection* injection = nullptr);

  // The lower model: the bottom `num_layers` layers run on ids [B, L] at positions 0..L-1 — this
  // model's own, or those of `layers` (decoder layers shaped like this model's, e.g. a separate
  // compressor) over this model's embeddings and final norm.
  struct LowerOutput {
    std::vector<at::Tensor> k, v;  // per layer: keys before rotary and values [B, KVH, L, D]
    at::Tensor first_layer;        // final-normed output of layer 0: [B, L, hidden]
  };
  LowerOutput ForwardLower(const at::Tensor& ids, int64_t num_layers,
                           const torch::nn::ModuleList& layers = nullptr);

  // Rotary tables and mask for T new positions after `past` cached ones (shared by all layers).
  LayerInputs MakeLayerInputs(int64_t past, int64_t t, const at::Device& device) const;
  // Fills every parameter from N(0, std) (norms: 1), seeded; for tests and new models.
  void InitRandom(uint64_t seed, double std = 0.02);
  KVCache NewCache() const { return KVCache(config.num_hidden_layers); }

  ModelConfig config;
  LlamaModel model{nullptr};
  Linear lm_head{nullptr};  // null when tie_word_embeddings
  RotaryEmbedding rope;
};
TORCH_MODULE(CausalLM);

// Reads past the window with full attention: swaps `lm`'s rotary tables for `type` scaled by
// `factor` (over the model's max_position_embeddings) until destroyed. The zero-shot context
// extension baselines (evaluation) and the distillation teacher (trainer, lm_distill).
class ScopedRopeScaling {
 public:
  ScopedRopeScaling(CausalLMImpl& lm, RopeType type, double factor);
  ~ScopedRopeScaling();
  ScopedRopeScaling(const ScopedRopeScaling&) = delete;
  ScopedRopeScaling& operator=(const ScopedRopeScaling&) = delete;

 private:
  CausalLMImpl& lm_;
  RotaryEmbedding saved_;
};

// Causal (and, with sliding_window > 0, banded) additive mask for queries at positions
// [past, past + t) over keys [0, past + t): float32 [t, past + t], or undefined when nothing is
// hidden (a single query with no window limit).
at::Tensor CausalMask(int64_t past, int64_t t, int64_t sliding_window, const at::Device& device);

}  // namespace sharedllm

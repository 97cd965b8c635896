#include "llm/llama.h"

#include <cmath>
#include <limits>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <ATen/CPUGeneratorImpl.h>

#include "llm/errors.h"

namespace sharedllm {

LlamaAttentionImpl::LlamaAttentionImpl(const ModelConfig& c, int64_t layer_,
                                       const at::TensorOptions& options)
    : layer(layer_), heads(c.num_attention_heads), kv_heads(c.num_key_value_heads),
      head_dim(c.head_dim) {
  q_proj = register_module("q_proj", Linear(c.hidden_size, heads * head_dim, c.qkv_bias, options));
  k_proj = register_module("k_proj", Linear(c.hidden_size, kv_heads * head_dim, c.qkv_bias, options));
  v_proj = register_module("v_proj", Linear(c.hidden_size, kv_heads * head_dim, c.qkv_bias, options));
  o_proj = register_module("o_proj", Linear(heads * head_dim, c.hidden_size, c.o_bias, options));
}

std::pair<at::Tensor, at::Tensor> LlamaAttentionImpl::KeysValues(const at::Tensor& x) {
  const int64_t b = x.size(0), t = x.size(1);
  return {k_proj(x).view({b, t, kv_heads, head_dim}).transpose(1, 2),
          v_proj(x).view({b, t, kv_heads, head_dim}).transpose(1, 2)};
}

void LlamaAttentionImpl::CaptureKV(const at::Tensor& x, const LayerInputs& in) {
  Check(in.capture != nullptr, "CaptureKV needs somewhere to put the keys and values");
  in.capture->push_back(KeysValues(x));
}

at::Tensor LlamaAttentionImpl::forward(const at::Tensor& x, const LayerInputs& in) {
  const int64_t b = x.size(0), t = x.size(1);
  auto q = q_proj(x).view({b, t, heads, head_dim}).transpose(1, 2);  // [B, H, T, D]
  auto [k, v] = KeysValues(x);                                       // [B, KVH, T, D]
  if (in.capture) in.capture->emplace_back(k, v);  // the compressor stores keys before rotary
  q = ApplyRotary(q, in.cos, in.sin);
  k = ApplyRotary(k, in.cos, in.sin);
  if (in.cache) std::tie(k, v) = in.cache->Update(layer, k, v);  // [B, KVH, S, D]
  auto out = Attention(q, k, v, in.mask);                         // [B, H, T, D]
  return o_proj(out.transpose(1, 2).reshape({b, t, heads * head_dim}));
}

LlamaMLPImpl::LlamaMLPImpl(const ModelConfig& c, const at::TensorOptions& options) {
  gate_proj = register_module("gate_proj",
                              Linear(c.hidden_size, c.intermediate_size, c.mlp_bias, options));
  up_proj = register_module("up_proj", Linear(c.hidden_size, c.intermediate_size, c.mlp_bias, options));
  down_proj = register_module("down_proj",
                              Linear(c.intermediate_size, c.hidden_size, c.mlp_bias, options));
}

at::Tensor LlamaMLPImpl::forward(const at::Tensor& x) {
  return down_proj(at::silu(gate_proj(x)) * up_proj(x));
}

LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(const ModelConfig& c, int64_t layer,
                                             const at::TensorOptions& options)
    : index(layer) {
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, options));
  self_attn = register_module("self_attn", LlamaAttention(c, layer, options));
  post_attention_layernorm = register_module("post_attention_layernorm",
                                             RMSNorm(c.hidden_size, c.rms_norm_eps, options));
  mlp = register_module("mlp", LlamaMLP(c, options));
}

at::Tensor LlamaDecoderLayerImpl::forward(const at::Tensor& h, const LayerInputs& in) {
  auto x = h + self_attn(input_layernorm(h), in);
  if (in.injection) {
    const auto update = in.injection->Update(index, x);
    if (update.defined()) x = x + update;
  }
  return x + mlp(post_attention_layernorm(x));
}

LlamaModelImpl::LlamaModelImpl(const ModelConfig& c, const at::TensorOptions& options) {
  embed_tokens = register_module("embed_tokens", Embedding(c.vocab_size, c.hidden_size, options));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(LlamaDecoderLayer(c, i, options));
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps, options));
}

CausalLMImpl::CausalLMImpl(const ModelConfig& c, const at::TensorOptions& options)
    : config(c), rope(c) {
  c.Validate();
  model = register_module("model", LlamaModel(c, options));
  if (!c.tie_word_embeddings) {
    lm_head = register_module("lm_head", Linear(c.hidden_size, c.vocab_size, false, options));
  }
}

at::Tensor CausalMask(int64_t past, int64_t t, int64_t sliding_window, const at::Device& device) {
  const int64_t s = past + t;
  if (t == 1 && (sliding_window <= 0 || s <= sliding_window)) return at::Tensor();
  auto opts = at::TensorOptions().dtype(at::kLong).device(device);
  auto q_pos = at::arange(past, s, opts).unsqueeze(1);  // [T, 1]
  auto k_pos = at::arange(0, s, opts).unsqueeze(0);     // [1, S]
  auto hidden = k_pos > q_pos;
  if (sliding_window > 0) hidden = hidden.logical_or(q_pos - k_pos >= sliding_window);
  auto mask = at::zeros({t, s}, opts.dtype(at::kFloat));
  return mask.masked_fill(hidden, -std::numeric_limits<float>::infinity());
}

LayerInputs CausalLMImpl::MakeLayerInputs(int64_t past, int64_t t, const at::Device& device) const {
  LayerInputs in;
  auto positions = at::arange(past, past + t, at::TensorOptions().dtype(at::kLong));
  std::tie(in.cos, in.sin) = rope.CosSin(positions, past + t);
  in.cos = in.cos.to(device);
  in.sin = in.sin.to(device);
  in.mask = CausalMask(past, t, config.sliding_window, device);
  return in;
}

at::Tensor CausalLMImpl::ForwardHidden(const at::Tensor& ids, KVCache* cache,
                                       const LayerInjection* injection) {
  Check(ids.dim() == 2, "input ids must be [batch, tokens]");
  const int64_t past = cache ? cache->length() : 0;
  const int64_t t = ids.size(1);
  LayerInputs in = MakeLayerInputs(past, t, ids.device());
  in.cache = cache;
  in.injection = injection;
  auto h = model->embed_tokens(ids);
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) h = model->layer(i).forward(h, in);
  if (cache) cache->Advance(t);
  return model->norm(h);
}

at::Tensor CausalLMImpl::Logits(const at::Tensor& hidden) {
  const at::Tensor& w = lm_head ? lm_head->weight : model->embed_tokens->weight;
  return at::linear(hidden, w).to(at::kFloat);
}

at::Tensor CausalLMImpl::forward(const at::Tensor& ids, KVCache* cache,
                                 const LayerInjection* injection) {
  return Logits(ForwardHidden(ids, cache, injection));
}

CausalLMImpl::LowerOutput CausalLMImpl::ForwardLower(const at::Tensor& ids, int64_t num_layers,
                                                     const torch::nn::ModuleList& layers) {
  Check(ids.dim() == 2, "input ids must be [batch, tokens]");
  const int64_t available = layers ? static_cast<int64_t>(layers->size()) : config.num_hidden_layers;
  Check(num_layers >= 1 && num_layers <= available,
        "the lower model needs 1.." + std::to_string(available) + " layers");
  std::vector<std::pair<at::Tensor, at::Tensor>> captured;
  LayerInputs in = MakeLayerInputs(0, ids.size(1), ids.device());
  in.capture = &captured;
  LowerOutput out;
  auto h = model->embed_tokens(ids);
  for (int64_t i = 0; i < num_layers; ++i) {
    LlamaDecoderLayerImpl& layer = layers ? *layers->ptr<LlamaDecoderLayerImpl>(i) : model->layer(i);
    // The top layer's output feeds nothing (only its K/V are kept), unless it is layer 0, whose
    // output is the search vector.
    if (i > 0 && i == num_layers - 1) {
      layer.CaptureKV(h, in);
      break;
    }
    h = layer.forward(h, in);
    if (i == 0) out.first_layer = model->norm(h);
  }
  for (auto& [k, v] : captured) {
    out.k.push_back(std::move(k));
    out.v.push_back(std::move(v));
  }
  return out;
}

void CausalLMImpl::InitRandom(uint64_t seed, double std) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  c10::NoGradGuard no_grad;
  for (auto& p : named_parameters()) {
    const bool is_norm = p.key().find("norm") != std::string::npos;
    at::Tensor init = is_norm ? at::ones(p.value().sizes())
                              : at::normal(0.0, std, p.value().sizes(), gen);
    if (p.key().size() > 5 && p.key().compare(p.key().size() - 5, 5, ".bias") == 0) init.zero_();
    p.value().copy_(init);
  }
}

ScopedRopeScaling::ScopedRopeScaling(CausalLMImpl& lm, RopeType type, double factor)
    : lm_(lm), saved_(lm.rope) {
  ModelConfig scaled = lm.config;
  scaled.rope_scaling = RopeScaling();
  scaled.rope_scaling.type = type;
  scaled.rope_scaling.factor = factor;
  scaled.rope_scaling.original_max_position_embeddings = lm.config.max_position_embeddings;
  lm_.rope = RotaryEmbedding(scaled);
}

ScopedRopeScaling::~ScopedRopeScaling() { lm_.rope = saved_; }

}  // namespace sharedllm

#include "sharedllm/cross_attention.h"

#include <cmath>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "llm/rope.h"

namespace sharedllm {

CrossAttentionImpl::CrossAttentionImpl(int64_t hidden, int64_t heads_, int64_t kv_heads_,
                                       int64_t head_dim_, bool q_bias, double eps,
                                       const at::TensorOptions& options)
    : heads(heads_), kv_heads(kv_heads_), head_dim(head_dim_) {
  norm = register_module("norm", RMSNorm(hidden, eps, options));
  q_proj = register_module("q_proj", Linear(hidden, heads * head_dim, q_bias, options));
  o_proj = register_module("o_proj", Linear(heads * head_dim, hidden, false, options));
}

at::Tensor CrossAttentionImpl::forward(const at::Tensor& h, const at::Tensor& k,
                                       const at::Tensor& v, const InjectionContext& context) {
  const int64_t b = h.size(0), t = h.size(1);
  const auto x = norm(h);
  auto q = q_proj(x).view({b, t, heads, head_dim}).transpose(1, 2);        // [B, H, T, D]
  // Every query token sits at chunk position n, in training, prefill and each decode step alike.
  if (context.query_cos.defined()) q = ApplyRotary(q, context.query_cos, context.query_sin);
  auto out = Attention(q, k, v, context.key_mask, sink)
                 .transpose(1, 2);                                           // [B, T, H, D]
  if (gate_proj) out = out * at::sigmoid(gate_proj(x)).unsqueeze(-1);
  return o_proj(out.reshape({b, t, heads * head_dim}));
}

void CrossAttentionImpl::AddGate(double open_bias) {
  if (gate_proj) return;
  const auto options = q_proj->weight.options();
  gate_proj = register_module("gate_proj", Linear(norm->weight.size(0), heads, true, options));
  c10::NoGradGuard no_grad;
  gate_proj->weight.zero_();
  gate_proj->bias.fill_(open_bias);
  o_proj->weight.div_(1.0 / (1.0 + std::exp(-open_bias)));
}

void CrossAttentionImpl::AddSink(double logit) {
  if (sink.defined()) return;
  sink = register_parameter("sink", at::full({heads}, logit, q_proj->weight.options()));
}

at::Tensor InjectionContext::Update(int64_t layer, const at::Tensor& h) const {
  const auto i = static_cast<size_t>(layer);
  if (i >= readers.size() || !readers[i] || i >= k.size() || !k[i].defined()) return {};
  return readers[i].ptr()->forward(h, k[i], v[i], *this);
}

CrossAttention FindCrossAttention(LlamaDecoderLayerImpl& layer) {
  // named_children() returns its dictionary by value: keep it alive while `held` points into it
  // (a heap-use-after-free AddressSanitizer found, docs/TESTING.md).
  const auto children = layer.named_children();
  const auto* held = children.find("cross_attn");
  if (held == nullptr) return CrossAttention(nullptr);
  return CrossAttention(std::dynamic_pointer_cast<CrossAttentionImpl>(*held));
}

CrossAttention AttachCrossAttention(LlamaDecoderLayerImpl& layer, const ModelConfig& c,
                                    double inherit_o_scale) {
  if (auto held = FindCrossAttention(layer)) return held;
  const auto options = layer.self_attn->q_proj->weight.options();
  auto ca = layer.register_module(
      "cross_attn", CrossAttention(c.hidden_size, c.num_attention_heads, c.num_key_value_heads,
                                   c.head_dim, c.qkv_bias, c.rms_norm_eps, options));
  c10::NoGradGuard no_grad;
  ca->norm->weight.copy_(layer.input_layernorm->weight);
  ca->q_proj->weight.copy_(layer.self_attn->q_proj->weight);
  if (c.qkv_bias) ca->q_proj->bias.copy_(layer.self_attn->q_proj->bias);
  // 0: o_proj zero, the layer neutral. Otherwise the layer's own heads over the context: the
  // base's trained output map (copying heads included) rather than one learned from nothing.
  ca->o_proj->weight.copy_(layer.self_attn->o_proj->weight * inherit_o_scale);
  return ca;
}

}  // namespace sharedllm

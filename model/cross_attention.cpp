#include "model/cross_attention.h"

#include <cmath>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "model/rope.h"

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
  at::Tensor s = sink;
  // Counting effective keys needs the scores: Attention raises each row's sink itself.
  const double effective_ref = sink.defined() && sink_keys_effective ? sink_keys_ref : 0;
  if (sink.defined() && sink_keys_ref > 0 && !sink_keys_effective) {
    // n per sample: the keys its mask leaves (padding is -inf), or all of them.
    const auto f = at::TensorOptions().dtype(at::kFloat).device(k.device());
    const auto n = context.key_mask.defined()
                       ? (context.key_mask.view({b, -1}) == 0).sum(-1).to(at::kFloat).clamp_min(1)
                       : at::full({b}, static_cast<double>(k.size(2)), f);
    s = sink.to(at::kFloat).unsqueeze(0) + (sink_keys_slope * at::log(n / sink_keys_ref)).unsqueeze(1);  // [B, H]
  }
  auto out = Attention(q, k, v, context.key_mask, s, context_top_k, effective_ref, sink_keys_slope)
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

}  // namespace sharedllm

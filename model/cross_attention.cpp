#include "model/cross_attention.h"

#include <ATen/ATen.h>

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
  auto q = q_proj(norm(h)).view({b, t, heads, head_dim}).transpose(1, 2);  // [B, H, T, D]
  // Every query token sits at chunk position n, in training, prefill and each decode step alike.
  if (context.query_cos.defined()) q = ApplyRotary(q, context.query_cos, context.query_sin);
  auto out = Attention(q, k, v, context.key_mask);                          // [B, H, T, D]
  return o_proj(out.transpose(1, 2).reshape({b, t, heads * head_dim}));
}

}  // namespace sharedllm

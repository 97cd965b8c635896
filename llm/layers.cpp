#include "llm/layers.h"

#include <cmath>

#include <ATen/ATen.h>

namespace sharedllm {

LinearImpl::LinearImpl(int64_t in, int64_t out, bool with_bias, const at::TensorOptions& options) {
  weight = register_parameter("weight", at::empty({out, in}, options));
  if (with_bias) bias = register_parameter("bias", at::empty({out}, options));
}

at::Tensor LinearImpl::forward(const at::Tensor& x) {
  return at::linear(x, weight, bias.defined() ? c10::optional<at::Tensor>(bias) : c10::nullopt);
}

EmbeddingImpl::EmbeddingImpl(int64_t vocab, int64_t dim, const at::TensorOptions& options) {
  weight = register_parameter("weight", at::empty({vocab, dim}, options));
}

at::Tensor EmbeddingImpl::forward(const at::Tensor& ids) { return at::embedding(weight, ids); }

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_, const at::TensorOptions& options) : eps(eps_) {
  weight = register_parameter("weight", at::ones({dim}, options));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  auto h = x.to(at::kFloat);
  h = h * at::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * h.to(x.scalar_type());
}

at::Tensor Attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& mask, const at::Tensor& sink) {
  const int64_t b = q.size(0), h = q.size(1), t = q.size(2), d = q.size(3);
  const int64_t kvh = k.size(1);
  const int64_t groups = h / kvh;
  // Query head i reads key/value head i / groups (HF's repeat_kv). Folding the group into the
  // query axis lets one batched matmul serve all groups without copying the keys.
  auto qg = q.reshape({b, kvh, groups * t, d});
  auto scores = at::matmul(qg, k.transpose(-1, -2)).to(at::kFloat) / std::sqrt(double(d));
  if (mask.defined()) {
    // A [T, S] mask repeats for each group folded into the query axis; a [B, 1, 1, S] key mask
    // broadcasts as it is.
    scores = scores + (groups > 1 && mask.dim() == 2 ? mask.repeat({groups, 1}) : mask);
  }
  at::Tensor probs;
  if (sink.defined()) {
    // Query head kvh * groups + g is row block g of key/value head kvh (the folding above).
    const auto s = sink.to(at::kFloat).view({1, kvh, groups, 1, 1})
                 .expand({b, kvh, groups, t, 1}).reshape({b, kvh, groups * t, 1});
    const auto row_max = std::get<0>(scores.max(-1, true)).detach();
    const auto top = at::maximum(row_max, s).detach();
    const auto e = at::exp(scores - top);
    probs = (e / (e.sum(-1, true) + at::exp(s - top))).to(v.scalar_type());
  } else {
    probs = at::softmax(scores, -1).to(v.scalar_type());
  }
  return at::matmul(probs, v).view({b, h, t, d});  // [B, KVH, G*T, D] -> [B, H, T, D]
}

}  // namespace sharedllm

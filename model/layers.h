// Building blocks of the LLaMA family, named as in Hugging Face: Linear, Embedding, RMSNorm, and
// the one attention kernel (grouped-query, additive mask) used by self- and cross-attention.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace sharedllm {

// Weights are created uninitialised (loading or InitRandom fills them): a 7B model must not pay
// for a random initialisation it throws away.
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in, int64_t out, bool bias, const at::TensorOptions& options);
  // x: [..., in] -> [..., out]
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // [out] or undefined
};
TORCH_MODULE(Linear);

class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(int64_t vocab, int64_t dim, const at::TensorOptions& options);
  // ids: int64 [B, T] -> [B, T, dim]
  at::Tensor forward(const at::Tensor& ids);
  at::Tensor weight;  // [vocab, dim]
};
TORCH_MODULE(Embedding);

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps, const at::TensorOptions& options);
  // x: [..., dim] -> [..., dim]; statistics in float32 as in Hugging Face.
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight;  // [dim]
  double eps;
};
TORCH_MODULE(RMSNorm);

// Scaled dot-product attention with grouped-query heads (query head i reads key/value head
// i / (H / KVH)). q: [B, H, T, D], k/v: [B, KVH, S, D], mask: additive float32, [T, S] or
// [B, 1, 1, S] (key padding), or undefined -> [B, H, T, D]. `sink`, when defined, is a float32
// [H] (or per sample, [B, H]) logit per query head of one more key whose value is zero: a head whose scores all fall well
// below it reads (almost) nothing, instead of a softmax mix of values it does not want.
// `top_k` > 0: each query row reads only its top_k highest-scoring keys (ties at the k-th score
// all stay), the others are masked out; a row with at most top_k keys reads them all.
// `effective_ref` N > 0 (with a sink): each row's sink logit is raised by
// effective_slope * max(0, log(n_eff / N)), n_eff = sum_j e^(score_j - max score) the row's
// effective number of keys (n for keys that score alike, about 1 for one key far above the rest);
// the offset is a statistic of the scores, not differentiated.
at::Tensor Attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& mask, const at::Tensor& sink = {}, int64_t top_k = 0,
                     double effective_ref = 0, double effective_slope = 1);

}  // namespace sharedllm

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
// [H] logit per query head of one more key whose value is zero: a head whose scores all fall well
// below it reads (almost) nothing, instead of a softmax mix of values it does not want.
at::Tensor Attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& mask, const at::Tensor& sink = {});

}  // namespace sharedllm

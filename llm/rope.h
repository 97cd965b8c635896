// Rotary position embeddings with Hugging Face's conventions: rotate-half pairing (dimension i
// with i + d/2) and the rope_scaling types default, linear, dynamic (NTK), yarn and llama3.
#pragma once

#include <ATen/core/Tensor.h>

#include "llm/config.h"

namespace sharedllm {

class RotaryEmbedding {
 public:
  explicit RotaryEmbedding(const ModelConfig& config);

  // positions: int64 [T] (any order, may repeat) -> cos, sin: float32 [T, head_dim].
  // `seq_len` is the length the dynamic (NTK) type adapts its base to; HF uses max(position)+1.
  std::pair<at::Tensor, at::Tensor> CosSin(const at::Tensor& positions, int64_t seq_len) const;

  // Inverse frequencies for a given sequence length: float64 [head_dim / 2].
  at::Tensor InverseFrequencies(int64_t seq_len) const;
  double attention_scale() const { return attention_scale_; }

 private:
  ModelConfig config_;
  at::Tensor inv_freq_;     // float64 [head_dim/2], for every type but dynamic
  double attention_scale_ = 1.0;  // yarn multiplies cos and sin by it
};

// x: [B, H, T, D], cos/sin: [T, D] (same dtype as x or float32) -> [B, H, T, D].
at::Tensor ApplyRotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace sharedllm

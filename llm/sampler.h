// Next-token choice from logits: greedy, or temperature with top-k / top-p, seeded.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

namespace sharedllm {

struct SamplingOptions {
  double temperature = 0.0;  // 0: greedy (argmax); e.g. 0.8 for sampling
  int64_t top_k = 0;         // keep the k most likely tokens; 0: all
  double top_p = 1.0;        // keep the smallest set with probability >= p; 1: all
  uint64_t seed = 0;         // same seed, same model, same prompt -> same text
  int64_t max_tokens = 128;  // generated tokens at most
  std::vector<std::string> stop;  // generation ends before the first occurrence of any of these
  bool stop_at_eos = true;   // end at the model's EOS token(s)
};

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  // logits: float [vocab] -> chosen token id
  int64_t Sample(const at::Tensor& logits);

 private:
  SamplingOptions options_;
  at::Generator generator_;
};

}  // namespace sharedllm

#include "llm/sampler.h"

#include <limits>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "llm/errors.h"

namespace sharedllm {

Sampler::Sampler(const SamplingOptions& options)
    : options_(options), generator_(at::make_generator<at::CPUGeneratorImpl>(options.seed)) {
  Check(options.temperature >= 0, "temperature must be >= 0");
  Check(options.top_k >= 0, "top_k must be >= 0");
  Check(options.top_p > 0 && options.top_p <= 1, "top_p must be in (0, 1]");
}

int64_t Sampler::Sample(const at::Tensor& logits_in) {
  auto logits = logits_in.to(at::kCPU).to(at::kFloat).reshape({-1});
  if (options_.temperature <= 0) return logits.argmax().item<int64_t>();
  logits = logits / options_.temperature;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  if (options_.top_k > 0 && options_.top_k < logits.size(0)) {
    auto kth = std::get<0>(at::topk(logits, options_.top_k)).min();
    logits = logits.masked_fill(logits < kth, neg_inf);
  }
  if (options_.top_p < 1.0) {
    auto sorted = at::sort(logits, /*dim=*/0, /*descending=*/true);
    auto probs = at::softmax(std::get<0>(sorted), 0);
    // Drop a token when the tokens ranked before it already reach top_p (the first always stays).
    auto before = at::cumsum(probs, 0) - probs;
    auto drop_sorted = before >= options_.top_p;
    auto drop = at::zeros_like(drop_sorted).scatter(0, std::get<1>(sorted), drop_sorted);
    logits = logits.masked_fill(drop, neg_inf);
  }
  auto probs = at::softmax(logits, 0);
  return at::multinomial(probs, 1, /*replacement=*/false, generator_).item<int64_t>();
}

}  // namespace sharedllm

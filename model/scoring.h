// Per-token negative log-likelihood, the quantity perplexity is made of.
#pragma once

#include <vector>

#include "model/llama.h"

namespace sharedllm {

// ids: n tokens -> n-1 values, nll[i] = -ln p(ids[i+1] | ids[0..i]), in one causal forward;
// with a context the injection layers cross-attend to it.
std::vector<double> TokenNll(CausalLM& lm, const std::vector<int64_t>& ids,
                             const InjectionContext* context = nullptr);

}  // namespace sharedllm

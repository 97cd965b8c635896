#include "model/scoring.h"

#include <set>
#include <utility>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "model/errors.h"

namespace sharedllm {

std::vector<double> TokenNll(CausalLM& lm, const std::vector<int64_t>& ids,
                             const InjectionContext* context) {
  Check(ids.size() >= 2, "scoring needs at least two tokens");
  for (int64_t id : ids) {
    Check(id >= 0 && id < lm->config.vocab_size,
          "token id " + std::to_string(id) + " is outside the vocabulary [0, " +
              std::to_string(lm->config.vocab_size) + ")");
  }
  c10::InferenceMode guard;
  const auto device = lm->model->embed_tokens->weight.device();
  auto input = at::tensor(ids, at::TensorOptions().dtype(at::kLong)).view({1, -1}).to(device);
  auto logits = lm->forward(input, nullptr, context).squeeze(0);                     // [n, V]
  auto logp = at::log_softmax(logits.narrow(0, 0, logits.size(0) - 1).to(at::kDouble), -1);
  auto targets = input.squeeze(0).narrow(0, 1, input.size(1) - 1);  // [n-1]
  auto nll = -logp.gather(1, targets.unsqueeze(1)).squeeze(1).to(at::kCPU);
  return std::vector<double>(nll.data_ptr<double>(), nll.data_ptr<double>() + nll.numel());
}

std::vector<bool> CopyableTokens(const std::vector<int64_t>& context, const std::vector<int64_t>& ids) {
  using Bigram = std::pair<int64_t, int64_t>;
  std::set<Bigram> in_context, in_running;
  for (size_t i = 0; i + 1 < context.size(); ++i) in_context.emplace(context[i], context[i + 1]);
  std::set<int64_t> seen;
  std::vector<bool> copyable(ids.empty() ? 0 : ids.size() - 1, false);
  for (size_t i = 0; i + 1 < ids.size(); ++i) {
    seen.insert(ids[i]);
    const Bigram b{ids[i], ids[i + 1]};
    copyable[i] = in_context.count(b) && !in_running.count(b) && !seen.count(ids[i + 1]);
    in_running.insert(b);
  }
  return copyable;
}

}  // namespace sharedllm

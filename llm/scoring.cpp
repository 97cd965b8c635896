#include "llm/scoring.h"

#include <numeric>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "llm/errors.h"

namespace sharedllm {

std::vector<double> TokenNll(CausalLM& lm, const std::vector<int64_t>& ids,
                             const LayerInjection* injection) {
  Check(ids.size() >= 2, "scoring needs at least two tokens");
  for (int64_t id : ids) {
    Check(id >= 0 && id < lm->config.vocab_size,
          "token id " + std::to_string(id) + " is outside the vocabulary [0, " +
              std::to_string(lm->config.vocab_size) + ")");
  }
  c10::InferenceMode guard;
  const auto device = lm->model->embed_tokens->weight.device();
  auto input = at::tensor(ids, at::TensorOptions().dtype(at::kLong)).view({1, -1}).to(device);
  auto logits = lm->forward(input, nullptr, injection).squeeze(0);                     // [n, V]
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

void CheckRenameIds(const std::vector<int64_t>& ids, int64_t vocab_size) {
  Check(ids.size() == 2 && ids[0] >= 0 && ids[0] + 2 <= ids[1] && ids[1] <= vocab_size,
        "rename ids must be [lo, hi) with 0 <= lo, at least two ids, inside the " +
            std::to_string(vocab_size) + "-id vocabulary");
}

void RenameTokens(std::vector<int64_t>& context, std::vector<int64_t>& running, int64_t lo, int64_t hi,
                  std::mt19937_64& rng) {
  Check(lo >= 0 && lo < hi, "RenameTokens needs 0 <= lo < hi");
  // The distinct ids in range, in order of first appearance; each takes the next id of a
  // partial Fisher-Yates shuffle of [lo, hi), so no two share a new id.
  std::unordered_map<int64_t, int64_t> to;
  std::vector<int64_t> pool;
  const auto rename = [&](int64_t& id) {
    if (id < lo || id >= hi) return;
    auto it = to.find(id);
    if (it == to.end()) {
      if (pool.empty()) {
        pool.resize(static_cast<size_t>(hi - lo));
        std::iota(pool.begin(), pool.end(), lo);
      }
      const size_t k = to.size();
      const size_t j = std::uniform_int_distribution<size_t>(k, pool.size() - 1)(rng);
      std::swap(pool[k], pool[j]);
      it = to.emplace(id, pool[k]).first;
    }
    id = it->second;
  };
  for (int64_t& id : context) rename(id);
  for (int64_t& id : running) rename(id);
}

}  // namespace sharedllm

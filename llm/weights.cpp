#include "llm/weights.h"

#include <set>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "llm/errors.h"

namespace sharedllm {
namespace {

// Buffers some exporters write that carry no learned state.
bool Ignorable(const std::string& name) {
  return name.find("rotary_emb.inv_freq") != std::string::npos;
}

std::string ShapeString(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

void LoadParameters(torch::nn::Module& module, const CheckpointReader& reader,
                    const std::string& source, const NameFilter& filter,
                    const NameFilter& ignore) {
  std::vector<std::string> missing, mismatched, unexpected;
  std::set<std::string> wanted;
  auto params = module.named_parameters(/*recurse=*/true);
  for (const auto& p : params) {
    if (filter && !filter(p.key())) continue;
    wanted.insert(p.key());
    if (!reader.contains(p.key())) {
      missing.push_back(p.key());
    } else if (reader.shape(p.key()) != p.value().sizes().vec()) {
      mismatched.push_back(p.key() + ": checkpoint " + ShapeString(reader.shape(p.key())) +
                           ", model " + ShapeString(p.value().sizes()));
    }
  }
  for (const auto& name : reader.names()) {
    if (!wanted.count(name) && !Ignorable(name) && !(ignore && ignore(name))) unexpected.push_back(name);
  }
  if (!missing.empty() || !mismatched.empty() || !unexpected.empty()) {
    std::string msg = source + " does not match the model (" + std::to_string(missing.size()) +
                      " missing, " + std::to_string(unexpected.size()) + " unexpected, " +
                      std::to_string(mismatched.size()) + " mis-shaped):";
    for (const auto& m : missing) msg += "\n  missing:    " + m;
    for (const auto& m : unexpected) msg += "\n  unexpected: " + m;
    for (const auto& m : mismatched) msg += "\n  mis-shaped: " + m;
    msg += "\n  hint: check that config.json belongs to these weights (layers, sizes, "
           "tie_word_embeddings, attention_bias)";
    throw ModelError(msg);
  }
  c10::NoGradGuard no_grad;
  for (auto& p : params) {
    if (filter && !filter(p.key())) continue;
    p.value().copy_(reader.tensor(p.key()));
  }
}

NamedTensors CollectParameters(const torch::nn::Module& module, const NameFilter& filter,
                               c10::optional<at::ScalarType> dtype) {
  NamedTensors out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) {
    if (filter && !filter(p.key())) continue;
    at::Tensor t = p.value().detach();
    out.emplace_back(p.key(), dtype ? t.to(*dtype) : t);
  }
  return out;
}

}  // namespace sharedllm

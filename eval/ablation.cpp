#include "eval/ablation.h"

#include <cmath>
#include <set>
#include <sstream>

#include "llm/errors.h"

namespace sharedllm {
namespace {

const std::set<std::string>& EvalKeys() {
  static const std::set<std::string> keys = {"search", "search_vector", "chunk_positions",
                                             "selection", "depth", "alphas", "beta"};
  return keys;
}

// sharedllm.json fields (and their usual short names) that cannot change after training.
std::string RetrainReason(const std::string& key) {
  if (key == "injection") return "the cross-attention parameters live in the injection layers";
  if (key == "num_injection_layers" || key == "layers" || key == "m") {
    return "the lower model's depth decides which layers have cross-attention parameters";
  }
  if (key == "split_noise" || key == "noise" || key == "noise_divisor") {
    return "split noise is a training switch (inference always splits at the middle)";
  }
  if (key == "compressor") return "a separate compressor has its own trained weights";
  if (key == "gate") return "the gate has its own trained weights";
  if (key == "sink") return "the attention sink has its own trained weights";
  if (key == "chunk_size" || key == "chunk") {
    return "the chunk size fixes the protocol (C = W/4) the model was trained with";
  }
  return "";
}

bool OnOff(const std::string& key, const std::string& value) {
  if (value == "on" || value == "true" || value == "1") return true;
  if (value == "off" || value == "false" || value == "0") return false;
  throw ModelError("--ablate " + key + "=" + value + ": expected on or off");
}

int64_t PositiveInt(const std::string& key, const std::string& value) {
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || value.empty() || v < 1) {
    throw ModelError("--ablate " + key + "=" + value + ": expected a positive integer");
  }
  return v;
}

}  // namespace

Ablation ParseAblation(const std::string& spec) {
  Ablation out;
  std::set<std::string> seen;
  std::stringstream in(spec);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size()) {
      throw ModelError("--ablate: '" + item + "' is not KEY=VALUE");
    }
    std::string key = item.substr(0, eq);
    const std::string value = item.substr(eq + 1);
    if (key == "tree_depth" || key == "height") key = "depth";
    if (const std::string why = RetrainReason(key); !why.empty()) {
      throw ModelError("--ablate " + key + " cannot be changed at evaluation time (" + why +
                       "): make a model with it via `sharedllm init` and train it");
    }
    if (!EvalKeys().count(key)) {
      std::string known;
      for (const auto& k : EvalKeys()) known += (known.empty() ? "" : ", ") + k;
      throw ModelError("--ablate: unknown key '" + key + "' (evaluation-time ablations: " + known + ")");
    }
    if (!seen.insert(key).second) throw ModelError("--ablate: '" + key + "' given twice");
    // Validate the value's syntax now, so a typo fails before a model is loaded.
    if (key == "search" || key == "chunk_positions") {
      out.emplace_back(key, OnOff(key, value) ? "on" : "off");
    } else if (key == "selection") {
      if (value != "first" && value != "last" && value != "mean") {
        throw ModelError("--ablate selection=" + value + ": expected first, last or mean");
      }
      out.emplace_back(key, value);
    } else if (key == "search_vector") {
      if (value != "last" && value != "mean") {
        throw ModelError("--ablate search_vector=" + value + ": expected last or mean");
      }
      out.emplace_back(key, value);
    } else if (key == "alphas") {
      std::stringstream a(value);
      std::string part, canon;
      while (std::getline(a, part, '/')) canon += (canon.empty() ? "" : "/") + std::to_string(PositiveInt(key, part));
      out.emplace_back(key, canon);
    } else {
      out.emplace_back(key, std::to_string(PositiveInt(key, value)));
    }
  }
  if (seen.count("alphas") && seen.count("beta")) {
    throw ModelError("--ablate: give alphas or beta, not both");
  }
  return out;
}

SharedLLMConfig ApplyAblation(const SharedLLMConfig& base, const Ablation& ablation, int64_t num_layers) {
  SharedLLMConfig c = base;
  std::string alphas, beta;
  for (const auto& [key, value] : ablation) {
    if (key == "search") c.search = value == "on";
    else if (key == "chunk_positions") c.chunk_positions = value == "on";
    else if (key == "selection") c.selection = value;
    else if (key == "search_vector") c.search_vector = value;
    else if (key == "alphas") alphas = value;
    else if (key == "beta") beta = value;
    else if (key == "depth") {
      const int64_t depth = std::stoll(value);
      // Keep what a node of each level keeps (C / (2^k alpha_k)) as trained: drop the deeper
      // strides, or extend by halving the last one.
      std::vector<int64_t> a(c.alphas.begin(), c.alphas.begin() + std::min<int64_t>(depth, c.alphas.size()));
      while (static_cast<int64_t>(a.size()) < depth) a.push_back(std::max<int64_t>(1, a.empty() ? 1 : a.back() / 2));
      c.tree_depth = depth;
      c.alphas = a;
    }
  }
  if (!alphas.empty()) {
    c.alphas.clear();
    std::stringstream in(alphas);
    std::string part;
    while (std::getline(in, part, '/')) c.alphas.push_back(std::stoll(part));
  }
  if (!beta.empty()) {
    const double want = std::stod(beta), have = c.CompressionRatio();
    std::vector<int64_t> scaled;
    for (int64_t a : c.alphas) {
      const double x = a * want / have;
      if (std::fabs(x - std::round(x)) > 1e-9 || std::round(x) < 1) {
        throw ModelError("--ablate beta=" + beta + ": scaling the strides (beta " + std::to_string(have) +
                         ") does not give whole strides; give alphas=A/B/... instead");
      }
      scaled.push_back(static_cast<int64_t>(std::round(x)));
    }
    c.alphas = scaled;
  }
  try {
    c.Validate(num_layers);
  } catch (const ModelError& e) {
    throw ModelError(std::string("--ablate ") + AblationString(ablation) + ": " + e.what());
  }
  return c;
}

std::string AblationString(const Ablation& ablation) {
  std::string s;
  for (const auto& [k, v] : ablation) s += (s.empty() ? "" : ",") + k + "=" + v;
  return s;
}

}  // namespace sharedllm

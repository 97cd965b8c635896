#include "sharedllm/config.h"

#include "llm/json_fields.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "llm/errors.h"
#include "llm/file_util.h"

namespace sharedllm {

SharedLLMConfig SharedLLMConfig::FromJsonText(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw ModelError(std::string("sharedllm.json is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw ModelError("sharedllm.json must be a JSON object");
  // An unknown field is refused rather than ignored: a model that relied on a setting this build
  // does not have would otherwise load and silently compute something else.
  static const char* const kKnown[] = {
      "num_injection_layers", "injection", "chunk_size", "tree_depth", "alphas", "selection",
      "search", "search_vector", "split_noise", "noise_divisor", "chunk_positions", "compressor",
      "separate_layers", "gate", "sink", "chunk_budget"};
  std::vector<std::string> unknown;
  for (const auto& item : j.items()) {
    if (std::find(std::begin(kKnown), std::end(kKnown), item.key()) == std::end(kKnown)) {
      unknown.push_back(item.key());
    }
  }
  if (!unknown.empty()) {
    std::string list;
    for (const auto& u : unknown) list += (list.empty() ? "" : ", ") + u;
    throw ModelError("sharedllm.json has fields this build does not know: " + list);
  }
  SharedLLMConfig c;
  try {
    c.num_injection_layers = JsonValue(j, "num_injection_layers", c.num_injection_layers);
    c.injection = JsonValue(j, "injection", c.injection);
    c.chunk_size = JsonValue(j, "chunk_size", c.chunk_size);
    c.tree_depth = JsonValue(j, "tree_depth", c.tree_depth);
    c.alphas = JsonValue(j, "alphas", c.alphas);
    c.selection = JsonValue(j, "selection", c.selection);
    c.search = JsonValue(j, "search", c.search);
    c.search_vector = JsonValue(j, "search_vector", c.search_vector);
    c.split_noise = JsonValue(j, "split_noise", c.split_noise);
    c.noise_divisor = JsonValue(j, "noise_divisor", c.noise_divisor);
    c.chunk_positions = JsonValue(j, "chunk_positions", c.chunk_positions);
    c.compressor = JsonValue(j, "compressor", c.compressor);
    c.separate_layers = JsonValue(j, "separate_layers", c.separate_layers);
    c.gate = JsonValue(j, "gate", c.gate);
    c.sink = JsonValue(j, "sink", c.sink);
    c.chunk_budget = JsonValue(j, "chunk_budget", c.chunk_budget);
  } catch (const nlohmann::json::exception& e) {
    throw ModelError(std::string("sharedllm.json has a field of the wrong type: ") + e.what());
  }
  return c;
}

SharedLLMConfig SharedLLMConfig::Load(const std::string& dir) {
  const std::string path = JoinPath(dir, "sharedllm.json");
  try {
    return FromJsonText(ReadTextFile(path));
  } catch (const ModelError& e) {
    throw ModelError(path + ": " + e.what());
  }
}

std::string SharedLLMConfig::ToJsonText() const {
  nlohmann::json j = {{"num_injection_layers", num_injection_layers},
                      {"injection", injection},
                      {"chunk_size", chunk_size},
                      {"tree_depth", tree_depth},
                      {"alphas", alphas},
                      {"selection", selection},
                      {"search", search},
                      {"search_vector", search_vector},
                      {"split_noise", split_noise},
                      {"noise_divisor", noise_divisor},
                      {"chunk_positions", chunk_positions},
                      {"compressor", compressor},
                      {"gate", gate}, {"sink", sink}};
  // Written only when set, so the sharedllm.json of a model without it stays as it was.
  if (separate_layers > 0) j["separate_layers"] = separate_layers;
  if (chunk_budget > 0) j["chunk_budget"] = chunk_budget;
  return j.dump(2) + "\n";
}

int64_t SharedLLMConfig::CopiedLayers() const {
  if (compressor != "separate") return 0;
  return separate_layers > 0 ? separate_layers : num_injection_layers;
}

bool SharedLLMConfig::SplitLower() const {
  const int64_t copied = CopiedLayers();
  return copied > 0 && copied < num_injection_layers;
}

int64_t SharedLLMConfig::LowerLayerPasses() const {
  return SplitLower() ? CopiedLayers() + num_injection_layers : num_injection_layers;
}

void SharedLLMConfig::Validate(int64_t num_layers) const {
  std::vector<std::string> p;
  if (num_injection_layers < 1 || num_injection_layers > num_layers) {
    p.push_back("num_injection_layers must be in 1.." + std::to_string(num_layers));
  }
  if (injection != "bottom" && injection != "top" && injection != "interleaved") {
    p.push_back("injection must be bottom, top or interleaved, not '" + injection + "'");
  }
  if (tree_depth < 1) p.push_back("tree_depth must be >= 1");
  if (static_cast<int64_t>(alphas.size()) != tree_depth) {
    p.push_back("alphas needs one stride per level (" + std::to_string(tree_depth) + "), has " +
                std::to_string(alphas.size()));
  }
  for (int64_t a : alphas) {
    if (a < 1) p.push_back("every alpha must be >= 1");
  }
  if (chunk_size < (int64_t{1} << tree_depth)) {
    p.push_back("chunk_size must be >= 2^tree_depth (" + std::to_string(1 << tree_depth) + ")");
  }
  if (selection != "first" && selection != "last" && selection != "mean") {
    p.push_back("selection must be first, last or mean, not '" + selection + "'");
  }
  if (noise_divisor <= 0) p.push_back("noise_divisor must be positive");
  if (search_vector != "last" && search_vector != "mean") {
    p.push_back("search_vector must be last or mean, not '" + search_vector + "'");
  }
  if (compressor != "shared" && compressor != "separate") {
    p.push_back("compressor must be shared or separate, not '" + compressor + "'");
  }
  if (separate_layers < 0 || separate_layers > num_injection_layers) {
    p.push_back("separate_layers must be in 0..num_injection_layers (" +
                std::to_string(num_injection_layers) + ")");
  }
  if (separate_layers > 0 && compressor != "separate") {
    p.push_back("separate_layers needs a separate compressor (\"compressor\": \"separate\")");
  }
  if (chunk_budget < 0) p.push_back("chunk_budget must be >= 0 (0: no limit)");
  if (!p.empty()) {
    std::string msg = "invalid SharedLLM configuration:";
    for (const auto& s : p) msg += "\n  - " + s;
    throw ModelError(msg);
  }
}

std::vector<int64_t> SharedLLMConfig::InjectionLayers(int64_t num_layers) const {
  std::vector<int64_t> out;
  for (int64_t j = 0; j < num_injection_layers; ++j) {
    if (injection == "top") out.push_back(num_layers - num_injection_layers + j);
    else if (injection == "interleaved") out.push_back(j * num_layers / num_injection_layers);
    else out.push_back(j);
  }
  return out;
}

double SharedLLMConfig::CompressionRatio() const {
  // A chunk of l tokens keeps l / (2^k alpha_k) positions per node at level k: one node per
  // level above the last, two at the last.
  double kept = 0;
  for (int64_t k = 1; k <= tree_depth; ++k) {
    const double nodes = k == tree_depth ? 2.0 : 1.0;
    kept += nodes / (static_cast<double>(int64_t{1} << k) * alphas[k - 1]);
  }
  return 1.0 / kept;
}

}  // namespace sharedllm

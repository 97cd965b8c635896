#include "sharedllm/surgery.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "llm/errors.h"
#include "llm/file_util.h"
#include "llm/safetensors.h"
#include "llm/weights.h"

namespace sharedllm {
namespace {

void CheckEdit(const LoadedModel& model, const ModelEdit& e) {
  std::vector<std::string> p;
  const SharedLLMConfig& c = model.shared->config();
  const ModelConfig& mc = model.config;
  if (e.injection_layers < 0) p.push_back("injection layers must be >= 0 (0: keep)");
  if (!(e.inherit_o_scale >= 0)) p.push_back("inherit-o-scale must be >= 0");
  if ((e.inherit_o_scale > 0 || e.own_lower) && e.injection_layers == 0) {
    p.push_back("inherit-o-scale and own-lower shape the layers --injection-layers adds; set it");
  }
  if (e.tree_depth < 0) p.push_back("depth must be >= 1 (0: keep)");
  if (e.chunk_budget < -1) p.push_back("chunk budget must be >= 0 (0: no limit; -1: keep)");
  if ((e.tree_depth > 0) != !e.alphas.empty()) {
    p.push_back("depth and alphas go together (one stride per level)");
  }
  std::set<std::pair<int64_t, int64_t>> seen;
  const auto layers = c.InjectionLayers(mc.num_hidden_layers);
  for (const auto& [layer, head] : e.drop_heads) {
    const bool injected = std::find(layers.begin(), layers.end(), layer) != layers.end() ||
                          (c.injection == "bottom" && layer < e.injection_layers);
    if (!injected) p.push_back("layer " + std::to_string(layer) + " has no cross-attention");
    if (head < 0 || head >= mc.num_attention_heads) {
      p.push_back("head " + std::to_string(head) + " is not in 0.." +
                  std::to_string(mc.num_attention_heads - 1));
    }
    if (!seen.insert({layer, head}).second) {
      p.push_back("head " + std::to_string(layer) + ":" + std::to_string(head) + " given twice");
    }
  }
  if (!p.empty()) {
    std::string msg = "invalid edit:";
    for (const auto& s : p) msg += "\n  - " + s;
    throw ModelError(msg);
  }
}

// Takes heads out of their cross-attention (o_proj columns zero); returns the injection layers
// the model keeps: with a bottom injection, top layers whose o_proj is all zero are dropped.
int64_t DropHeads(LoadedModel& model, const std::vector<std::pair<int64_t, int64_t>>& heads) {
  const SharedLLMConfig& c = model.shared->config();
  const int64_t d = model.config.head_dim;
  c10::NoGradGuard no_grad;
  std::set<int64_t> touched;
  for (const auto& [layer, head] : heads) {
    auto ca = FindCrossAttention(model.lm->model->layer(layer));
    ca->o_proj->weight.narrow(1, head * d, d).zero_();
    touched.insert(layer);
  }
  int64_t m = c.num_injection_layers;
  if (c.injection != "bottom") return m;
  // Only layers this edit took heads from: a layer trained to output zero stays.
  while (m > 1 && touched.count(m - 1) &&
         FindCrossAttention(model.lm->model->layer(m - 1))->o_proj->weight.abs().max().item<double>() == 0) {
    --m;
  }
  return m;
}

}  // namespace

int64_t ApplyEdit(ModelToChange& change, const ModelEdit& e) {
  LoadedModel& model = *change.model;
  Check(change.shared != nullptr, model.dir + " is a plain base model (no sharedllm.json); "
                                 "`sharedllm init` makes a SharedLLM of it");
  CheckEdit(model, e);
  SharedLLM& shared = *change.shared;
  if (e.separate_compressor) shared.SeparateCompressor();
  if (e.gate) shared.AddGate();
  if (e.sink) shared.AddSink(e.sink_logit);
  if (e.injection_layers > 0) {
    shared.SetNumInjectionLayers(e.injection_layers, e.sink_logit, e.inherit_o_scale, e.own_lower);
  }
  if (e.tree_depth > 0) shared.SetTree(e.tree_depth, e.alphas);
  if (e.drop_heads.empty()) return shared.config().num_injection_layers;
  return DropHeads(model, e.drop_heads);
}

void CopyBaseModelFiles(const std::string& from, const std::string& to) {
  namespace fs = std::filesystem;
  for (const auto& entry : fs::directory_iterator(from)) {
    const std::string name = entry.path().filename().string();
    const bool safetensors = name.size() > 12 && name.substr(name.size() - 12) == ".safetensors";
    const bool wanted = name == "config.json" || name == "tokenizer.model" ||
                        name == "generation_config.json" || name == "tokenizer_config.json" ||
                        name == "model.safetensors.index.json" ||
                        (safetensors && name != "sharedllm.safetensors");
    if (wanted) fs::copy_file(entry.path(), fs::path(to) / name, fs::copy_options::overwrite_existing);
  }
}

void EditModel(const std::string& in, const std::string& out, const ModelEdit& edit) {
  namespace fs = std::filesystem;
  // Written back in the dtype it was stored in (the edits themselves run in float32).
  const std::string stored = JoinPath(in, "sharedllm.safetensors");
  Check(FileExists(stored), in + " has no sharedllm.safetensors: not a SharedLLM directory");
  const SafetensorsFile file(stored);
  const auto names = file.names();
  const at::ScalarType dtype = names.empty() ? at::kFloat : file.tensor(names.front()).scalar_type();
  RuntimeOptions runtime;
  runtime.dtype = "float32";
  ModelToChange change = LoadModelToChange(in, runtime);
  const int64_t kept = ApplyEdit(change, edit);
  const auto& model = change.model;
  SharedLLMConfig config = model->shared->config();
  if (kept < config.num_injection_layers) {
    config.num_injection_layers = kept;
    // Every remaining layer reads the copy: a plain separate compressor.
    if (config.separate_layers >= kept) config.separate_layers = 0;
  }
  if (edit.chunk_budget >= 0) config.chunk_budget = edit.chunk_budget;
  config.Validate(model->config.num_hidden_layers);
  fs::create_directories(out);
  Check(fs::canonical(out) != fs::canonical(in), "--out must differ from --model");
  CopyBaseModelFiles(in, out);
  WriteSharedLLMFiles(config, model->lm, out, dtype);
}

}  // namespace sharedllm

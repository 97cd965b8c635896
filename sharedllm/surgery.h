// Model surgery: changes to a SharedLLM's architecture, each applied to a loaded model and written
// out as a new model directory (`sharedllm edit`). The trainer trains what it loads and serving
// never mutates a model, so every architectural step of a recipe is one of these.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "sharedllm/loaded_model.h"

namespace sharedllm {

// One edit; fields left at their defaults change nothing. Applied in the order of the fields.
struct ModelEdit {
  // The lower model gets its own copy of the bottom layers (compressor "separate"), so training
  // it leaves the base model alone. Scores do not change.
  bool separate_compressor = false;
  // A per-head gate on every cross-attention, starting half open with o_proj rescaled: scores do
  // not change.
  bool gate = false;
  // An attention sink on every cross-attention at `sink_logit` (this changes scores: the sink
  // takes a share of each head's attention from the start).
  bool sink = false;
  double sink_logit = 0;  // logit of the sinks `sink` and `injection_layers` add
  // > 0: deepen a bottom injection to this many layers (SharedLLM::SetNumInjectionLayers): the new
  // layers start neutral, or with `inherit_o_scale` s > 0 as their own self-attention heads
  // reading the context at scale s; with `own_lower` they read the base's own lower layers.
  int64_t injection_layers = 0;
  double inherit_o_scale = 0;
  bool own_lower = false;
  // > 0: the context tree's depth and its per-level strides (one per level; both or neither).
  int64_t tree_depth = 0;
  std::vector<int64_t> alphas;
  // Cross-attention heads (decoder layer, head) taken out: their columns of o_proj set to zero.
  // With a bottom injection, top injection layers left with no head add nothing and are removed
  // from the written model (fewer layers encoded, stored and decoded; the same scores).
  std::vector<std::pair<int64_t, int64_t>> drop_heads;
  // >= 0: the most chunks one question reads (SharedLLMConfig::chunk_budget; 0: no limit). Set it
  // to the chunk count the model was trained and measured for. -1 keeps it.
  int64_t chunk_budget = -1;
};

// Applies `edit` to `model` (a SharedLLM) in the order of ModelEdit's fields and returns the
// number of injection layers the written model keeps (fewer than now when drop_heads silences top
// layers). Throws ModelError; everything is checked before anything changes.
int64_t ApplyEdit(ModelToChange& model, const ModelEdit& edit);

// Loads the SharedLLM at `in`, applies `edit`, and writes the result to `out` (created; must
// differ from `in`): the base model's files copied as they are, sharedllm.json and
// sharedllm.safetensors written anew in the dtype the model was stored in.
void EditModel(const std::string& in, const std::string& out, const ModelEdit& edit);

// Copies a model directory's base-model files (config.json, tokenizer files, *.safetensors but
// sharedllm.safetensors, the shard index) from `from` into `to`, which must exist.
void CopyBaseModelFiles(const std::string& from, const std::string& to);

}  // namespace sharedllm

// SharedLLMConfig: the hyper-parameters SharedLLM adds to a base checkpoint, stored as
// `sharedllm.json` next to config.json (and the new weights in `sharedllm.safetensors`).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sharedllm {

struct SharedLLMConfig {
  int64_t num_injection_layers = 4;  // M: lower-model depth = number of cross-attention layers
  std::string injection = "bottom";  // which upper layers cross-attend: bottom | top | interleaved
  int64_t chunk_size = 1024;         // C: tokens per chunk (tree root), C <= window
  int64_t tree_depth = 3;            // h: levels below the root
  std::vector<int64_t> alphas = {16, 8, 4};  // downsampling stride per level 1..h (β = 8 for h=3)
  std::string selection = "first";   // which position of each stride block is kept: first|last|mean
  bool search = true;                // query-aware child choice; off: always the right child
  // The vectors the search compares (final-normed layer-1 outputs): "last" — at the node's and the
  // question's last token (the paper); "mean" — averaged over all their tokens.
  std::string search_vector = "last";
  bool split_noise = true;           // training: split at floor(l/2 - eps), eps ~ N(0, (l/d)^2)
  double noise_divisor = 5.0;        // d: 5 for language modelling, 10 for instruction tuning
  bool chunk_positions = true;       // rotary positions in cross-attention: chunk i -> i, query -> n
  // shared: the lower model is the base model's own bottom M layers (no copy). separate: it is a
  // copy of them (`compressor.*` in sharedllm.safetensors), so training the compressor leaves the
  // base model, and with it the model truncated to its window, unchanged.
  std::string compressor = "shared";
  // With compressor "separate": how many of the M lower layers the copy holds, bottom first; the
  // lower layers above them are the base model's own (their keys and values come from a second
  // lower pass, through the base's own bottom layers), so an injection layer can read the very
  // keys its own self-attention heads were trained on while those below read the trained copy.
  // 0: the copy holds all M.
  int64_t separate_layers = 0;
  // A per-head gate on each cross-attention's output, sigmoid(gate_proj(norm(h))): lets a token
  // take nothing from the context (softmax attention alone always injects a mix of values).
  bool gate = false;
  // A per-head attention sink in each cross-attention: a learned logit for a key of zero value, so
  // that a head whose context keys all score low injects (almost) nothing.
  bool sink = false;
  // The most chunks one question reads (retrieval/lexical.h picks them when a document or
  // collection has more): the chunk count the model was trained and measured for, so that a
  // question over any length reads a context of a size the model knows. 0: no limit (every chunk).
  int64_t chunk_budget = 0;

  static SharedLLMConfig FromJsonText(const std::string& text);
  // `<dir>/sharedllm.json`; throws ModelError.
  static SharedLLMConfig Load(const std::string& dir);
  std::string ToJsonText() const;
  // Throws ModelError when inconsistent with itself or with a base model of `num_layers` layers.
  void Validate(int64_t num_layers) const;

  // Layers the separate compressor holds (0 when shared).
  int64_t CopiedLayers() const;
  // True when the copy holds fewer than M layers (separate_layers 0 < K < M): an encode runs the
  // copy's K layers, then the base's own M.
  bool SplitLower() const;
  // Lower-model layers one encode runs: M, or when SplitLower the copy's K plus the base's own M.
  int64_t LowerLayerPasses() const;
  // The upper-model layer indices that cross-attend, in order; the j-th reads lower layer j.
  std::vector<int64_t> InjectionLayers(int64_t num_layers) const;
  // Tokens of context per kept position, for full-size nodes: e.g. 8 for (16, 8, 4).
  double CompressionRatio() const;
};

}  // namespace sharedllm

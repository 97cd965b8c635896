// SharedLLMConfig: the hyper-parameters SharedLLM adds to a base checkpoint, stored as
// `sharedllm.json` next to config.json (and the new weights in `sharedllm.safetensors`).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

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
  bool lower_trainable = false;      // training: the lower model trains too
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
  // 0: the sink's logit is fixed. N > 0: it is raised by log(n / N), n the number of context keys
  // (positions of selected tree nodes) the query reads, so that a head whose keys all score alike
  // takes the same share from a context of any length (a fixed sink's share shrinks as n grows:
  // longer contexts inject more of what no key asked for). Needs `sink`. Empty (JSON 0 or absent):
  // every sink fixed; one value: every injection layer's; M values: one per injection layer, in
  // InjectionLayers order, 0 keeping that layer's sink fixed.
  std::vector<double> sink_keys_ref;
  // The length-aware sink's offset is slope * log(n / N): 1 keeps a head's share of alike keys the
  // same at any n, 0 is a fixed sink, in between a share that grows more slowly with n than a fixed
  // sink's. Empty: 1 everywhere; one value or one per injection layer, as sink_keys_ref. Needs
  // sink_keys_ref.
  std::vector<double> sink_keys_slope;
  // false: the length-aware sink counts the query's context keys, n. true: it counts the query's
  // effective keys, n_eff = sum_j e^(score_j - max score) per head, and only above N: the offset
  // is slope * max(0, log(n_eff / N)). Keys that score alike give n_eff = n (the same offset),
  // one key far above the rest gives n_eff near 1 (no offset), so a match is read as with a fixed
  // sink at any length. Needs sink_keys_ref.
  bool sink_keys_effective = false;
  // 0: every cross-attention query reads all its context keys. K > 0: each query (per head) reads
  // only its K highest-scoring keys (and the sink), so a context longer than K keys adds no more
  // than K keys' worth of values, the ones most like the query, instead of a mix that widens with
  // the length. An inference-time read switch (`--ablate top_k=K`); the trainer can train with it.
  int64_t context_top_k = 0;
  // The j-th injection layer's sink_keys_ref (0: fixed) and slope (1 when not given).
  double SinkKeysRef(int64_t j) const;
  double SinkKeysSlope(int64_t j) const;

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

// sink_keys_ref from JSON: a number (0: none) or an array of them; throws ModelError otherwise.
std::vector<double> SinkKeysRefFromJson(const nlohmann::json& value);
// The inverse: 0 when empty, a number for one value, an array for more.
nlohmann::json SinkKeysRefToJson(const std::vector<double>& refs);
// One value per injection layer from JSON (`name`'s): a number (every layer) or an array of them;
// throws ModelError otherwise. PerLayerToJson: a number for one value, else an array.
std::vector<double> PerLayerFromJson(const nlohmann::json& value, const std::string& name);
nlohmann::json PerLayerToJson(const std::vector<double>& values);

}  // namespace sharedllm

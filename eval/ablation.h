// Evaluation-time ablations of a trained SharedLLM (`sharedllm eval ... --ablate k=v,...`): the
// switches of sharedllm.json that change only how the context is read at inference, overriding the
// loaded configuration. Switches that change parameters or training (injection layers, lower-model
// depth, split noise, a trainable lower model) are refused: they need `sharedllm init` + training.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "sharedllm/config.h"

namespace sharedllm {

// Parsed `--ablate` value, in the order given: (key, value) with canonical keys.
using Ablation = std::vector<std::pair<std::string, std::string>>;

// Keys (value syntax):
//   search=on|off            query-aware child choice
//   chunk_positions=on|off   chunk-level rotary positions in cross-attention
//   selection=first|last|mean  which position of each downsampling block is kept
//   depth=N                  tree height h; without alphas the per-node kept positions stay as
//                            trained (alphas truncated, or extended by halving, at least 1)
//   alphas=A/B/C             downsampling stride per level (one per level of the tree)
//   beta=N                   compression ratio: scales the alphas (must give whole strides)
// Throws ModelError on an unknown key, a key that needs retraining, a malformed or repeated item.
Ablation ParseAblation(const std::string& spec);

// `base` with `ablation` applied (validated against a model of `num_layers` layers).
SharedLLMConfig ApplyAblation(const SharedLLMConfig& base, const Ablation& ablation, int64_t num_layers);

// "k=v,k=v" (canonical), "" for none.
std::string AblationString(const Ablation& ablation);

}  // namespace sharedllm

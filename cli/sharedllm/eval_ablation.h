// `--ablate k=v,...` of the eval commands: evaluation-time overrides of sharedllm.json
// (eval/ablation.h), recorded in the results JSON so that recipes/make_results.py can tabulate them.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "eval/ablation.h"
#include "sharedllm/loaded_model.h"

namespace sharedllm::cli {

inline constexpr const char* kAblateHelp =
    "evaluation-time ablation, e.g. search=off,chunk_positions=off,selection=mean,depth=2 "
    "(keys: search, search_vector=last|mean, chunk_positions, selection, depth, alphas=A/B/C, "
    "beta); switches that need retraining are refused";

// Rebuilds model.shared with `ablation` applied (same weights) and records "ablation" (the
// canonical string, "" for none) and "sharedllm_config" (what was evaluated) in `j`.
void ApplyAblationFlag(LoadedModel& model, const Ablation& ablation, nlohmann::json& j);

}  // namespace sharedllm::cli

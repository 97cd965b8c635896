#include "cli/sharedllm/eval_ablation.h"

#include "llm/errors.h"

namespace sharedllm::cli {

void ApplyAblationFlag(LoadedModel& model, const Ablation& ablation, nlohmann::json& j) {
  Check(model.shared != nullptr, "evaluation needs a SharedLLM model (sharedllm.json)");
  if (!ablation.empty()) {
    // Same CausalLM: the cross-attention layers exist already and keep their trained weights.
    model.shared = std::make_shared<SharedLLM>(
        model.lm, ApplyAblation(model.shared->config(), ablation, model.config.num_hidden_layers));
  }
  j["ablation"] = AblationString(ablation);
  j["sharedllm_config"] = nlohmann::json::parse(model.shared->config().ToJsonText());
}

}  // namespace sharedllm::cli

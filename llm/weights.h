// Moving parameters between modules and checkpoints. Loading is strict: every missing, unexpected
// or mis-shaped tensor is reported at once, with a hint, before anything is half-loaded.
#pragma once

#include <functional>
#include <string>

#include <torch/nn/module.h>

#include "llm/safetensors.h"

namespace sharedllm {

using NameFilter = std::function<bool(const std::string&)>;

// Copies every parameter of `module` accepted by `filter` (all when null) from `reader`, converting
// dtype. Throws ModelError listing all problems: parameters the reader lacks, tensors of the reader
// that no accepted parameter takes (except known-ignorable ones such as rotary_emb.inv_freq), and
// shape mismatches. `source` names the checkpoint in messages; `ignore` names further tensors the
// checkpoint may hold that the model does not use (e.g. lm_head.weight of a tied model).
void LoadParameters(torch::nn::Module& module, const CheckpointReader& reader,
                    const std::string& source, const NameFilter& filter = nullptr,
                    const NameFilter& ignore = nullptr);

// The parameters of `module` accepted by `filter`, in registration order, as `dtype`.
NamedTensors CollectParameters(const torch::nn::Module& module, const NameFilter& filter = nullptr,
                               c10::optional<at::ScalarType> dtype = c10::nullopt);

}  // namespace sharedllm

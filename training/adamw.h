// AdamW (Loshchilov & Hutter) with decoupled weight decay, and its state as named tensors so a
// checkpoint (safetensors) restores it exactly. Written out rather than torch::optim::AdamW so the
// state format is ours and the update is visible.
#pragma once

#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "llm/safetensors.h"

namespace sharedllm {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.1;  // applied to matrices only (not norms, biases)
};

class AdamW {
 public:
  // Parameters in a fixed order with their names (checkpoint keys) and per-group lr scale.
  struct Param {
    std::string name;
    at::Tensor tensor;
    double lr_scale = 1.0;   // e.g. a separate learning rate for the new cross-attention
    bool decay = true;
  };
  AdamW(std::vector<Param> params, AdamWOptions options);

  // One update with learning rate `lr` (times each parameter's lr_scale), from current grads.
  void Step(double lr);
  void ZeroGrad();
  // Global L2 norm of all gradients, after scaling them down to at most `max_norm` (0: no clip).
  double ClipGradNorm(double max_norm);

  int64_t steps() const { return step_; }
  NamedTensors State() const;                  // exp_avg.* and exp_avg_sq.* plus "step"
  void LoadState(const CheckpointReader& reader);  // throws ModelError on a mismatch
  const std::vector<Param>& params() const { return params_; }

 private:
  std::vector<Param> params_;
  std::vector<at::Tensor> m_, v_;
  AdamWOptions options_;
  int64_t step_ = 0;
};

}  // namespace sharedllm

// Runtime options of the model library (how to run, not what the model is) and the model facade:
// loading a checkpoint directory into an immutable, shareable LoadedModel.
#pragma once

#include <memory>
#include <string>

#include "model/config.h"
#include "model/llama.h"
#include "model/sharedllm.h"
#include "model/tokenizer.h"

namespace sharedllm {

struct RuntimeOptions {
  int threads = 0;                 // intra-op threads; 0: all cores (libtorch defaults to 1 here)
  std::string dtype = "float32";   // float32 | bfloat16 | float16 | auto (config's torch_dtype)
  std::string device = "cpu";      // cpu | cuda | cuda:N
};

// Applies the thread count (idempotent). Called by LoadModel.
void InitRuntime(const RuntimeOptions& options);
at::ScalarType ParseDtype(const std::string& name, const ModelConfig& config);

// Weights are shared and never mutated after loading; per-request state lives in KVCache.
struct LoadedModel {
  std::string dir;
  ModelConfig config;
  CausalLM lm{nullptr};
  std::shared_ptr<SharedLLM> shared;  // set when the directory has sharedllm.json; shares lm
  std::shared_ptr<const Tokenizer> tokenizer;  // null when the directory has no tokenizer.model
};

// Loads config.json, the safetensors weights (single or sharded) and tokenizer.model from `dir`;
// with sharedllm.json also sharedllm.safetensors, giving a SharedLLM over the same weights.
// Throws ModelError with every problem found.
std::shared_ptr<LoadedModel> LoadModel(const std::string& dir, const RuntimeOptions& options);

// Writes config.json and model.safetensors (as `dtype`) for `lm` into `dir` (created if needed),
// without SharedLLM parameters.
void SaveModel(CausalLM& lm, const std::string& dir, at::ScalarType dtype = at::kFloat);
// Writes sharedllm.json and sharedllm.safetensors (the cross_attn.* parameters) into `dir`.
void SaveSharedLLM(SharedLLM& model, const std::string& dir, at::ScalarType dtype = at::kFloat);

}  // namespace sharedllm

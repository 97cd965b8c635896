// Runtime options of the LLaMA core (how to run, not what the model is), and reading and writing
// a Hugging Face checkpoint directory as a CausalLM.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "llm/config.h"
#include "llm/llama.h"
#include "llm/tokenizer.h"

namespace sharedllm {

struct RuntimeOptions {
  int threads = 0;                 // intra-op threads; 0: all cores (libtorch defaults to 1 here)
  std::string dtype = "float32";   // float32 | bfloat16 | float16 | auto (config's torch_dtype)
  std::string device = "cpu";      // cpu | cuda | cuda:N
};

// Applies the thread count (idempotent). Called by LoadCausalLM.
void InitRuntime(const RuntimeOptions& options);
at::ScalarType ParseDtype(const std::string& name, const ModelConfig& config);

// A checkpoint directory's base model: config.json and the safetensors weights (single or
// sharded), built on the CPU in the dtype `options` asks for (float16 on the CPU: refused, or with
// "auto" run as float32), filled from the mapped file. Left on the CPU and trainable: the caller
// adds what it builds on the base, then moves it (FinishLoading). Throws ModelError with every
// problem found.
CausalLM LoadCausalLM(const std::string& dir, const RuntimeOptions& options);
// Moves `lm` to `options.device` and makes it an inference model (eval mode, no gradients).
void FinishLoading(CausalLM& lm, const RuntimeOptions& options);

// Writes config.json and model.safetensors (as `dtype`) for `lm` into `dir` (created if needed),
// leaving out the parameters `skip` names (e.g. those a model built on the base adds).
void SaveCausalLM(CausalLM& lm, const std::string& dir, at::ScalarType dtype = at::kFloat,
                  const std::function<bool(const std::string&)>& skip = nullptr);

}  // namespace sharedllm

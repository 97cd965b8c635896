// The model facade: a checkpoint directory loaded for serving — the base model, and with
// sharedllm.json the SharedLLM built on it — and writing a SharedLLM's own files.
#pragma once

#include <memory>
#include <string>

#include "llm/config.h"
#include "llm/llama.h"
#include "llm/runtime.h"
#include "llm/tokenizer.h"
#include "sharedllm/sharedllm.h"

namespace sharedllm {

// Weights are shared and never mutated after loading; per-request state lives in KVCache.
struct LoadedModel {
  std::string dir;
  ModelConfig config;
  CausalLM lm{nullptr};
  // Set when the directory has sharedllm.json; shares lm. Const: readers only encode, search and
  // build contexts (ModelToChange is the way to a writable one).
  std::shared_ptr<const SharedLLM> shared;
  std::shared_ptr<const Tokenizer> tokenizer;  // null when the directory has no tokenizer.model
};

// Loads config.json, the safetensors weights (single or sharded) and tokenizer.model from `dir`;
// with sharedllm.json also sharedllm.safetensors, giving a SharedLLM over the same weights.
// Throws ModelError with every problem found.
std::shared_ptr<LoadedModel> LoadModel(const std::string& dir, const RuntimeOptions& options);

// A model loaded to be changed — surgery (sharedllm/surgery.h) and the trainer's choice of what
// trains: LoadModel's result with its SharedLLM writable. Nothing that serves holds one.
struct ModelToChange {
  std::shared_ptr<LoadedModel> model;
  std::shared_ptr<SharedLLM> shared;  // model->shared, writable; null for a plain base model
};
ModelToChange LoadModelToChange(const std::string& dir, const RuntimeOptions& options);

// Writes config.json and model.safetensors (as `dtype`) for `lm`'s base model into `dir`, without
// the parameters SharedLLM adds.
void SaveModel(CausalLM& lm, const std::string& dir, at::ScalarType dtype = at::kFloat);
// Writes sharedllm.json (`config`) and sharedllm.safetensors: the SharedLLM parameters of `lm`
// that belong to a model of `config` (the cross-attention of its injection layers, its
// compressor's layers), as `dtype`. Surgery writes a model whose config dropped layers this way.
void WriteSharedLLMFiles(const SharedLLMConfig& config, const CausalLM& lm, const std::string& dir,
                         at::ScalarType dtype);
// Writes `model`'s sharedllm.json and sharedllm.safetensors into `dir`.
void SaveSharedLLM(const SharedLLM& model, const std::string& dir, at::ScalarType dtype = at::kFloat);

}  // namespace sharedllm

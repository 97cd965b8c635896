#include "sharedllm/loaded_model.h"

#include <algorithm>
#include <filesystem>

#include "llm/errors.h"
#include "llm/file_util.h"
#include "llm/safetensors.h"
#include "llm/weights.h"

namespace sharedllm {

ModelToChange LoadModelToChange(const std::string& dir, const RuntimeOptions& options) {
  ModelToChange result;
  auto out = result.model = std::make_shared<LoadedModel>();
  out->dir = dir;
  out->lm = LoadCausalLM(dir, options);
  out->config = out->lm->config;
  if (FileExists(JoinPath(dir, "sharedllm.json"))) {
    out->shared = result.shared = std::make_shared<SharedLLM>(out->lm, SharedLLMConfig::Load(dir));
    const std::string path = JoinPath(dir, "sharedllm.safetensors");
    if (!FileExists(path)) {
      throw ModelError(dir + " has sharedllm.json but no sharedllm.safetensors (hint: `sharedllm "
                             "init` writes both)");
    }
    LoadParameters(*out->lm, CheckpointReader::FromFile(path), path, IsSharedLLMParameter);
  }
  FinishLoading(out->lm, options);
  out->tokenizer = LoadTokenizer(dir);
  if (out->tokenizer && out->tokenizer->vocab_size() > out->config.vocab_size) {
    throw ModelError(dir + ": tokenizer.model has " + std::to_string(out->tokenizer->vocab_size()) +
                     " pieces but the model only " + std::to_string(out->config.vocab_size));
  }
  return result;
}

std::shared_ptr<LoadedModel> LoadModel(const std::string& dir, const RuntimeOptions& options) {
  return LoadModelToChange(dir, options).model;
}

void SaveModel(CausalLM& lm, const std::string& dir, at::ScalarType dtype) {
  SaveCausalLM(lm, dir, dtype, IsSharedLLMParameter);
}

void WriteSharedLLMFiles(const SharedLLMConfig& config, const CausalLM& lm, const std::string& dir,
                         at::ScalarType dtype) {
  const auto layers = config.InjectionLayers(lm->config.num_hidden_layers);
  const int64_t copied = config.CopiedLayers();
  const auto belongs = [&](const std::string& name) {
    if (!IsSharedLLMParameter(name)) return false;
    if (IsCrossAttentionParameter(name)) {
      return std::find(layers.begin(), layers.end(), DecoderLayerOf(name)) != layers.end();
    }
    return CompressorLayerOf(name) < copied;
  };
  std::filesystem::create_directories(dir);
  WriteFileAtomic(JoinPath(dir, "sharedllm.json"), config.ToJsonText());
  WriteSafetensors(JoinPath(dir, "sharedllm.safetensors"), CollectParameters(*lm, belongs, dtype),
                   {{"format", "pt"}});
}

void SaveSharedLLM(const SharedLLM& model, const std::string& dir, at::ScalarType dtype) {
  WriteSharedLLMFiles(model.config(), model.lm(), dir, dtype);
}

}  // namespace sharedllm

#include "model/runtime.h"

#include <filesystem>

#include <thread>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "model/errors.h"
#include "model/file_util.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace sharedllm {

void InitRuntime(const RuntimeOptions& options) {
  int threads = options.threads;
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (at::get_num_threads() != threads) at::set_num_threads(threads);
}

at::ScalarType ParseDtype(const std::string& name, const ModelConfig& config) {
  const std::string n = name == "auto" ? config.torch_dtype : name;
  if (n == "float32" || n == "fp32" || n == "f32") return at::kFloat;
  if (n == "bfloat16" || n == "bf16") return at::kBFloat16;
  if (n == "float16" || n == "fp16" || n == "f16") return at::kHalf;
  throw ModelError("unknown dtype '" + name + "' (float32, bfloat16, float16, auto)");
}

std::shared_ptr<LoadedModel> LoadModel(const std::string& dir, const RuntimeOptions& options) {
  InitRuntime(options);
  auto out = std::make_shared<LoadedModel>();
  out->dir = dir;
  out->config = ModelConfig::Load(dir);
  at::ScalarType dtype = ParseDtype(options.dtype, out->config);
  const at::Device device(options.device);
  if (dtype == at::kHalf && device.is_cpu()) {
    // libtorch 1.13 has no float16 matmul on the CPU. A float16 checkpoint (e.g. Llama-2) runs
    // in float32 with --dtype auto; an explicit float16 request is refused here, not mid-forward.
    if (options.dtype != "auto") {
      throw ModelError("float16 does not run on the CPU in this libtorch; use --dtype float32 or "
                       "bfloat16 (or auto)");
    }
    dtype = at::kFloat;
  }
  CheckpointReader reader(dir);
  // Build on the CPU in the target dtype, fill from the mapped file, then move once.
  out->lm = CausalLM(out->config, at::TensorOptions().dtype(dtype));
  // Hugging Face ties lm_head to embed_tokens even when the file also carries an lm_head.
  const bool tied = out->config.tie_word_embeddings;
  LoadParameters(*out->lm, reader, dir, nullptr,
                 [tied](const std::string& name) { return tied && name == "lm_head.weight"; });
  if (FileExists(JoinPath(dir, "sharedllm.json"))) {
    out->shared = std::make_shared<SharedLLM>(out->lm, SharedLLMConfig::Load(dir));
    const std::string path = JoinPath(dir, "sharedllm.safetensors");
    if (!FileExists(path)) {
      throw ModelError(dir + " has sharedllm.json but no sharedllm.safetensors (hint: `sharedllm "
                             "init` writes both)");
    }
    LoadParameters(*out->lm, CheckpointReader::FromFile(path), path, IsSharedLLMParameter);
  }
  if (!device.is_cpu()) out->lm->to(device);
  out->lm->eval();
  for (auto& p : out->lm->parameters()) p.set_requires_grad(false);
  out->tokenizer = LoadTokenizer(dir);
  if (out->tokenizer && out->tokenizer->vocab_size() > out->config.vocab_size) {
    throw ModelError(dir + ": tokenizer.model has " + std::to_string(out->tokenizer->vocab_size()) +
                     " pieces but the model only " + std::to_string(out->config.vocab_size));
  }
  return out;
}

void SaveModel(CausalLM& lm, const std::string& dir, at::ScalarType dtype) {
  std::filesystem::create_directories(dir);
  ModelConfig config = lm->config;
  config.torch_dtype = dtype == at::kBFloat16 ? "bfloat16" : dtype == at::kHalf ? "float16" : "float32";
  WriteFileAtomic(JoinPath(dir, "config.json"), config.ToJsonText());
  WriteCheckpoint(dir, CollectParameters(
                          *lm, [](const std::string& n) { return !IsSharedLLMParameter(n); }, dtype));
}

void SaveSharedLLM(SharedLLM& model, const std::string& dir, at::ScalarType dtype) {
  std::filesystem::create_directories(dir);
  WriteFileAtomic(JoinPath(dir, "sharedllm.json"), model.config().ToJsonText());
  WriteSafetensors(JoinPath(dir, "sharedllm.safetensors"),
                   CollectParameters(*model.lm(), IsSharedLLMParameter, dtype), {{"format", "pt"}});
}

}  // namespace sharedllm

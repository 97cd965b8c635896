#include "llm/runtime.h"

#include <filesystem>

#include <thread>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "llm/errors.h"
#include "llm/file_util.h"
#include "llm/safetensors.h"
#include "llm/weights.h"

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

CausalLM LoadCausalLM(const std::string& dir, const RuntimeOptions& options) {
  InitRuntime(options);
  const ModelConfig config = ModelConfig::Load(dir);
  at::ScalarType dtype = ParseDtype(options.dtype, config);
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
  CausalLM lm(config, at::TensorOptions().dtype(dtype));
  // Hugging Face ties lm_head to embed_tokens even when the file also carries an lm_head.
  const bool tied = config.tie_word_embeddings;
  LoadParameters(*lm, reader, dir, nullptr,
                 [tied](const std::string& name) { return tied && name == "lm_head.weight"; });
  return lm;
}

void FinishLoading(CausalLM& lm, const RuntimeOptions& options) {
  const at::Device device(options.device);
  if (!device.is_cpu()) lm->to(device);
  lm->eval();
  for (auto& p : lm->parameters()) p.set_requires_grad(false);
}

void SaveCausalLM(CausalLM& lm, const std::string& dir, at::ScalarType dtype,
                  const std::function<bool(const std::string&)>& skip) {
  std::filesystem::create_directories(dir);
  ModelConfig config = lm->config;
  config.torch_dtype = dtype == at::kBFloat16 ? "bfloat16" : dtype == at::kHalf ? "float16" : "float32";
  WriteFileAtomic(JoinPath(dir, "config.json"), config.ToJsonText());
  WriteCheckpoint(dir, CollectParameters(
                          *lm, [&skip](const std::string& n) { return !skip || !skip(n); }, dtype));
}

}  // namespace sharedllm

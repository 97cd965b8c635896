// sharedllm-bench: forward (prefill) and decode throughput of the LLaMA core for a tiny and a
// ~10 M-parameter configuration, next to this machine's measured matmul peak. Prints one JSON
// object. Not a test: numbers depend on the machine; docs/PERFORMANCE.md records them.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>

#include "llm/decoder.h"
#include "llm/errors.h"
#include "llm/file_util.h"
#include "llm/tokenizer.h"
#include "sharedllm/loaded_model.h"
#include "cli/flags/flags.h"

namespace sharedllm {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

template <typename F>
double MedianSeconds(int repeats, F&& fn) {
  fn();  // warm-up
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    const auto start = Clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// GFLOP/s of an n x n x n matmul in `dtype`.
double MatmulGflops(int64_t n, at::ScalarType dtype, int repeats) {
  auto a = at::randn({n, n}).to(dtype), b = at::randn({n, n}).to(dtype);
  const double s = MedianSeconds(repeats, [&] { at::mm(a, b); });
  return 2.0 * n * n * n / s / 1e9;
}

ModelConfig TinyConfig() {
  ModelConfig c;
  c.vocab_size = 1000;
  c.hidden_size = 64;
  c.intermediate_size = 176;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.max_position_embeddings = 1024;
  return c;
}

ModelConfig TenMConfig() {
  ModelConfig c;
  c.vocab_size = 8000;
  c.hidden_size = 256;
  c.intermediate_size = 768;
  c.num_hidden_layers = 8;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 4;
  c.head_dim = 32;
  c.max_position_embeddings = 1024;
  return c;
}

// Matmul FLOPs of one token at context length `ctx`: weights (2 per multiply-add, lm_head
// included, embeddings excluded) plus attention scores and weighted sum.
double FlopsPerToken(const ModelConfig& c, double ctx) {
  const double weights = c.NumParameters() - c.vocab_size * c.hidden_size *
                                                 (c.tie_word_embeddings ? 0.0 : 1.0);
  return 2.0 * weights + 4.0 * c.num_hidden_layers * c.num_attention_heads * c.head_dim * ctx;
}

json BenchModel(const std::string& name, ModelConfig config, at::ScalarType dtype, int64_t prompt,
                int64_t decode, int repeats, double peak) {
  CausalLM lm(config, at::TensorOptions().dtype(dtype));
  lm->InitRandom(1, 0.02);
  lm->eval();
  Decoder decoder(lm);
  std::vector<int64_t> ids(prompt);
  for (int64_t i = 0; i < prompt; ++i) ids[i] = (i * 7919) % config.vocab_size;
  c10::InferenceMode guard;
  const double prefill_s = MedianSeconds(repeats, [&] {
    KVCache cache = lm->NewCache();
    decoder.Prefill(ids, cache);
  });
  const double decode_s = MedianSeconds(repeats, [&] {
    KVCache cache = lm->NewCache();
    decoder.Prefill(ids, cache);
    const auto start = Clock::now();
    for (int64_t i = 0; i < decode; ++i) decoder.DecodeOneToken(ids[i % prompt], cache);
    return std::chrono::duration<double>(Clock::now() - start).count();
  }) - prefill_s;
  const double prefill_flops = FlopsPerToken(config, prompt / 2.0) * prompt;
  const double decode_flops = FlopsPerToken(config, prompt + decode / 2.0) * decode;
  const double prefill_gflops = prefill_flops / prefill_s / 1e9;
  const double decode_gflops = decode_flops / decode_s / 1e9;
  return {{"config", name},
          {"dtype", c10::toString(dtype)},
          {"parameters", config.NumParameters()},
          {"prompt_tokens", prompt},
          {"decode_tokens", decode},
          {"prefill_seconds", prefill_s},
          {"prefill_tokens_per_second", prompt / prefill_s},
          {"prefill_gflops", prefill_gflops},
          {"prefill_fraction_of_peak", prefill_gflops / peak},
          {"decode_seconds", decode_s},
          {"decode_tokens_per_second", decode / decode_s},
          {"decode_gflops", decode_gflops},
          {"decode_fraction_of_peak", decode_gflops / peak}};
}

// Encode time of `tokenizer` on `text` repeated (and cut) to each size in MB: what an upload of
// that size costs before ingestion starts.
json BenchTokenizer(const Tokenizer& tokenizer, const std::string& text,
                    const std::vector<double>& sizes_mb, int repeats) {
  json points = json::array();
  for (double mb : sizes_mb) {
    const size_t bytes = static_cast<size_t>(mb * 1024 * 1024);
    std::string input;
    input.reserve(bytes + text.size());
    while (input.size() < bytes) input += text;
    input.resize(bytes);
    size_t tokens = 0;
    const double seconds = MedianSeconds(repeats, [&] { tokens = tokenizer.Encode(input).size(); });
    points.push_back({{"megabytes", mb}, {"bytes", bytes}, {"tokens", tokens}, {"seconds", seconds},
                      {"megabytes_per_second", mb / seconds}});
  }
  return points;
}

}  // namespace
}  // namespace sharedllm

int main(int argc, char** argv) {
  using namespace sharedllm;
  int64_t threads = 0, prompt = 256, decode = 64, repeats = 5, matmul_n = 1024;
  std::string tokenizer_dir, text_file = "docs/examples/passkey-document.txt", sizes = "0.5,1,2";
  cli::FlagSet flags("sharedllm-bench [--threads N] [--prompt N] [--decode N] [--repeats N] | "
                     "--tokenizer DIR [--text F] [--sizes-mb 0.5,1,2]",
                     "Measures matmul peak (fp32, bf16) and the model's prefill/decode throughput\n"
                     "for a tiny and a ~10M-parameter config; prints JSON. Medians of --repeats.\n"
                     "With --tokenizer: the tokenizer's encode time on --text repeated to each size.");
  flags.String("tokenizer", &tokenizer_dir, "model directory whose tokenizer.model to time instead");
  flags.String("text", &text_file, "text repeated to each size (with --tokenizer)");
  flags.String("sizes-mb", &sizes, "input sizes in MB, comma-separated (with --tokenizer)");
  flags.Int("threads", &threads, "intra-op threads, 0 = all cores");
  flags.Int("prompt", &prompt, "prompt tokens for prefill");
  flags.Int("decode", &decode, "tokens decoded one by one after the prompt");
  flags.Int("repeats", &repeats, "timed repetitions (after one warm-up)");
  flags.Int("matmul-n", &matmul_n, "size of the square matmul for the peak");
  if (int rc = flags.Parse(std::vector<std::string>(argv + 1, argv + argc)); rc >= 0) return rc;
  if (!tokenizer_dir.empty()) {
    const auto tokenizer = LoadTokenizer(tokenizer_dir);
    Check(tokenizer != nullptr, tokenizer_dir + " has no tokenizer.model");
    const json out = {{"tokenizer", tokenizer_dir}, {"text", text_file},
                      {"encode", BenchTokenizer(*tokenizer, ReadTextFile(text_file),
                                                cli::ParseDoubleList(sizes), static_cast<int>(repeats))}};
    std::cout << out.dump(2) << std::endl;
    return 0;
  }
  RuntimeOptions runtime;
  runtime.threads = static_cast<int>(threads);
  InitRuntime(runtime);
  const int r = static_cast<int>(repeats);
  const double peak_f32 = MatmulGflops(matmul_n, at::kFloat, r);
  const double peak_bf16 = MatmulGflops(matmul_n, at::kBFloat16, r);
  json out = {{"threads", at::get_num_threads()},
              {"matmul_n", matmul_n},
              {"matmul_peak_gflops", {{"float32", peak_f32}, {"bfloat16", peak_bf16}}},
              {"models", json::array()}};
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    const double peak = dtype == at::kFloat ? peak_f32 : peak_bf16;
    out["models"].push_back(BenchModel("tiny", TinyConfig(), dtype, prompt, decode, r, peak));
    out["models"].push_back(BenchModel("10m", TenMConfig(), dtype, prompt, decode, r, peak));
  }
  std::cout << out.dump(2) << std::endl;
  return 0;
}

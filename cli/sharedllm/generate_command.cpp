#include <cstdio>
#include <iostream>

#include "llm/decoder.h"
#include "llm/errors.h"
#include "cli/sharedllm/commands.h"

namespace sharedllm::cli {

int GenerateCommand(const Args& args) {
  std::string model_dir, prompt;
  int64_t max_tokens = 64, top_k = 0, seed = 0;
  double temperature = 0.0, top_p = 1.0;
  bool no_bos = false, quiet = false;
  std::vector<std::string> stop;
  RuntimeFlags runtime;
  FlagSet flags("sharedllm generate --model DIR --prompt TEXT [--max-tokens N] [--temperature T] "
                "[--seed S]",
                "Generates text after PROMPT with the model in DIR and streams it to stdout.\n"
                "Statistics (prompt tokens, time to first token, tokens/s) go to stderr.");
  flags.String("model", &model_dir, "model directory (config.json, *.safetensors, tokenizer.model)");
  flags.String("prompt", &prompt, "text to continue");
  flags.Int("max-tokens", &max_tokens, "tokens to generate at most");
  flags.Double("temperature", &temperature, "sampling temperature; 0 = greedy");
  flags.Int("top-k", &top_k, "sample among the k most likely tokens; 0 = all");
  flags.Double("top-p", &top_p, "nucleus sampling probability mass");
  flags.Int("seed", &seed, "random seed for sampling");
  flags.List("stop", &stop, "stop before this string");
  flags.Bool("no-bos", &no_bos, "do not prepend the BOS token");
  flags.Bool("quiet", &quiet, "no statistics on stderr");
  runtime.Register(flags);
  flags.Require("model");
  flags.Require("prompt");
  if (int rc = flags.Parse(args); rc >= 0) return rc;
  Check(max_tokens > 0, "--max-tokens must be positive");

  auto model = LoadModel(model_dir, runtime.Get());
  Check(model->tokenizer != nullptr,
        model_dir + " has no tokenizer.model; `generate` needs one (use `score --token-ids`)");
  std::vector<int64_t> ids;
  if (!no_bos && model->tokenizer->bos_id() >= 0) ids.push_back(model->tokenizer->bos_id());
  for (int64_t id : model->tokenizer->Encode(prompt)) ids.push_back(id);

  SamplingOptions sampling;
  sampling.max_tokens = max_tokens;
  sampling.temperature = temperature;
  sampling.top_k = top_k;
  sampling.top_p = top_p;
  sampling.seed = static_cast<uint64_t>(seed);
  sampling.stop = stop;
  Decoder decoder(model->lm);
  auto result = decoder.Generate(ids, sampling, model->tokenizer.get(), [](const std::string& d) {
    std::fwrite(d.data(), 1, d.size(), stdout);
    std::fflush(stdout);
    return true;
  });
  std::cout << std::endl;
  if (!quiet) {
    const double tps = result.tokens.size() > 1 && result.decode_seconds > 0
                           ? (result.tokens.size() - 1) / result.decode_seconds : 0.0;
    std::fprintf(stderr,
                 "[prompt %lld tokens, generated %zu, finish %s, ttft %.3f s, %.1f tokens/s]\n",
                 static_cast<long long>(result.prompt_tokens), result.tokens.size(),
                 FinishReasonName(result.finish), result.prefill_seconds, tps);
  }
  return 0;
}

}  // namespace sharedllm::cli

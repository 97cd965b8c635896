
#include <cstdio>
#include <fstream>

#include "llm/errors.h"
#include "llm/file_util.h"
#include "cli/sharedllm/commands.h"

namespace sharedllm::cli {

int NewCommand(const Args& args) {
  std::string config_path, out_dir, tokenizer_path, dtype = "float32";
  int64_t seed = 0;
  double std_dev = 0.02;
  FlagSet flags("sharedllm new --config FILE --out DIR [--seed S] [--tokenizer FILE]",
                "Writes a randomly initialised model (config.json + model.safetensors, and\n"
                "tokenizer.model when given) in Hugging Face layout: the starting point of\n"
                "training, and the tiny models of the tests.");
  flags.String("config", &config_path, "a Hugging Face config.json");
  flags.String("out", &out_dir, "output directory (created)");
  flags.Int("seed", &seed, "initialisation seed");
  flags.Double("std", &std_dev, "standard deviation of the normal initialisation");
  flags.String("tokenizer", &tokenizer_path, "sentencepiece model to copy as tokenizer.model");
  flags.String("dtype", &dtype, "storage dtype: float32 | bfloat16 | float16");
  flags.Require("config");
  flags.Require("out");
  if (int rc = flags.Parse(args); rc >= 0) return rc;

  ModelConfig config = ModelConfig::FromJsonText(ReadTextFile(config_path));
  if (!tokenizer_path.empty()) {
    auto tok = LoadSentencePieceTokenizer(tokenizer_path);
    Check(tok->vocab_size() <= config.vocab_size,
          "the tokenizer has " + std::to_string(tok->vocab_size()) +
              " pieces, more than vocab_size " + std::to_string(config.vocab_size));
  }
  CausalLM lm(config, at::TensorOptions().dtype(at::kFloat));
  lm->InitRandom(static_cast<uint64_t>(seed), std_dev);
  SaveModel(lm, out_dir, ParseDtype(dtype, config));
  if (!tokenizer_path.empty()) {
    WriteFileAtomic(JoinPath(out_dir, "tokenizer.model"), ReadTextFile(tokenizer_path));
  }
  std::fprintf(stderr, "wrote %s: %lld parameters\n", out_dir.c_str(),
               static_cast<long long>(config.NumParameters()));
  return 0;
}

}  // namespace sharedllm::cli

#include <cmath>
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "llm/errors.h"
#include "llm/file_util.h"
#include "llm/scoring.h"
#include "sharedllm/sharedllm.h"
#include "cli/sharedllm/commands.h"

namespace sharedllm::cli {

int ScoreCommand(const Args& args) {
  std::string model_dir, token_ids, text_file, context_ids_text, context_file;
  bool json = false, no_bos = false;
  RuntimeFlags runtime;
  FlagSet flags("sharedllm score --model DIR (--token-ids 1,2,3 | --text-file F) "
                "[--context-token-ids IDS | --context-file F] [--json]",
                "Prints the negative log-likelihood (natural log) of every token given the ones\n"
                "before it, their mean and the perplexity exp(mean). With --json, one object:\n"
                "{\"tokens\": n, \"nll\": [n-1 floats], \"mean_nll\": x, \"ppl\": y}.\n"
                "With a context (SharedLLM models only), the context is split into chunks that the\n"
                "lower model compresses, and the scored text reads them through cross-attention.");
  flags.String("model", &model_dir, "model directory");
  flags.String("token-ids", &token_ids, "comma-separated token ids, scored as given");
  flags.String("text-file", &text_file, "UTF-8 text file, tokenised with the model's tokenizer");
  flags.String("context-token-ids", &context_ids_text,
               "SharedLLM: comma-separated ids of a context read through the compressor");
  flags.String("context-file", &context_file, "SharedLLM: a text file used as that context");
  flags.Bool("no-bos", &no_bos, "with --text-file: do not prepend the BOS token");
  flags.Bool("json", &json, "print one JSON object");
  runtime.Register(flags);
  flags.Require("model");
  if (int rc = flags.Parse(args); rc >= 0) return rc;
  if (flags.Given("token-ids") == flags.Given("text-file")) {
    std::cerr << "give exactly one of --token-ids and --text-file\n\n" << flags.Help();
    return 2;
  }

  std::vector<int64_t> ids;
  if (flags.Given("token-ids")) {  // a usage error is reported before the model is loaded
    try {
      ids = ParseIdList(token_ids);
    } catch (const std::invalid_argument& e) {
      std::cerr << "--token-ids: " << e.what() << "\n";
      return 2;
    }
  }
  auto model = LoadModel(model_dir, runtime.Get());
  if (!flags.Given("token-ids")) {
    Check(model->tokenizer != nullptr, model_dir + " has no tokenizer.model; use --token-ids");
    if (!no_bos && model->tokenizer->bos_id() >= 0) ids.push_back(model->tokenizer->bos_id());
    for (int64_t id : model->tokenizer->Encode(ReadTextFile(text_file))) ids.push_back(id);
  }
  // Context (SharedLLM): chunks through the lower model, right-child policy (language modelling).
  std::vector<EncodedNode> nodes;
  InjectionContext context;
  const bool with_context = flags.Given("context-token-ids") || flags.Given("context-file");
  if (with_context) {
    Check(model->shared != nullptr,
          model_dir + " is a plain base model (no sharedllm.json); `sharedllm init` makes one");
    std::vector<int64_t> context_ids;
    if (flags.Given("context-token-ids")) {
      context_ids = ParseIdList(context_ids_text);
    } else {
      Check(model->tokenizer != nullptr, model_dir + " has no tokenizer.model");
      context_ids = model->tokenizer->Encode(ReadTextFile(context_file));
    }
    for (int64_t id : context_ids) {
      Check(id >= 0 && id < model->config.vocab_size, "context token id " + std::to_string(id) +
                                                          " is outside the vocabulary");
    }
    nodes = model->shared->BuildDynamicTree(context_ids, at::Tensor());
    std::vector<const EncodedNode*> selected;
    for (const auto& n : nodes) selected.push_back(&n);
    context = model->shared->MakeContext(
        selected, static_cast<int64_t>(model->shared->Chunks(context_ids.size()).size()));
  }
  const std::vector<double> nll = TokenNll(model->lm, ids, with_context ? &context : nullptr);
  double sum = 0;
  for (double x : nll) sum += x;
  const double mean = sum / nll.size();
  if (json) {
    nlohmann::json out = {{"tokens", ids.size()}, {"nll", nll}, {"mean_nll", mean},
                          {"ppl", std::exp(mean)}};
    std::cout << out.dump() << "\n";
  } else {
    std::printf("tokens %zu  mean_nll %.6f  ppl %.4f\n", ids.size(), mean, std::exp(mean));
  }
  return 0;
}

}  // namespace sharedllm::cli

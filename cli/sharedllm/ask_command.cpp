#include <chrono>
#include <cstdio>
#include <iostream>

#include "llm/decoder.h"
#include "llm/errors.h"
#include "llm/file_util.h"
#include "cli/sharedllm/commands.h"
#include "sharedllm/reading.h"

namespace sharedllm::cli {

int AskCommand(const Args& args) {
  std::string model_dir, document, question;
  int64_t max_tokens = 32, seed = 0, max_chunks = 0;
  double temperature = 0.0;
  bool quiet = false;
  std::vector<std::string> stop;
  RuntimeFlags runtime;
  FlagSet flags("sharedllm ask --model DIR --document F --question TEXT [--max-tokens N]",
                "Answers QUESTION about the document F with a SharedLLM model: builds the\n"
                "document's context tree with the lower model, searches it with the question,\n"
                "and generates the answer with the upper model reading the selected nodes.\n"
                "A document of more chunks than the model's chunk_budget is read in part: the\n"
                "chunks whose words best match the question (BM25), in document order, and only\n"
                "those are encoded.\n"
                "The answer streams to stdout; timings go to stderr.");
  flags.String("model", &model_dir, "SharedLLM model directory (with sharedllm.json)");
  flags.String("document", &document, "UTF-8 text file, any length");
  flags.String("question", &question, "the question (the prompt the answer continues)");
  flags.Int("max-tokens", &max_tokens, "answer tokens at most");
  flags.Double("temperature", &temperature, "sampling temperature; 0 = greedy");
  flags.Int("seed", &seed, "sampling seed");
  flags.List("stop", &stop, "stop before this string");
  flags.Int("max-chunks", &max_chunks, "read at most N chunks (0: the model's chunk_budget)");
  flags.Bool("quiet", &quiet, "no timings on stderr");
  runtime.Register(flags);
  flags.Require("model");
  flags.Require("document");
  flags.Require("question");
  if (int rc = flags.Parse(args); rc >= 0) return rc;

  auto model = LoadModel(model_dir, runtime.Get());
  Check(model->shared != nullptr, model_dir + " is not a SharedLLM model (no sharedllm.json)");
  Check(model->tokenizer != nullptr, model_dir + " has no tokenizer.model");
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t budget = ReadBudget(model->shared->config(), max_chunks);
  const auto doc_ids = model->tokenizer->Encode(ReadTextFile(document));
  const auto chosen = ChooseChunksToRead(*model->shared, *model->tokenizer, doc_ids, question, budget);
  DocumentTree tree = model->shared->BuildStaticTree(doc_ids, ChunkIndices(chosen));
  const auto t1 = std::chrono::steady_clock::now();
  const int64_t total_chunks = static_cast<int64_t>(model->shared->Chunks(static_cast<int64_t>(doc_ids.size())).size());
  std::vector<int64_t> prompt;
  if (model->tokenizer->bos_id() >= 0) prompt.push_back(model->tokenizer->bos_id());
  for (int64_t id : model->tokenizer->Encode(question)) prompt.push_back(id);
  const auto selected = model->shared->Select(tree, model->shared->QueryVector(prompt));
  InjectionContext context = model->shared->MakeContext(selected, tree.num_chunks());
  const auto t2 = std::chrono::steady_clock::now();

  SamplingOptions sampling;
  sampling.max_tokens = max_tokens;
  sampling.temperature = temperature;
  sampling.seed = static_cast<uint64_t>(seed);
  sampling.stop = stop;
  Decoder decoder(model->lm, &context);
  auto result = decoder.Generate(prompt, sampling, model->tokenizer.get(), [](const std::string& d) {
    std::fwrite(d.data(), 1, d.size(), stdout);
    std::fflush(stdout);
    return true;
  });
  std::cout << std::endl;
  if (!quiet) {
    auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
    int64_t kept = 0;
    for (const auto* n : selected) kept += n->k[0].size(1);
    std::fprintf(stderr,
                 "[document %zu tokens in %lld chunks, %lld read -> %zu nodes, %lld kept positions; "
                 "tree %.3f s, search %.3f s, ttft %.3f s, %zu tokens, finish %s]\n",
                 doc_ids.size(), static_cast<long long>(total_chunks),
                 static_cast<long long>(tree.num_chunks()), selected.size(),
                 static_cast<long long>(kept), secs(t0, t1), secs(t1, t2), result.prefill_seconds,
                 result.tokens.size(), FinishReasonName(result.finish));
  }
  return 0;
}

}  // namespace sharedllm::cli

// `sharedllm eval ruler | mathfind`: RULER's offline tasks and InfiniteBench Math.Find (scaled),
// generated offline and seeded (eval/ruler.h), SharedLLM vs the truncated base model and
// StreamingLLM; JSON out.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "llm/errors.h"
#include "eval/ruler.h"
#include "cli/sharedllm/commands.h"
#include "cli/sharedllm/eval_ablation.h"

namespace sharedllm::cli {
namespace {

std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  Check(!out.empty(), "empty list '" + text + "'");
  return out;
}

}  // namespace

int EvalTasksCommand(const Args& args) {
  const std::string task = args.at(0);
  const bool ruler = task == "ruler";
  std::string model_dir, lengths = "1,2,4,8,16,32", tasks, out, ablate;
  for (const auto& t : RulerTaskNames()) tasks += (tasks.empty() ? "" : ",") + t;
  int64_t trials = 5, seed = 1;
  bool no_streaming = false, show = false;
  RuntimeFlags runtime;
  FlagSet flags("sharedllm eval " + task + " --model DIR [--lengths L] [--trials N]" +
                    (ruler ? " [--tasks T]" : "") + " [--ablate K=V,...] [--out F.json]",
                ruler ? "RULER niah_single_1, niah_multikey_2, niah_multikey_3, vt, cwe, fwe (templates and\n"
                        "string_match_all scoring as RULER), generated offline and seeded; SharedLLM vs\n"
                        "the base model truncated to its window and StreamingLLM. Scores in percent."
                      : "InfiniteBench Math.Find scaled to the model: the largest number, smallest number\n"
                        "or median of a list of integers; correct when the first number generated is the\n"
                        "answer. SharedLLM vs the truncated base model and StreamingLLM.");
  flags.String("model", &model_dir, "SharedLLM model directory");
  flags.String("lengths", &lengths, "length multiples of the window (context + question + answer budget)");
  if (ruler) flags.String("tasks", &tasks, "RULER tasks, comma-separated");
  flags.Int("trials", &trials, "samples per (task, length)");
  flags.Int("seed", &seed, "generation seed");
  flags.Bool("no-streaming", &no_streaming, "skip the StreamingLLM baseline");
  flags.Bool("show", &show, "print every sample's references and predictions to stderr");
  flags.String("ablate", &ablate, kAblateHelp);
  flags.String("out", &out, "also write the JSON here");
  runtime.Register(flags);
  flags.Require("model");
  if (int rc = flags.Parse(Args(args.begin() + 1, args.end())); rc >= 0) return rc;
  const Ablation ablation = ParseAblation(ablate);
  std::vector<double> multiples;
  for (const auto& x : SplitList(lengths)) multiples.push_back(std::stod(x));
  const std::vector<std::string> task_list = ruler ? SplitList(tasks) : std::vector<std::string>{"math_find"};
  for (const auto& t : task_list) TaskMaxTokens(t, 1);  // unknown names fail before loading
  auto model = LoadModel(model_dir, runtime.Get());
  nlohmann::json j = {{"task", task}, {"model", model_dir},
                      {"window", model->config.max_position_embeddings}, {"seed", seed}};
  ApplyAblationFlag(*model, ablation, j);
  j["points"] = nlohmann::json::array();
  for (const auto& p : EvaluateTasks(*model, task_list, multiples, trials, static_cast<uint64_t>(seed),
                                     !no_streaming, show ? &std::cerr : nullptr)) {
    nlohmann::json point = {{"task", p.task}, {"length_multiple", p.length_multiple},
                            {"trials", p.trials}, {"mean_tokens", p.mean_tokens},
                            {"sharedllm_score", p.sharedllm_score}, {"truncated_score", p.truncated_score}};
    if (p.streaming_score >= 0) point["streaming_score"] = p.streaming_score;
    if (p.skipped_trials > 0) point["skipped_trials"] = p.skipped_trials;
    if (!p.skipped.empty()) {
      point["skipped"] = p.skipped;
      std::fprintf(stderr, "%-16s %5.0fx W: skipped (%s)\n", p.task.c_str(), p.length_multiple, p.skipped.c_str());
      j["points"].push_back(point);
      continue;
    }
    j["points"].push_back(point);
    const std::string streaming = p.streaming_score >= 0 ? std::to_string(p.streaming_score).substr(0, 5) : "-";
    std::fprintf(stderr, "%-16s %5.0fx W (%6.0f tokens): SharedLLM %5.1f, truncated %5.1f, StreamingLLM %s (%lld trials, %lld did not fit)\n",
                 p.task.c_str(), p.length_multiple, p.mean_tokens, p.sharedllm_score, p.truncated_score,
                 streaming.c_str(), static_cast<long long>(p.trials), static_cast<long long>(p.skipped_trials));
  }
  std::cout << j.dump(2) << std::endl;
  if (!out.empty()) std::ofstream(out) << j.dump(2) << "\n";
  return 0;
}

}  // namespace sharedllm::cli

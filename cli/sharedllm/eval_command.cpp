#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "llm/errors.h"
#include "eval/evaluation.h"
#include "cli/sharedllm/commands.h"
#include "cli/sharedllm/eval_ablation.h"

namespace sharedllm::cli {
namespace {

void Emit(const nlohmann::json& j, const std::string& out) {
  std::cout << j.dump(2) << std::endl;
  if (!out.empty()) std::ofstream(out) << j.dump(2) << "\n";
}

// Fills the full-attention perplexities of `points` (an `eval ppl` result's "points") from the
// same lengths of the earlier result in `path`. Those baselines depend only on the base model,
// the shard, the windows and the seed, not on the SharedLLM weights, so a retrained model need not
// pay for them again; the truncated perplexity, measured on the same windows by the same base
// model, must agree (to float noise across thread counts) or the file is refused.
void FullAttentionFrom(const std::string& path, nlohmann::json& points) {
  std::ifstream in(path);
  Check(in.good(), "--full-attention-from: cannot read " + path);
  nlohmann::json earlier;
  try {
    earlier = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw ModelError("--full-attention-from: " + path + " is not JSON: " + e.what());
  }
  Check(earlier.value("task", "") == "ppl" && earlier.contains("points"),
        "--full-attention-from: " + path + " is not an `eval ppl` result");
  for (auto& point : points) {
    const double x = point["length_multiple"];
    for (const auto& e : earlier["points"]) {
      if (e.value("length_multiple", 0.0) != x || !e.contains("full_linear_ppl")) continue;
      const double here = point["truncated_ppl"], there = e.value("truncated_ppl", 0.0);
      Check(e.value("windows", int64_t{0}) == point["windows"].get<int64_t>() &&
                std::fabs(here - there) <= 1e-6 * here,
            "--full-attention-from: " + path + " was measured on other windows, shard or base " +
                "model (at " + std::to_string(x) + "x W: truncated perplexity " +
                std::to_string(there) + " there, " + std::to_string(here) + " here, " +
                std::to_string(e.value("windows", int64_t{0})) + " vs " +
                std::to_string(point["windows"].get<int64_t>()) + " windows)");
      point["full_linear_ppl"] = e["full_linear_ppl"];
      point["full_yarn_ppl"] = e["full_yarn_ppl"];
      for (const char* key : {"full_yarn_copyable_ppl", "full_yarn_other_ppl"}) {
        if (e.contains(key)) point[key] = e[key];
      }
    }
  }
}

}  // namespace

int EvalCommand(const Args& args) {
  if (!args.empty() && args[0] == "efficiency") return EfficiencyCommand(Args(args.begin() + 1, args.end()));
  if (!args.empty() && (args[0] == "ruler" || args[0] == "mathfind")) return EvalTasksCommand(args);
  if (args.empty() || (args[0] != "ppl" && args[0] != "passkey")) {
    std::cout << "usage: sharedllm eval TASK --model DIR [flags]   (--help per task)\n"
                 "TASK: ppl | passkey | ruler | mathfind | efficiency\n\n"
                 "ppl:      CEPE/SharedLLM perplexity at multiples of the window, vs the base model\n"
                 "          truncated to its window, full attention (PI, YaRN) and StreamingLLM.\n"
                 "passkey:  pass-key retrieval over lengths x depths, vs the truncated base model.\n"
                 "ruler:    RULER niah_single_1, niah_multikey_2/3, vt, cwe, fwe (string_match_all).\n"
                 "mathfind: InfiniteBench Math.Find, scaled (largest / smallest / median of a list).\n"
                 "efficiency: ingestion, time to first token, tokens/s, peak memory vs full attention\n"
                 "          and rebuilding the tree per question (eval efficiency --help).\n"
                 "ppl, passkey, ruler and mathfind take --ablate K=V,... (evaluation-time SharedLLM\n"
                 "ablations).\n";
    return args.empty() ? 2 : (args[0] == "--help" || args[0] == "-h" ? 0 : 2);
  }
  const std::string task = args[0];
  std::string model_dir, shard_path, lengths = "1,2,4,8,16,32", depths = "0,0.25,0.5,0.75,1", out, ablate,
      full_from;
  int64_t windows = 50, trials = 5, seed = 1;
  PplOptions ppl_options;
  std::string rename_ids;
  RuntimeFlags runtime;
  FlagSet flags("sharedllm eval " + task + " --model DIR" +
                    (task == "ppl" ? " --shard F [--lengths L] [--windows N]" : " [--lengths L] [--depths D] [--trials N]") +
                    " [--out F.json]",
                task == "ppl" ? "Perplexity of the last W/16 tokens of W running tokens, with n chunks of\n"
                                "context in front of them through the tree (SharedLLM) and without\n"
                                "(truncated base model); L = multiple x W. Every length scores the same\n"
                                "W running tokens; windows come from documents as long as the longest L,\n"
                                "so runs with other --lengths lists score other windows."
                              : "Pass-key retrieval: the first integer generated must equal the key.");
  flags.String("model", &model_dir, "SharedLLM model directory");
  flags.String("lengths", &lengths, "length multiples of the window, comma-separated");
  flags.String("out", &out, "also write the JSON here");
  flags.Int("seed", &seed, "sampling of windows / keys");
  flags.String("ablate", &ablate, kAblateHelp);
  std::string kv_dtype;
  flags.String("kv-dtype", &kv_dtype,
               "store each node's keys/values as the service would and read them back: float32 | "
               "bfloat16 | int8 (per-channel scales); empty = as computed");
  if (task == "ppl") {
    flags.String("shard", &shard_path, "held-out token shard (corpus/make_shards.py)");
    flags.Int("windows", &windows, "windows per length");
    flags.Double("full-attention-max", &ppl_options.full_attention_max,
                 "also score full attention over all L tokens with PI and YaRN rotary scaling, at "
                 "multiples up to this (O(L^2) memory); 0 = off");
    flags.String("full-attention-from", &full_from,
                 "instead, copy them from this earlier `eval ppl` JSON of the same base model, "
                 "shard, --windows and --seed (refused unless its truncated perplexities match)");
    flags.Bool("foreign-context", &ppl_options.foreign_context,
               "SharedLLM reads an equally long context from another document of the shard instead "
               "of the text's own (same windows): what the genre alone gives");
    flags.String("rename-ids", &rename_ids,
                 "LO,HI: rename each window's tokens with ids in [LO, HI) one to one (the same in "
                 "context and text): identifiers only the context gives, a test of copying");
    flags.Require("shard");
  } else {
    flags.String("depths", &depths, "needle depths in [0, 1], comma-separated");
    flags.Int("trials", &trials, "keys per (length, depth)");
  }
  runtime.Register(flags);
  flags.Require("model");
  if (int rc = flags.Parse(Args(args.begin() + 1, args.end())); rc >= 0) return rc;
  if (ppl_options.full_attention_max > 0 && !full_from.empty()) {
    std::cerr << "--full-attention-max and --full-attention-from exclude each other\n";
    return 2;
  }
  if (!rename_ids.empty()) {
    for (double id : ParseDoubleList(rename_ids)) {
      if (id != std::floor(id)) {
        std::cerr << "--rename-ids takes two token ids, LO,HI; got " << rename_ids << "\n";
        return 2;
      }
      ppl_options.rename_ids.push_back(static_cast<int64_t>(id));
    }
  }
  std::optional<KvFormat> kv_format;
  if (!kv_dtype.empty()) {
    try {
      kv_format = ParseKvFormat(kv_dtype);
    } catch (const ModelError& e) {
      std::cerr << "--kv-dtype: " << e.what() << "\n";
      return 2;
    }
    ppl_options.kv_format = kv_format;
  }
  const Ablation ablation = ParseAblation(ablate);
  auto model = LoadModel(model_dir, runtime.Get());
  nlohmann::json j = {{"task", task}, {"model", model_dir}, {"seed", seed},
                      {"window", model->config.max_position_embeddings}};
  ApplyAblationFlag(*model, ablation, j);
  if (kv_format) j["kv_dtype"] = KvFormatName(*kv_format);
  if (task == "ppl") {
    const TokenShard shard = TokenShard::Open(shard_path, model->config.vocab_size);
    j["shard"] = shard_path;
    if (ppl_options.foreign_context) j["context"] = "foreign";
    if (!ppl_options.rename_ids.empty()) j["rename_ids"] = ppl_options.rename_ids;
    for (const auto& p : EvaluatePerplexity(*model, shard, ParseDoubleList(lengths), windows, seed,
                                           ppl_options)) {
      nlohmann::json point = {{"length_multiple", p.length_multiple}, {"windows", p.windows},
                              {"sharedllm_ppl", p.sharedllm_ppl}, {"truncated_ppl", p.truncated_ppl},
                              {"streaming_ppl", p.streaming_ppl}, {"log_ratio_se", p.log_ratio_se},
                              {"streaming_log_ratio_se", p.streaming_log_ratio_se}};
      if (p.copyable_fraction > 0) {
        point["copyable_fraction"] = p.copyable_fraction;
        point["sharedllm_copyable_ppl"] = p.sharedllm_copyable_ppl;
        point["truncated_copyable_ppl"] = p.truncated_copyable_ppl;
        point["sharedllm_other_ppl"] = p.sharedllm_other_ppl;
        point["truncated_other_ppl"] = p.truncated_other_ppl;
        point["copyable_log_ratio_se"] = p.copyable_log_ratio_se;
      }
      if (p.full_linear_ppl > 0) {
        point["full_linear_ppl"] = p.full_linear_ppl;
        point["full_yarn_ppl"] = p.full_yarn_ppl;
        if (p.full_yarn_copyable_ppl > 0) {
          point["full_yarn_copyable_ppl"] = p.full_yarn_copyable_ppl;
          point["full_yarn_other_ppl"] = p.full_yarn_other_ppl;
        }
      }
      j["points"].push_back(point);
    }
    if (!full_from.empty()) {
      FullAttentionFrom(full_from, j["points"]);
      j["full_attention_from"] = full_from;
    }
    for (const auto& point : j["points"]) {
      std::fprintf(stderr, "%5.0fx W: SharedLLM ppl %.3f, truncated %.3f (ratio %.4f, log-ratio SE %.4f), StreamingLLM %.3f, full PI %.3f, full YaRN %.3f (%lld windows)\n",
                   point["length_multiple"].get<double>(), point["sharedllm_ppl"].get<double>(),
                   point["truncated_ppl"].get<double>(),
                   point["sharedllm_ppl"].get<double>() / point["truncated_ppl"].get<double>(),
                   point["log_ratio_se"].get<double>(), point["streaming_ppl"].get<double>(),
                   point.value("full_linear_ppl", 0.0), point.value("full_yarn_ppl", 0.0),
                   static_cast<long long>(point["windows"].get<int64_t>()));
      if (point.contains("copyable_fraction")) {
        std::fprintf(stderr, "       copyable tokens %.1f %%: SharedLLM ppl %.3f, truncated %.3f (log-ratio SE %.4f); the others: %.3f, %.3f\n",
                     100 * point["copyable_fraction"].get<double>(),
                     point["sharedllm_copyable_ppl"].get<double>(),
                     point["truncated_copyable_ppl"].get<double>(),
                     point["copyable_log_ratio_se"].get<double>(),
                     point["sharedllm_other_ppl"].get<double>(),
                     point["truncated_other_ppl"].get<double>());
        if (point.contains("full_yarn_copyable_ppl")) {
          std::fprintf(stderr, "       full YaRN: copyable %.3f, the others %.3f\n",
                       point["full_yarn_copyable_ppl"].get<double>(),
                       point["full_yarn_other_ppl"].get<double>());
        }
      }
    }
  } else {
    for (const auto& p : EvaluatePasskey(*model, ParseDoubleList(lengths), ParseDoubleList(depths), trials, seed,
                                         kv_format)) {
      j["points"].push_back({{"length_multiple", p.length_multiple}, {"depth", p.depth},
                             {"trials", p.trials}, {"sharedllm_correct", p.sharedllm_correct},
                             {"truncated_correct", p.truncated_correct}, {"keys", p.keys},
                             {"sharedllm_answers", p.sharedllm_answers},
                             {"truncated_answers", p.truncated_answers},
                             {"key_full_resolution", p.key_full_resolution}});
      std::fprintf(stderr, "%5.0fx W depth %.2f: SharedLLM %lld/%lld, truncated %lld/%lld\n",
                   p.length_multiple, p.depth, static_cast<long long>(p.sharedllm_correct),
                   static_cast<long long>(p.trials), static_cast<long long>(p.truncated_correct),
                   static_cast<long long>(p.trials));
    }
  }
  Emit(j, out);
  return 0;
}

}  // namespace sharedllm::cli

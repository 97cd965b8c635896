#include <cstdio>
#include <iostream>

#include "llm/errors.h"
#include "training/trainer.h"
#include "cli/sharedllm/commands.h"

namespace sharedllm::cli {

int TrainCommand(const Args& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << "usage: sharedllm train (base|lm|sft) --config FILE [--steps N] [--out DIR] [--log-every N]\n"
                 "       [--time-budget SECONDS] [--device cpu|cuda|cuda:N] [--threads N]\n\n"
                 "Trains with the settings of a JSON config (training/trainer.h documents every\n"
                 "field): base = causal LM pre-training; lm = SharedLLM continual training on n\n"
                 "chunks of context + W running tokens; sft = SharedLLM on generated retrieval\n"
                 "instructions, loss on the answer only. Progress goes to stderr, a JSONL log to\n"
                 "OUT/train_log.jsonl; OUT/checkpoint/ lets an interrupted run resume exactly.\n"
                 "--device and --threads run a recipe written for another machine (e.g. a GPU\n"
                 "recipe on the CPU) without editing it.\n";
    return args.empty() ? 2 : 0;
  }
  const std::string mode = args[0];
  std::string config_path, out, device;
  int64_t steps = 0, log_every = 0, threads = -1;
  double time_budget = -1;
  FlagSet flags("sharedllm train " + mode + " --config FILE [--steps N] [--out DIR]",
                "Runs " + mode + " training from a JSON config.");
  flags.String("config", &config_path, "training config (JSON)");
  flags.Int("steps", &steps, "override the config's steps");
  flags.String("out", &out, "override the config's output directory");
  flags.Int("log-every", &log_every, "override the config's log_every");
  flags.Double("time-budget", &time_budget,
               "stop (saving the model) after this many seconds, the learning rate decaying over "
               "them; 0: none");
  flags.String("device", &device, "override the config's device (cpu | cuda | cuda:N)");
  flags.Int("threads", &threads, "override the config's intra-op threads (0: all cores)");
  flags.Require("config");
  if (int rc = flags.Parse(Args(args.begin() + 1, args.end())); rc >= 0) return rc;
  TrainConfig config = TrainConfig::Load(config_path);
  Check(config.mode == mode, config_path + " is a '" + config.mode + "' config, not '" + mode + "'");
  if (steps > 0) config.steps = steps;
  if (!out.empty()) config.out = out;
  if (log_every > 0) config.log_every = log_every;
  if (time_budget >= 0) config.time_budget = time_budget;
  if (!device.empty()) config.device = device;
  if (threads >= 0) config.threads = static_cast<int>(threads);
  const TrainResult r = Train(config);
  std::fprintf(stderr, "done: %lld steps, %lld scored tokens, %.0f s, final loss %.4f, eval loss %.4f\n",
               static_cast<long long>(r.steps), static_cast<long long>(r.tokens), r.seconds,
               r.final_loss, r.eval_loss);
  return 0;
}

}  // namespace sharedllm::cli

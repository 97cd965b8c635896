// The sub-commands of the `sharedllm` tool. Each takes its arguments after the sub-command name
// and returns the process exit code. Model errors propagate as exceptions to main().
#pragma once

#include <string>
#include <vector>

#include "sharedllm/loaded_model.h"
#include "cli/flags/flags.h"

namespace sharedllm::cli {

using Args = std::vector<std::string>;

int GenerateCommand(const Args& args);
int ScoreCommand(const Args& args);
int NewCommand(const Args& args);
int InitCommand(const Args& args);
int EditCommand(const Args& args);
int AskCommand(const Args& args);
int TrainCommand(const Args& args);
int EvalCommand(const Args& args);
// `eval efficiency` (args after "efficiency") and `plan` (efficiency_command.cpp).
int EfficiencyCommand(const Args& args);
int PlanCommand(const Args& args);
// `eval ruler | mathfind` (eval_tasks_command.cpp), dispatched by EvalCommand.
int EvalTasksCommand(const Args& args);

// --threads, --dtype, --device, shared by every command that runs a model.
struct RuntimeFlags {
  int64_t threads = 0;
  RuntimeOptions options;
  void Register(FlagSet& flags);
  RuntimeOptions Get() const;
};

}  // namespace sharedllm::cli

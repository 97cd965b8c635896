// `sharedllm`: the model tool (generate, score, new, init, edit, ask, train, eval, plan).
#include <cstring>
#include <iostream>

#include "llm/errors.h"
#include "cli/sharedllm/commands.h"

namespace {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const sharedllm::cli::Args&);
};

const Command kCommands[] = {
    {"generate", "generate text after a prompt, streamed to stdout", sharedllm::cli::GenerateCommand},
    {"score", "negative log-likelihood of every token of a text", sharedllm::cli::ScoreCommand},
    {"new", "write a randomly initialised model from a config.json", sharedllm::cli::NewCommand},
    {"init", "turn a base model into an untrained SharedLLM", sharedllm::cli::InitCommand},
    {"edit", "model surgery: write a changed copy of a SharedLLM", sharedllm::cli::EditCommand},
    {"ask", "answer a question about a long document", sharedllm::cli::AskCommand},
    {"train", "train a base model or SharedLLM (base | lm | sft)", sharedllm::cli::TrainCommand},
    {"eval", "evaluations (ppl | passkey | ruler | mathfind)", sharedllm::cli::EvalCommand},
    {"plan", "predict memory, tree-store bytes and time for a document length", sharedllm::cli::PlanCommand},
};

void Usage(std::ostream& out) {
  out << "usage: sharedllm COMMAND [flags]   (sharedllm COMMAND --help for its flags)\n\n"
         "Long-document language model tool (SharedLLM, arXiv 2410.19318).\n\ncommands:\n";
  for (const auto& c : kCommands) {
    out << "  " << c.name << std::string(12 - std::strlen(c.name), ' ') << c.summary << "\n";
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    Usage(std::cerr);
    return 2;
  }
  const std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    Usage(std::cout);
    return 0;
  }
  for (const auto& c : kCommands) {
    if (name != c.name) continue;
    try {
      return c.run(sharedllm::cli::Args(argv + 2, argv + argc));
    } catch (const sharedllm::ModelError& e) {
      std::cerr << "error: " << e.what() << "\n";
      return 1;
    } catch (const std::exception& e) {
      std::cerr << "error: " << e.what() << "\n";
      return 1;
    }
  }
  std::cerr << "unknown command '" << name << "'\n\n";
  Usage(std::cerr);
  return 2;
}

// A small command-line flag parser for the sub-commands of `sharedllm`: `--name value`,
// `--name=value`, boolean `--name`, repeatable list flags, and a generated `--help`.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace sharedllm::cli {

class FlagSet {
 public:
  // usage: e.g. "sharedllm score --model DIR (--token-ids IDS | --text-file F) [--json]"
  FlagSet(std::string usage, std::string description);

  void String(const std::string& name, std::string* out, const std::string& help);
  void Int(const std::string& name, int64_t* out, const std::string& help);
  void Double(const std::string& name, double* out, const std::string& help);
  void Bool(const std::string& name, bool* out, const std::string& help);
  void List(const std::string& name, std::vector<std::string>* out, const std::string& help);
  // Names that must be given.
  void Require(const std::string& name);

  // Parses args (without the program and sub-command names). Returns -1 to go on, or the exit
  // code to return now: 0 after --help, 2 after a usage error (message on stderr).
  int Parse(const std::vector<std::string>& args);
  bool Given(const std::string& name) const;
  std::string Help() const;

 private:
  struct Flag {
    std::string name, help, kind, default_text;
    std::function<bool(const std::string&)> set;  // false: bad value
    bool required = false, given = false;
  };
  Flag* Find(const std::string& name);
  std::string usage_, description_;
  std::vector<Flag> flags_;
};

// "1,2,3" -> {1, 2, 3}; throws std::invalid_argument with the bad item.
std::vector<int64_t> ParseIdList(const std::string& text);

// "1,2.5,4" -> {1, 2.5, 4} (e.g. length multiples, depths); throws std::invalid_argument on an
// empty list or an item that is not a whole number.
std::vector<double> ParseDoubleList(const std::string& text);

}  // namespace sharedllm::cli

// Generated retrieval instructions for SharedLLM instruction tuning (loss on the answer only).
// Every sample is a pure function of (seed); fillers come from training text, never from the
// evaluation sets' fillers, and keys/values are drawn from other ranges of seeds.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "llm/tokenizer.h"

namespace sharedllm {

struct SftSample {
  std::vector<int64_t> context;  // the long input, read through the lower model
  std::vector<int64_t> prompt;   // the question (BOS first), read by the upper model
  std::vector<int64_t> answer;   // the target continuation; the only scored tokens
  std::string task;
};

// Filler: `count` tokens of natural text starting anywhere (e.g. a slice of a training shard).
using FillerSource = std::function<std::vector<int64_t>(std::mt19937_64& rng, int64_t count)>;

// Task names: passkey, kv (key-value retrieval), niah (needle: magic number for a key),
// multikey (needle among distractor needles), minmax (smallest/largest of a list). Also accepted
// by MakeSftSample, not in this default list: passkey_ignore (a pass-key document, but a prompt of
// other training text whose answer is that text's continuation, not the key) and copy (the prompt
// ends with a span of the context; the answer is what followed it there).
const std::vector<std::string>& SftTaskNames();

// One sample of `task` whose context has about `context_tokens` tokens.
SftSample MakeSftSample(const std::string& task, const Tokenizer& tokenizer,
                        const FillerSource& filler, int64_t context_tokens, std::mt19937_64& rng);

}  // namespace sharedllm

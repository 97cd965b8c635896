#include "training/sft_data.h"

#include <algorithm>

#include "llm/errors.h"

namespace sharedllm {
namespace {

int64_t Uniform(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

std::string RandomWord(std::mt19937_64& rng, int letters) {
  static const char* kSyllables[] = {"ka", "lo", "mi", "ne", "su", "ta", "vo", "ri", "pe", "zu",
                                     "ba", "do", "fi", "gu", "he", "jo"};
  std::string w;
  for (int i = 0; i < letters; ++i) w += kSyllables[Uniform(rng, 0, 15)];
  return w;
}

// Inserts `needles` (token lists) into filler text at random depths, keeping their order random.
std::vector<int64_t> Haystack(const std::vector<std::vector<int64_t>>& needles,
                              const FillerSource& filler, int64_t total, std::mt19937_64& rng) {
  int64_t needle_tokens = 0;
  for (const auto& n : needles) needle_tokens += static_cast<int64_t>(n.size());
  std::vector<int64_t> hay = filler(rng, std::max<int64_t>(total - needle_tokens, 16));
  std::vector<int64_t> cuts;
  for (size_t i = 0; i < needles.size(); ++i) cuts.push_back(Uniform(rng, 0, hay.size()));
  std::sort(cuts.begin(), cuts.end());
  std::vector<int64_t> out;
  size_t at = 0;
  for (size_t i = 0; i < needles.size(); ++i) {
    out.insert(out.end(), hay.begin() + at, hay.begin() + cuts[i]);
    out.insert(out.end(), needles[i].begin(), needles[i].end());
    at = cuts[i];
  }
  out.insert(out.end(), hay.begin() + at, hay.end());
  return out;
}

// The pass-key document of "passkey" and "passkey_ignore": the passkey test's sentence shape in
// training-text filler (not the test's "The grass is green..."), a key from the whole 5-digit
// range, returned in `key`.
std::vector<int64_t> PasskeyDocument(const Tokenizer& tok, const FillerSource& filler,
                                     int64_t context_tokens, std::mt19937_64& rng, std::string& key) {
  key = std::to_string(Uniform(rng, 10000, 99999));
  return Haystack({tok.Encode(" The pass key is " + key + ". Remember it. " + key + " is the pass key. ")},
                  filler, context_tokens, rng);
}

std::vector<int64_t> WithBos(const Tokenizer& tok, const std::string& text) {
  std::vector<int64_t> ids;
  if (tok.bos_id() >= 0) ids.push_back(tok.bos_id());
  for (int64_t id : tok.Encode(text)) ids.push_back(id);
  return ids;
}

}  // namespace

const std::vector<std::string>& SftTaskNames() {
  static const std::vector<std::string> names = {"passkey", "kv", "niah", "multikey", "minmax"};
  return names;
}

SftSample MakeSftSample(const std::string& task, const Tokenizer& tok, const FillerSource& filler,
                        int64_t context_tokens, std::mt19937_64& rng) {
  SftSample s;
  s.task = task;
  std::string answer;
  if (task == "passkey_ignore") {
    // The pass-key document of "passkey", but the prompt is not about the key: a few tokens of
    // other training text, and the answer is that text's own continuation. Teaches the
    // cross-attention that a key in the context is no answer to every question.
    std::string key;
    s.context = PasskeyDocument(tok, filler, context_tokens, rng, key);
    const int64_t prompt_tokens = Uniform(rng, 4, 16), answer_tokens = 8;
    const auto text = filler(rng, prompt_tokens + answer_tokens);
    if (tok.bos_id() >= 0) s.prompt.push_back(tok.bos_id());
    s.prompt.insert(s.prompt.end(), text.begin(), text.begin() + prompt_tokens);
    s.answer.assign(text.begin() + prompt_tokens, text.end());
    return s;
  }
  if (task == "copy") {
    // Induction across the context: the prompt ends with a span of the context (after some
    // unrelated text), and the answer is what followed that span there. Content-agnostic copying,
    // the use of context that repeated names and formulas in long documents reward.
    s.context = filler(rng, context_tokens);
    const int64_t n = static_cast<int64_t>(s.context.size());
    Check(n >= 8, "copy needs a context of at least 8 tokens");
    const int64_t answer_tokens = std::min<int64_t>(16, n / 4);
    const int64_t span = std::min<int64_t>(Uniform(rng, 8, 32), n / 2);
    const int64_t at = Uniform(rng, 0, n - span - answer_tokens);
    const auto lead = filler(rng, Uniform(rng, 1, 128));
    if (tok.bos_id() >= 0) s.prompt.push_back(tok.bos_id());
    s.prompt.insert(s.prompt.end(), lead.begin(), lead.end());
    s.prompt.insert(s.prompt.end(), s.context.begin() + at, s.context.begin() + at + span);
    s.answer.assign(s.context.begin() + at + span, s.context.begin() + at + span + answer_tokens);
    return s;
  }
  if (task == "passkey") {
    std::string key;
    s.context = PasskeyDocument(tok, filler, context_tokens, rng, key);
    s.prompt = WithBos(tok, "What is the pass key? The pass key is");
    answer = " " + key;
  } else if (task == "kv") {
    const int pairs = static_cast<int>(Uniform(rng, 2, 6));
    std::vector<std::vector<int64_t>> needles;
    std::string query_key, query_value;
    const int pick = static_cast<int>(Uniform(rng, 0, pairs - 1));
    for (int i = 0; i < pairs; ++i) {
      const std::string k = RandomWord(rng, 3), v = std::to_string(Uniform(rng, 100, 9999));
      needles.push_back(tok.Encode(" The value of " + k + " is " + v + ". "));
      if (i == pick) query_key = k, query_value = v;
    }
    s.context = Haystack(needles, filler, context_tokens, rng);
    s.prompt = WithBos(tok, "What is the value of " + query_key + "? The value of " + query_key + " is");
    answer = " " + query_value;
  } else if (task == "niah" || task == "multikey") {
    const int needles_count = task == "niah" ? 1 : static_cast<int>(Uniform(rng, 2, 4));
    std::vector<std::vector<int64_t>> needles;
    std::string query_key, value;
    for (int i = 0; i < needles_count; ++i) {
      const std::string k = RandomWord(rng, 2) + "-" + RandomWord(rng, 2);
      const std::string v = std::to_string(Uniform(rng, 1000000, 9999999));
      needles.push_back(tok.Encode(" One of the special magic numbers for " + k + " is: " + v + ". "));
      if (i == 0) query_key = k, value = v;
    }
    s.context = Haystack(needles, filler, context_tokens, rng);
    s.prompt = WithBos(tok, "What is the special magic number for " + query_key +
                                "? The special magic number for " + query_key + " is:");
    answer = " " + value;
  } else if (task == "minmax") {
    // A list spread through the context; the question asks for its smallest or largest member.
    const int count = static_cast<int>(Uniform(rng, 3, 8));
    std::vector<int64_t> values;
    std::vector<std::vector<int64_t>> needles;
    for (int i = 0; i < count; ++i) {
      values.push_back(Uniform(rng, 10, 999));
      needles.push_back(tok.Encode(" List item: " + std::to_string(values.back()) + ". "));
    }
    const bool largest = Uniform(rng, 0, 1) == 1;
    s.context = Haystack(needles, filler, context_tokens, rng);
    const std::string which = largest ? "largest" : "smallest";
    s.prompt = WithBos(tok, "What is the " + which + " list item? The " + which + " list item is");
    answer = " " + std::to_string(largest ? *std::max_element(values.begin(), values.end())
                                          : *std::min_element(values.begin(), values.end()));
  } else {
    throw ModelError("unknown sft task '" + task + "'");
  }
  s.answer = tok.Encode(answer + ".");
  // Encoding " 12345." alone adds sentencepiece's dummy-prefix space; keep the answer as the
  // model would continue the prompt: the prompt ends without a space and the answer starts with
  // one, so the ids are those of the joint encoding's tail.
  const auto joint = tok.Encode(tok.Decode(s.prompt) + answer + ".");
  const auto prompt_only = tok.Encode(tok.Decode(s.prompt));
  if (joint.size() > prompt_only.size() &&
      std::equal(prompt_only.begin(), prompt_only.end(), joint.begin())) {
    s.answer.assign(joint.begin() + prompt_only.size(), joint.end());
  }
  return s;
}

}  // namespace sharedllm

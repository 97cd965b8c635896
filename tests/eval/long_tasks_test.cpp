// StreamingLLM (against the plain model within the window and a token-by-token rolling cache
// beyond it), the RULER / Math.Find generators (every task's references recomputed from the
// generated text), their scorers on worked examples, the --ablate parser, smoke runs of
// `eval ruler` / `eval mathfind` on a tiny model, and the CLI (JSON, --ablate, refusals) through
// recipes/make_results.py.
#include <algorithm>
#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "eval/ablation.h"
#include "llm/errors.h"
#include "llm/rope.h"
#include "eval/ruler.h"
#include "sharedllm/loaded_model.h"
#include "llm/scoring.h"
#include "eval/streaming_llm.h"
#include "tests/model_util.h"

namespace sharedllm {
namespace {

// ---------------------------------------------------------------------------------------------
// StreamingLLM

// The StreamingLLM recipe written out token by token: a cache of at most `window` entries (keys
// before rotary), the oldest non-sink entry evicted when full, every key rotated at its cache slot
// and the query at the last slot. Returns nll[i] = -ln p(ids[i+1] | ...).
std::vector<double> NaiveRollingCacheNll(CausalLM& lm, const std::vector<int64_t>& ids,
                                         int64_t window, int64_t sinks) {
  c10::InferenceMode guard;
  const ModelConfig& c = lm->config;
  const int64_t heads = c.num_attention_heads, kvh = c.num_key_value_heads, d = c.head_dim;
  std::vector<std::vector<at::Tensor>> keys(c.num_hidden_layers), values(c.num_hidden_layers);
  std::vector<double> nll;
  for (size_t i = 0; i + 1 < ids.size(); ++i) {
    auto h = lm->model->embed_tokens(test::Ids({ids[i]}));
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      auto& layer = lm->model->layer(l);
      auto x = layer.input_layernorm(h);
      auto q = layer.self_attn->q_proj(x).view({1, 1, heads, d}).transpose(1, 2);
      auto k = layer.self_attn->k_proj(x).view({1, 1, kvh, d}).transpose(1, 2);
      auto v = layer.self_attn->v_proj(x).view({1, 1, kvh, d}).transpose(1, 2);
      keys[l].push_back(k);
      values[l].push_back(v);
      if (static_cast<int64_t>(keys[l].size()) > window) {
        keys[l].erase(keys[l].begin() + sinks);
        values[l].erase(values[l].begin() + sinks);
      }
      const int64_t s = static_cast<int64_t>(keys[l].size());
      auto slots = at::arange(0, s, at::TensorOptions().dtype(at::kLong));
      auto [cos, sin] = lm->rope.CosSin(slots, window);
      auto kr = ApplyRotary(at::cat(keys[l], 2), cos, sin);
      auto qr = ApplyRotary(q, cos.narrow(0, s - 1, 1), sin.narrow(0, s - 1, 1));
      auto out = Attention(qr, kr, at::cat(values[l], 2), at::Tensor());
      h = h + layer.self_attn->o_proj(out.transpose(1, 2).reshape({1, 1, heads * d}));
      h = h + layer.mlp(layer.post_attention_layernorm(h));
    }
    auto logp = at::log_softmax(lm->Logits(lm->model->norm(h)).reshape({-1}).to(at::kDouble), -1);
    nll.push_back(-logp[ids[i + 1]].item<double>());
  }
  return nll;
}

double MaxDiff(const std::vector<double>& a, const std::vector<double>& b, size_t from = 0,
               size_t to = SIZE_MAX) {
  double m = 0;
  for (size_t i = from; i < std::min({a.size(), b.size(), to}); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

TEST(StreamingLLMTest, EqualsThePlainModelWithinTheWindow) {
  auto lm = test::TinyModel();  // window 128, GQA 4/2
  const auto ids = test::SeededIds(128, lm->config.vocab_size, 5);
  const auto plain = TokenNll(lm, ids);
  const auto streaming = StreamingTokenNll(lm, ids);  // cache = the model's window (128)
  ASSERT_EQ(plain.size(), streaming.size());
  EXPECT_LT(MaxDiff(plain, streaming), 1e-5);
  // Fed in blocks of 7: the same.
  StreamingLLM s(lm, 0, 4, 7);
  auto hidden = s.Feed(ids);
  c10::NoGradGuard no_grad;
  auto full = lm->ForwardHidden(test::Ids(ids)).squeeze(0);
  EXPECT_LT(test::MaxAbsDiff(hidden, full), 1e-5);
  EXPECT_EQ(s.seen(), 128);
  EXPECT_EQ(s.cache_entries(), 127);  // the next token's own key makes 128
}

TEST(StreamingLLMTest, BeyondTheWindowIsTheRollingCacheAndDiffersFromFullAttention) {
  c10::InferenceMode guard;
  auto lm = test::TinyModel();
  const int64_t window = 24, sinks = 4;
  const auto ids = test::SeededIds(90, lm->config.vocab_size, 6);
  const auto naive = NaiveRollingCacheNll(lm, ids, window, sinks);
  const auto streaming = StreamingTokenNll(lm, ids, window, sinks);
  ASSERT_EQ(naive.size(), streaming.size());
  EXPECT_LT(MaxDiff(naive, streaming), 1e-5);
  // Block size does not matter (blocks of 5 and of 40 tokens).
  for (int64_t block : {5, 40}) {
    StreamingLLM s(lm, window, sinks, block);
    auto hidden = s.Feed(std::vector<int64_t>(ids.begin(), ids.end() - 1));
    auto logp = at::log_softmax(lm->Logits(hidden).to(at::kDouble), -1);
    for (size_t i = 0; i < naive.size(); i += 11) {
      EXPECT_NEAR(-logp[i][ids[i + 1]].item<double>(), naive[i], 1e-5) << "block " << block << " token " << i;
    }
    EXPECT_EQ(s.cache_entries(), window - 1) << "the cache stays bounded";
  }
  // Full attention sees everything: the first `window` predictions agree, later ones do not.
  const auto full = TokenNll(lm, ids);
  EXPECT_LT(MaxDiff(full, streaming, 0, window), 1e-5);
  EXPECT_GT(MaxDiff(full, streaming, window), 1e-3);
  // StreamingNll scores the tail the same way.
  double tail = 0;
  for (size_t i = streaming.size() - 10; i < streaming.size(); ++i) tail += streaming[i];
  EXPECT_NEAR(StreamingNll(lm, ids, 10, window, sinks), tail / 10, 1e-6);
}

TEST(StreamingLLMTest, RejectsBadSizes) {
  auto lm = test::TinyModel();
  EXPECT_THROW(StreamingLLM(lm, 4, 4), ModelError);
  EXPECT_THROW(StreamingLLM(lm, 8, -1), ModelError);
}

// ---------------------------------------------------------------------------------------------
// Scorers

TEST(TaskScoringTest, StringMatchAllWorkedExamples) {
  EXPECT_DOUBLE_EQ(StringMatchAll("The numbers are 1234567 and 7654321.", {"1234567", "7654321"}), 1.0);
  EXPECT_DOUBLE_EQ(StringMatchAll("The numbers are 1234567 and 7.", {"1234567", "7654321"}), 0.5);
  EXPECT_DOUBLE_EQ(StringMatchAll("ABCDE, fghij", {"abcde", "FGHIJ", "KLMNO"}), 2.0 / 3);
  EXPECT_DOUBLE_EQ(StringMatchAll("nothing here", {"needle"}), 0.0);
  EXPECT_DOUBLE_EQ(StringMatchAll("", {"a"}), 0.0);
  EXPECT_THROW(StringMatchAll("x", {}), ModelError);
  // RULER's postprocessing: control characters become newlines, the ends are stripped.
  EXPECT_EQ(PostprocessPrediction("\x01 apple\tpear \n"), "apple\npear");
  EXPECT_EQ(PostprocessPrediction(" \n "), "");
  // TaskScore applies it, then the task's rule.
  EXPECT_DOUBLE_EQ(TaskScore("cwe", "  Apple\tPEAR", {"apple", "pear"}), 1.0);
}

TEST(TaskScoringTest, MathFindWorkedExamples) {
  EXPECT_DOUBLE_EQ(MathFindScore(" 417, then 3", "417"), 1.0);
  EXPECT_DOUBLE_EQ(MathFindScore("4170", "417"), 0.0);  // the whole first number counts
  EXPECT_DOUBLE_EQ(MathFindScore("the answer is 12.0", "12"), 1.0);
  EXPECT_DOUBLE_EQ(MathFindScore("3.5", "3"), 0.0);
  EXPECT_DOUBLE_EQ(MathFindScore("-5", "5"), 1.0);  // InfiniteBench's regex has no sign
  EXPECT_DOUBLE_EQ(MathFindScore("no number", "5"), 0.0);
  EXPECT_DOUBLE_EQ(MathFindScore("7 or 8", "8"), 0.0);  // only the first number
  EXPECT_DOUBLE_EQ(TaskScore("math_find", "\n 88.", {"88"}), 1.0);
}

// ---------------------------------------------------------------------------------------------
// Generators: every task's references recomputed from its text

std::shared_ptr<LoadedModel> Tiny() {
  RuntimeOptions o;
  o.threads = 1;
  return LoadModel(std::string(SHAREDLLM_SOURCE_DIR) + "/models/tiny", o);
}

std::string Between(const std::string& s, const std::string& a, const std::string& b) {
  const size_t i = s.find(a);
  if (i == std::string::npos) return "";
  const size_t j = s.find(b, i + a.size());
  return s.substr(i + a.size(), j == std::string::npos ? std::string::npos : j - i - a.size());
}

int64_t Tokens(const Tokenizer& tok, const TaskSample& s) {
  return 1 + static_cast<int64_t>(tok.Encode(s.context).size() + tok.Encode(s.question).size());
}

TEST(TaskGeneratorTest, NeedlesAnswerTheQuestion) {
  auto m = Tiny();
  const Tokenizer& tok = *m->tokenizer;
  for (const std::string task : {"niah_single_1", "niah_multikey_2", "niah_multikey_3"}) {
    const TaskSample s = MakeTaskSample(task, tok, 900, 11);
    ASSERT_EQ(s.answers.size(), 1u);
    const std::string type = task == "niah_multikey_3" ? "uuid" : "number";
    EXPECT_EQ(s.context.rfind("A special magic " + type + " is hidden within the following text.", 0), 0u)
        << s.context.substr(0, 80);
    const std::string key = Between(s.question, "What is the special magic " + type + " for ",
                                    " mentioned in the provided text?");
    ASSERT_FALSE(key.empty()) << s.question;
    EXPECT_NE(s.question.find("The special magic " + type + " for " + key +
                              " mentioned in the provided text is"), std::string::npos);
    // Exactly one needle carries the key, and its value is the reference.
    std::regex needle("One of the special magic " + type + "s for ([^ ]+) is: ([^ \\n]+)\\.");
    int with_key = 0, needles = 0;
    for (std::sregex_iterator it(s.context.begin(), s.context.end(), needle), end; it != end; ++it) {
      ++needles;
      if ((*it)[1] == key) {
        ++with_key;
        EXPECT_EQ((*it)[2], s.answers[0]);
      }
    }
    EXPECT_EQ(with_key, 1) << task;
    if (task == "niah_single_1") {
      EXPECT_EQ(needles, 1);
      EXPECT_NE(s.context.find("The grass is green. The sky is blue."), std::string::npos);
      EXPECT_TRUE(std::regex_match(s.answers[0], std::regex("[0-9]{7}")));
    } else {
      EXPECT_GT(needles, 5) << "a needle haystack";
    }
    if (task == "niah_multikey_3") {
      EXPECT_TRUE(std::regex_match(s.answers[0], std::regex("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")))
          << s.answers[0];
    } else {
      EXPECT_TRUE(std::regex_match(key, std::regex("[a-z]+-[a-z]+"))) << key;
    }
    const int64_t n = Tokens(tok, s);
    EXPECT_LE(n, 900);
    EXPECT_GT(n, 700) << task << ": the haystack fills the length";
  }
}

TEST(TaskGeneratorTest, VariableTrackingChainGivesTheReferences) {
  auto m = Tiny();
  const TaskSample s = MakeTaskSample("vt", *m->tokenizer, 700, 3);
  const std::string value = Between(s.question, "assigned the value ", " in the text above.");
  ASSERT_TRUE(std::regex_match(value, std::regex("[0-9]{5}"))) << s.question;
  EXPECT_NE(s.question.find("5 variables are assgined the value " + value + ", they are: "), std::string::npos);
  // Follow the chain through the text.
  std::set<std::string> found;
  std::smatch mt;
  ASSERT_TRUE(std::regex_search(s.context, mt, std::regex("VAR ([A-Z]{5}) = " + value)));
  std::vector<std::string> frontier = {mt[1]};
  while (!frontier.empty()) {
    const std::string v = frontier.back();
    frontier.pop_back();
    found.insert(v);
    std::regex next("VAR ([A-Z]{5}) = VAR " + v + "\\b");
    for (std::sregex_iterator it(s.context.begin(), s.context.end(), next), end; it != end; ++it) {
      frontier.push_back((*it)[1]);
    }
  }
  EXPECT_EQ(found, std::set<std::string>(s.answers.begin(), s.answers.end()));
  EXPECT_EQ(s.answers.size(), 5u);
  EXPECT_LE(Tokens(*m->tokenizer, s), 700);
}

TEST(TaskGeneratorTest, CommonWordsAreTheTenMostFrequent) {
  auto m = Tiny();
  for (int64_t target : {400, 1500}) {
    const TaskSample s = MakeTaskSample("cwe", *m->tokenizer, target, 4);
    const std::string list = Between(s.context, "Memorize the ones that appear most often.\n", "\n");
    std::map<std::string, int> counts;
    std::regex entry("([0-9]+)\\. ([a-z]+)");
    int expected_index = 1;
    for (std::sregex_iterator it(list.begin(), list.end(), entry), end; it != end; ++it) {
      EXPECT_EQ(std::stoi((*it)[1]), expected_index++);
      ++counts[(*it)[2]];
    }
    ASSERT_EQ(s.answers.size(), 10u);
    int least_common = 1 << 30, most_uncommon = 0;
    std::set<std::string> refs(s.answers.begin(), s.answers.end());
    for (const auto& [w, n] : counts) {
      if (refs.count(w)) least_common = std::min(least_common, n);
      else most_uncommon = std::max(most_uncommon, n);
    }
    EXPECT_GT(least_common, most_uncommon) << "target " << target;
    EXPECT_GT(counts.size(), 10u);
    EXPECT_LE(Tokens(*m->tokenizer, s), target);
  }
}

TEST(TaskGeneratorTest, FrequentWordsAreTheThreeMostFrequentCodedWords) {
  auto m = Tiny();
  const TaskSample s = MakeTaskSample("fwe", *m->tokenizer, 1500, 8);
  const std::string text = Between(s.context, "Find the three most frequently appeared coded words. ", "\n");
  std::map<std::string, int> counts;
  std::stringstream in(text);
  std::string w;
  while (in >> w) ++counts[w];
  ASSERT_GT(counts["..."], 0) << "the noise word is the most frequent";
  std::vector<std::pair<int, std::string>> ranked;
  for (const auto& [word, n] : counts) {
    if (word != "...") ranked.emplace_back(n, word);
    EXPECT_TRUE(word == "..." || std::regex_match(word, std::regex("[a-z]{6}"))) << word;
  }
  std::sort(ranked.rbegin(), ranked.rend());
  ASSERT_GE(ranked.size(), 4u);
  EXPECT_GT(ranked[2].first, ranked[3].first) << "the top three are distinct in count";
  std::set<std::string> top = {ranked[0].second, ranked[1].second, ranked[2].second};
  EXPECT_EQ(top, std::set<std::string>(s.answers.begin(), s.answers.end()));
  EXPECT_GT(counts["..."], ranked[0].first);
  EXPECT_LE(Tokens(*m->tokenizer, s), 1500);
}

TEST(TaskGeneratorTest, MathFindAnswersTheListQuestion) {
  auto m = Tiny();
  std::set<std::string> targets;
  for (uint64_t seed = 0; seed < 12; ++seed) {
    const TaskSample s = MakeTaskSample("math_find", *m->tokenizer, 400, seed);
    const std::string target = Between(s.question, "The ", " of the list is:");
    targets.insert(target);
    EXPECT_EQ(s.context.rfind("What is the " + target + " in the following list?\n\n[", 0), 0u);
    std::vector<int64_t> values;
    std::stringstream in(Between(s.context, "[", "]"));
    std::string item;
    while (std::getline(in, item, ',')) values.push_back(std::stoll(item));
    ASSERT_EQ(values.size() % 2, 1u);
    std::sort(values.begin(), values.end());
    const int64_t want = target == "median" ? values[values.size() / 2]
                         : target == "largest number" ? values.back() : values.front();
    EXPECT_EQ(s.answers, std::vector<std::string>{std::to_string(want)}) << target;
    EXPECT_LE(Tokens(*m->tokenizer, s), 400);
  }
  EXPECT_EQ(targets, (std::set<std::string>{"largest number", "smallest number", "median"}));
}

TEST(TaskGeneratorTest, SeededAndSized) {
  auto m = Tiny();
  const Tokenizer& tok = *m->tokenizer;
  for (const auto& task : RulerTaskNames()) {
    const TaskSample a = MakeTaskSample(task, tok, 600, 21), b = MakeTaskSample(task, tok, 600, 21);
    const TaskSample c = MakeTaskSample(task, tok, 600, 22);
    EXPECT_EQ(a.context, b.context) << task;
    EXPECT_EQ(a.answers, b.answers) << task;
    EXPECT_NE(a.context, c.context) << task;
    const TaskSample longer = MakeTaskSample(task, tok, 1800, 21);
    EXPECT_GT(Tokens(tok, longer), 2 * Tokens(tok, a)) << task;
    EXPECT_LE(Tokens(tok, longer), 1800) << task;
  }
  EXPECT_THROW(MakeTaskSample("niah_single_9", tok, 600, 1), ModelError);
  EXPECT_THROW(MakeTaskSample("niah_single_1", tok, 10, 1), ModelError);  // nothing fits
  EXPECT_EQ(TaskMaxTokens("niah_single_1", 4096), 128);  // RULER's budgets at a 4K window
  EXPECT_EQ(TaskMaxTokens("vt", 4096), 30);
  EXPECT_EQ(TaskMaxTokens("cwe", 256), 64);  // capped at W/4
}

// ---------------------------------------------------------------------------------------------
// --ablate

TEST(AblationTest, ParserRejectsUnknownAndRetrainingKeys) {
  try {
    ParseAblation("search=off,foo=1");
    FAIL() << "unknown key accepted";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("unknown key 'foo'"), std::string::npos) << e.what();
  }
  for (const std::string spec : {"injection=top", "num_injection_layers=2", "split_noise=off",
                                 "compressor=separate", "gate=on", "chunk_size=32"}) {
    try {
      ParseAblation(spec);
      FAIL() << spec << " accepted";
    } catch (const ModelError& e) {
      EXPECT_NE(std::string(e.what()).find("sharedllm init"), std::string::npos) << e.what();
    }
  }
  for (const std::string bad : {"search", "search=maybe", "depth=0", "depth=two", "selection=max",
                                "search=on,search=off", "alphas=4/2,beta=2", "=1", "alphas=4/x",
                                "search_vector=first"}) {
    EXPECT_THROW(ParseAblation(bad), ModelError) << bad;
  }
  EXPECT_TRUE(ParseAblation("").empty());
  EXPECT_EQ(AblationString(ParseAblation("search=false,chunk_positions=0,selection=mean,tree_depth=2")),
            "search=off,chunk_positions=off,selection=mean,depth=2");
}

TEST(AblationTest, AppliesOverTheLoadedConfiguration) {
  SharedLLMConfig base;  // h = 3, alphas (16, 8, 4): beta 8
  base.chunk_size = 64;
  auto apply = [&](const std::string& spec) { return ApplyAblation(base, ParseAblation(spec), 4); };
  auto c = apply("search=off,chunk_positions=off,selection=mean");
  EXPECT_EQ(apply("search_vector=mean").search_vector, "mean");
  EXPECT_FALSE(c.search);
  EXPECT_FALSE(c.chunk_positions);
  EXPECT_EQ(c.selection, "mean");
  EXPECT_EQ(c.alphas, base.alphas);
  EXPECT_EQ(apply("depth=2").alphas, (std::vector<int64_t>{16, 8}));
  EXPECT_EQ(apply("depth=4").alphas, (std::vector<int64_t>{16, 8, 4, 2}));
  EXPECT_EQ(apply("depth=2,alphas=4/2").alphas, (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(apply("beta=4").alphas, (std::vector<int64_t>{8, 4, 2}));
  EXPECT_DOUBLE_EQ(apply("beta=16").CompressionRatio(), 16.0);
  EXPECT_THROW(apply("beta=1"), ModelError);       // no whole strides: alphas=1/1/1 instead
  EXPECT_DOUBLE_EQ(apply("alphas=1/1/1").CompressionRatio(), 1.0);
  EXPECT_THROW(apply("alphas=4/2"), ModelError);   // one stride per level
  EXPECT_THROW(apply("depth=7"), ModelError);      // chunk 64 < 2^7
  EXPECT_EQ(apply("").ToJsonText(), base.ToJsonText());
  EXPECT_THROW(ParseAblation("top_k=192"), ModelError);  // no such switch
}

// ---------------------------------------------------------------------------------------------
// Smoke runs of the task evaluations

std::shared_ptr<LoadedModel> TinySharedLLM(const std::string& ablate = "") {
  auto tiny = Tiny();
  SharedLLMConfig sc;
  sc.num_injection_layers = 1;
  sc.chunk_size = 32;
  sc.tree_depth = 2;
  sc.alphas = {4, 2};
  tiny->shared = std::make_shared<SharedLLM>(tiny->lm, ApplyAblation(sc, ParseAblation(ablate), 2));
  return tiny;
}

TEST(EvalTasksSmokeTest, RulerAndMathFindRunOnATinyModel) {
  auto model = TinySharedLLM();
  std::vector<std::string> tasks = RulerTaskNames();
  tasks.push_back("math_find");
  std::ostringstream log;
  const auto points = EvaluateTasks(*model, tasks, {1, 2}, 1, 7, true, &log);
  ASSERT_EQ(points.size(), 2 * tasks.size());
  int ran_at_1x = 0;
  for (const auto& p : points) {
    // This tokenizer (1000 pieces) needs ~200-300 tokens for most tasks' smallest sample: such
    // tasks are reported as skipped at 1 x 256 tokens; at 2x every task runs.
    if (p.length_multiple == 1 && p.trials == 0) {
      EXPECT_NE(p.skipped.find("smallest sample"), std::string::npos) << p.task;
      EXPECT_EQ(p.skipped_trials, 1);
      continue;
    }
    EXPECT_EQ(p.trials, 1) << p.task << " " << p.length_multiple << " " << p.skipped;
    EXPECT_TRUE(p.skipped.empty());
    EXPECT_EQ(p.skipped_trials, 0);
    for (double s : {p.sharedllm_score, p.truncated_score, p.streaming_score}) {
      EXPECT_GE(s, 0);
      EXPECT_LE(s, 100);
    }
    EXPECT_LE(p.mean_tokens, p.length_multiple * 256 - TaskMaxTokens(p.task, 256)) << p.task;
    EXPECT_GT(p.mean_tokens, 0.6 * (p.length_multiple * 256 - TaskMaxTokens(p.task, 256))) << p.task;
    // At 1x the truncated prompt is the whole prompt, which StreamingLLM then reads unchanged.
    if (p.length_multiple == 1) {
      EXPECT_EQ(p.truncated_score, p.streaming_score) << p.task;
      ++ran_at_1x;
    }
  }
  EXPECT_GE(ran_at_1x, 1) << "math_find fits 1x";
  EXPECT_NE(log.str().find("SharedLLM:"), std::string::npos);
  EXPECT_NE(log.str().find("StreamingLLM:"), std::string::npos);
  // Without the streaming baseline it is marked as not measured.
  const auto no_stream = EvaluateTasks(*model, {"math_find"}, {2}, 2, 7, false);
  ASSERT_EQ(no_stream.size(), 1u);
  EXPECT_EQ(no_stream[0].trials, 2);
  EXPECT_LT(no_stream[0].streaming_score, 0);
}

// A model that answers correctly scores 100 with all three readers: a scripted model (the next
// token depends only on the current one) continues the question's last token with the answer's
// tokens and then EOS. Checks the whole path: prompt assembly, generation, decoding, scoring.
TEST(EvalTasksSmokeTest, AScriptedRightAnswerScoresFullMarks) {
  auto tok = LoadTokenizer(std::string(SHAREDLLM_SOURCE_DIR) + "/models/tiny");
  ASSERT_TRUE(tok);
  for (const std::string task : {"math_find", "niah_single_1"}) {
    SCOPED_TRACE(task);
    const int64_t w = 256, budget = TaskMaxTokens(task, w);
    // The first seed whose answer continues the question with distinct tokens (a scripted chain
    // cannot repeat a token).
    for (uint64_t seed = 1;; ++seed) {
      ASSERT_LT(seed, 200u) << "no scriptable sample";
      const TaskSample s = MakeTaskSample(task, *tok, 2 * w - budget, TaskSampleSeed(seed, task, 2, 0));
      const auto q = tok->Encode(s.question);
      const auto joint = tok->Encode(s.question + " " + s.answers[0]);
      if (!std::equal(q.begin(), q.end(), joint.begin())) continue;
      std::vector<int64_t> answer(joint.begin() + q.size(), joint.end());
      std::set<int64_t> distinct(answer.begin(), answer.end());
      distinct.insert(q.back());
      if (distinct.size() != answer.size() + 1 || distinct.count(tok->eos_id())) continue;
      std::map<int64_t, int64_t> next;
      int64_t at = q.back();
      for (int64_t id : answer) next[at] = id, at = id;
      next[at] = tok->eos_id();
      auto model = std::make_shared<LoadedModel>();
      model->lm = test::ScriptedModel(tok->vocab_size(), next, /*fallback=*/5);
      model->lm->config.max_position_embeddings = w;
      model->config = model->lm->config;
      model->tokenizer = std::move(tok);
      SharedLLMConfig sc;
      sc.num_injection_layers = 1;
      sc.chunk_size = 32;
      sc.tree_depth = 2;
      sc.alphas = {4, 2};
      model->shared = std::make_shared<SharedLLM>(model->lm, sc);
      std::ostringstream log;
      const auto points = EvaluateTasks(*model, {task}, {2}, 1, seed, true, &log);
      ASSERT_EQ(points.size(), 1u);
      EXPECT_EQ(points[0].trials, 1);
      EXPECT_DOUBLE_EQ(points[0].sharedllm_score, 100) << log.str();
      EXPECT_DOUBLE_EQ(points[0].truncated_score, 100) << log.str();
      EXPECT_DOUBLE_EQ(points[0].streaming_score, 100) << log.str();
      // And a model that answers something else scores 0.
      next[q.back()] = 5;
      model->lm = test::ScriptedModel(model->tokenizer->vocab_size(), next, 5);
      model->lm->config.max_position_embeddings = w;
      model->shared = std::make_shared<SharedLLM>(model->lm, sc);
      const auto wrong = EvaluateTasks(*model, {task}, {2}, 1, seed, true);
      EXPECT_DOUBLE_EQ(wrong[0].sharedllm_score, 0);
      EXPECT_DOUBLE_EQ(wrong[0].truncated_score, 0);
      tok = LoadTokenizer(std::string(SHAREDLLM_SOURCE_DIR) + "/models/tiny");
      break;
    }
  }
}

TEST(EvalTasksSmokeTest, AblatedModelRuns) {
  auto model = TinySharedLLM("search=off,depth=1,selection=mean");
  EXPECT_EQ(model->shared->config().tree_depth, 1);
  EXPECT_EQ(model->shared->config().alphas, std::vector<int64_t>{4});
  const auto points = EvaluateTasks(*model, {"niah_single_1"}, {2}, 1, 3, false);
  ASSERT_EQ(points.size(), 1u);
  EXPECT_EQ(points[0].trials, 1);
}

// ---------------------------------------------------------------------------------------------
// The CLI end to end: eval ppl / ruler / mathfind JSON with --ablate, then make_results.py

TEST(EvalCliTest, JsonAblationsAndResultsTables) {
  test::TempDir dir;
  const std::string model_dir = dir.Mkdir("model");
  {
    auto model = TinySharedLLM();
    SaveModel(model->lm, model_dir);
    SaveSharedLLM(*model->shared, model_dir);
    std::filesystem::copy_file(std::string(SHAREDLLM_SOURCE_DIR) + "/models/tiny/tokenizer.model",
                               model_dir + "/tokenizer.model");
  }
  test::WriteTokenShard(dir / "heldout.bin", 1000, {test::SeededIds(2 * 256 + 10, 1000, 3)});
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.begin(), SHAREDLLM_BIN);
    for (const char* a : {"--model", "", "--threads", "1"}) args.push_back(a);
    args[args.size() - 3] = model_dir;
    return test::Run(args, dir.path());
  };
  auto ppl = run({"eval", "ppl", "--shard", dir / "heldout.bin", "--lengths", "1,2", "--windows", "2",
                  "--ablate", "selection=mean", "--out", dir / "ppl.json"});
  ASSERT_EQ(ppl.exit_code, 0) << ppl.err;
  const auto pj = nlohmann::json::parse(test::ReadFile(dir / "ppl.json"));
  EXPECT_EQ(pj.at("ablation"), "selection=mean");
  EXPECT_EQ(pj.at("sharedllm_config").at("selection"), "mean");
  ASSERT_EQ(pj.at("points").size(), 2u);
  EXPECT_NEAR(pj["points"][0].at("streaming_ppl").get<double>(), pj["points"][0].at("truncated_ppl").get<double>(),
              1e-5 * pj["points"][0].at("truncated_ppl").get<double>());
  EXPECT_GT(pj["points"][1].at("streaming_ppl").get<double>(), 1.0);

  // --rename-ids: recorded in the JSON, the same windows' text renamed; a fractional id refused.
  auto renamed = run({"eval", "ppl", "--shard", dir / "heldout.bin", "--lengths", "1,2", "--windows", "2",
                      "--ablate", "selection=mean", "--rename-ids", "3,1000", "--out", dir / "renamed.json"});
  ASSERT_EQ(renamed.exit_code, 0) << renamed.err;
  const auto rn = nlohmann::json::parse(test::ReadFile(dir / "renamed.json"));
  EXPECT_EQ(rn.at("rename_ids"), (std::vector<int64_t>{3, 1000}));
  EXPECT_NE(rn["points"][0].at("truncated_ppl").get<double>(), pj["points"][0].at("truncated_ppl").get<double>());
  auto fractional = run({"eval", "ppl", "--shard", dir / "heldout.bin", "--rename-ids", "3,999.5"});
  EXPECT_EQ(fractional.exit_code, 2);
  EXPECT_NE(fractional.err.find("--rename-ids"), std::string::npos) << fractional.err;

  auto mf = run({"eval", "mathfind", "--lengths", "2", "--trials", "1", "--ablate", "depth=1,search=off",
                 "--out", dir / "mf.json"});
  ASSERT_EQ(mf.exit_code, 0) << mf.err;
  const auto mj = nlohmann::json::parse(test::ReadFile(dir / "mf.json"));
  EXPECT_EQ(mj.at("ablation"), "depth=1,search=off");
  EXPECT_EQ(mj.at("sharedllm_config").at("tree_depth"), 1);
  EXPECT_EQ(mj.at("sharedllm_config").at("search"), false);
  ASSERT_EQ(mj.at("points").size(), 1u);
  EXPECT_EQ(mj["points"][0].at("task"), "math_find");
  EXPECT_TRUE(mj["points"][0].contains("streaming_score"));

  auto ruler = run({"eval", "ruler", "--tasks", "vt,fwe", "--lengths", "2", "--trials", "1",
                    "--no-streaming", "--out", dir / "ruler.json"});
  ASSERT_EQ(ruler.exit_code, 0) << ruler.err;
  const auto rj = nlohmann::json::parse(test::ReadFile(dir / "ruler.json"));
  EXPECT_EQ(rj.at("ablation"), "");
  ASSERT_EQ(rj.at("points").size(), 2u);
  EXPECT_EQ(rj["points"][1].at("task"), "fwe");
  EXPECT_FALSE(rj["points"][0].contains("streaming_score"));

  // Refusals, before any work.
  auto retrain = run({"eval", "mathfind", "--ablate", "injection=top"});
  EXPECT_EQ(retrain.exit_code, 1);
  EXPECT_NE(retrain.err.find("sharedllm init"), std::string::npos) << retrain.err;
  auto unknown = run({"eval", "ruler", "--ablate", "depth=2,colour=blue"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("unknown key 'colour'"), std::string::npos) << unknown.err;
  auto bad_task = run({"eval", "ruler", "--tasks", "niah_single_7"});
  EXPECT_EQ(bad_task.exit_code, 1);
  EXPECT_NE(bad_task.err.find("unknown task"), std::string::npos) << bad_task.err;

  // make_results.py: the perplexity table has StreamingLLM, the task tables and the ablation table
  // come from these files.
  if (!test::Exists("/usr/bin/gnuplot")) GTEST_SKIP() << "gnuplot (Debian gnuplot-nox) not installed";
  const std::string out = dir.Mkdir("results");
  auto mr = test::Run({"/usr/bin/python3", std::string(SHAREDLLM_SOURCE_DIR) + "/recipes/make_results.py",
                       "--ppl", "tiny=" + (dir / "ppl.json"), "--tasks", dir / "ruler.json", "--tasks",
                       dir / "mf.json", "--ablation", dir / "ppl.json", "--ablation", "plain=" + (dir / "mf.json"),
                       "--out", out},
                      dir.path());
  ASSERT_EQ(mr.exit_code, 0) << mr.err;
  const std::string md = test::ReadFile(out + "/RESULTS.md");
  EXPECT_NE(md.find("| StreamingLLM |"), std::string::npos) << md;
  EXPECT_NE(md.find("| vt | "), std::string::npos) << md;
  EXPECT_NE(md.find("| math_find | "), std::string::npos) << md;
  EXPECT_NE(md.find("| selection=mean | h=2, α=4/2, search on, chunk positions on, selection mean, bottom "
                    "injection ×1, split noise on |"),
            std::string::npos) << md;
  EXPECT_NE(md.find("| plain | h=1, α=4, search off"), std::string::npos) << md;
  EXPECT_TRUE(test::Exists(out + "/ppl_vs_length.png"));
}

}  // namespace
}  // namespace sharedllm

// Sampling and generation: the sampler's options, the Generate loop (lengths, EOS, greedy
// equivalence with full forwards, cancellation) and, with a sentencepiece model trained by the
// test, streaming with stop strings. Text tests use a "scripted" model whose greedy continuation
// is a fixed token chain, so the generated text is known exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <set>

#include <ATen/ATen.h>

#include "llm/decoder.h"
#include "llm/errors.h"
#include "llm/sampler.h"
#include "llm/tokenizer.h"
#include "tests/model_error.h"
#include "tests/model_util.h"

namespace sharedllm {
namespace {

using test::ErrorOf;
using test::FullLogits;
using test::SeededIds;
using test::TinyModel;

SamplingOptions Greedy(int64_t max_tokens) {
  SamplingOptions o;
  o.temperature = 0;
  o.max_tokens = max_tokens;
  return o;
}

at::Tensor Logits(std::vector<float> v) { return at::tensor(v); }

// Whether `s` is a sequence of whole UTF-8 characters.
bool CompleteUtf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

// ---- sampler -----------------------------------------------------------------------------------

TEST(SamplerTest, TemperatureZeroPicksArgmax) {
  Sampler s(SamplingOptions{});
  EXPECT_EQ(s.Sample(Logits({0.1f, 3.0f, -2.0f, 2.9f})), 1);
  EXPECT_EQ(s.Sample(Logits({-5.0f, -4.0f, -3.0f})), 2);
  EXPECT_EQ(s.Sample(Logits({7.0f, 1.0f})), 0);
  EXPECT_EQ(s.Sample(Logits({0.0f, 1.0f, 5.0f}).view({1, 3})), 2);            // [1, V] accepted
  EXPECT_EQ(s.Sample(Logits({0.0f, 9.0f, 5.0f}).to(at::kBFloat16)), 1);     // any float dtype
}

std::vector<int64_t> Draw(const SamplingOptions& o, const at::Tensor& logits, int n) {
  Sampler s(o);
  std::vector<int64_t> out;
  for (int i = 0; i < n; ++i) out.push_back(s.Sample(logits));
  return out;
}

at::Tensor FlatishLogits() { return at::linspace(0.0, 1.0, 20); }

TEST(SamplerTest, SameSeedSameSamplesOtherSeedOtherSamples) {
  SamplingOptions o;
  o.temperature = 1.0;
  o.seed = 5;
  const auto a = Draw(o, FlatishLogits(), 50), b = Draw(o, FlatishLogits(), 50);
  EXPECT_EQ(a, b);
  o.seed = 6;
  EXPECT_NE(Draw(o, FlatishLogits(), 50), a);  // P(equal) ~ 20^-50
  EXPECT_GT(std::set<int64_t>(a.begin(), a.end()).size(), 5u) << "not sampling";
}

TEST(SamplerTest, FrequenciesFollowSoftmaxWithTemperature) {
  SamplingOptions o;
  o.seed = 11;
  o.temperature = 1.0;
  const at::Tensor logits = Logits({0.0f, static_cast<float>(std::log(3.0))});  // p = 1/4, 3/4
  auto freq1 = [&](const SamplingOptions& opts) {
    const auto d = Draw(opts, logits, 4000);
    return std::count(d.begin(), d.end(), 1) / 4000.0;
  };
  EXPECT_NEAR(freq1(o), 0.75, 0.03);
  o.temperature = 0.5;  // p ∝ 1, 9
  EXPECT_NEAR(freq1(o), 0.9, 0.02);
  o.temperature = 2.0;  // p ∝ 1, sqrt(3)
  EXPECT_NEAR(freq1(o), std::sqrt(3.0) / (1 + std::sqrt(3.0)), 0.03);
}

TEST(SamplerTest, TopKOneIsGreedy) {
  const at::Tensor logits = at::randn({50}, at::make_generator<at::CPUGeneratorImpl>(3));
  const int64_t argmax = logits.argmax().item<int64_t>();
  for (uint64_t seed = 0; seed < 5; ++seed) {
    SamplingOptions o;
    o.temperature = 1.5;
    o.top_k = 1;
    o.seed = seed;
    for (int64_t id : Draw(o, logits, 20)) EXPECT_EQ(id, argmax);
  }
}

TEST(SamplerTest, TopKKeepsTheKBest) {
  SamplingOptions o;
  o.temperature = 1.0;
  o.top_k = 2;
  o.seed = 4;
  const auto d = Draw(o, Logits({1.0f, 0.9f, 0.8f, 1.1f, 0.0f}), 300);
  EXPECT_EQ(std::set<int64_t>(d.begin(), d.end()), std::set<int64_t>({0, 3}));
}

TEST(SamplerTest, TinyTopPKeepsOnlyTheTopToken) {
  SamplingOptions o;
  o.temperature = 1.0;
  o.top_p = 1e-6;
  o.seed = 9;
  for (int64_t id : Draw(o, FlatishLogits(), 50)) EXPECT_EQ(id, 19);
}

TEST(SamplerTest, TopPKeepsTheSmallestSetReachingP) {
  // p = 0.6, 0.3, 0.1 (token 2, 0, 1 by rank)
  const at::Tensor logits = Logits({static_cast<float>(std::log(0.3)), static_cast<float>(std::log(0.1)),
                                    static_cast<float>(std::log(0.6))});
  SamplingOptions o;
  o.temperature = 1.0;
  o.seed = 2;
  o.top_p = 0.5;
  for (int64_t id : Draw(o, logits, 100)) EXPECT_EQ(id, 2);
  o.top_p = 0.7;  // 0.6 < 0.7: the second token is needed, the third is not
  const auto d = Draw(o, logits, 300);
  EXPECT_EQ(std::set<int64_t>(d.begin(), d.end()), std::set<int64_t>({0, 2}));
}

TEST(SamplerTest, InvalidOptionsThrow) {
  auto with = [](const std::function<void(SamplingOptions&)>& edit) {
    SamplingOptions o;
    edit(o);
    return ErrorOf([&] { Sampler s(o); });
  };
  EXPECT_NE(with([](auto& o) { o.temperature = -0.1; }).find("temperature must be >= 0"), std::string::npos);
  EXPECT_NE(with([](auto& o) { o.temperature = std::nan(""); }).find("temperature"), std::string::npos);
  EXPECT_NE(with([](auto& o) { o.top_k = -1; }).find("top_k must be >= 0"), std::string::npos);
  EXPECT_NE(with([](auto& o) { o.top_p = 0.0; }).find("top_p must be in (0, 1]"), std::string::npos);
  EXPECT_NE(with([](auto& o) { o.top_p = 1.5; }).find("top_p must be in (0, 1]"), std::string::npos);
}

// ---- stop-string hold-back ---------------------------------------------------------------------

TEST(HeldBackForStopTest, WorkedExamples) {
  EXPECT_EQ(HeldBackForStop("Hello wor", {"world"}), 3u);
  EXPECT_EQ(HeldBackForStop("Hello", {"world"}), 0u);
  EXPECT_EQ(HeldBackForStop("Hello", {}), 0u);
  EXPECT_EQ(HeldBackForStop("", {"world"}), 0u);
  EXPECT_EQ(HeldBackForStop("xx<", {"</s>"}), 1u);
  EXPECT_EQ(HeldBackForStop("xx</", {"</s>"}), 2u);
  EXPECT_EQ(HeldBackForStop("xx</s", {"</s>"}), 3u);
  EXPECT_EQ(HeldBackForStop("xx</s>", {"</s>"}), 0u);  // whole stop strings are found, not held
  EXPECT_EQ(HeldBackForStop("ab", {"b"}), 0u);          // one-char stops never need holding
  EXPECT_EQ(HeldBackForStop("abab", {"abac"}), 2u);     // the longest suffix that fits
  EXPECT_EQ(HeldBackForStop("aa", {"aab"}), 2u);
  EXPECT_EQ(HeldBackForStop("the en", {"end", "the end."}), 6u);  // the longest over all stops
  EXPECT_EQ(HeldBackForStop("the en", {"the end.", "end"}), 6u);
  EXPECT_EQ(HeldBackForStop("wor", {"world"}), 3u);   // the whole text may be held
  EXPECT_EQ(HeldBackForStop("\n\nUs", {"\n\nUser:"}), 4u);
}

// ---- Generate on a random model (ids only) -----------------------------------------------------

TEST(GenerateTest, MaxTokensEndsWithLength) {
  CausalLM lm = TinyModel();
  Decoder decoder(lm);
  SamplingOptions o = Greedy(7);
  o.stop_at_eos = false;
  const auto result = decoder.Generate({1, 5, 9}, o, nullptr);
  EXPECT_EQ(result.finish, FinishReason::kLength);
  EXPECT_EQ(result.tokens.size(), 7u);
  EXPECT_EQ(result.prompt_tokens, 3);
  EXPECT_TRUE(result.text.empty());
  EXPECT_GE(result.prefill_seconds, 0.0);
  EXPECT_GE(result.decode_seconds, 0.0);
  for (int64_t id : result.tokens) EXPECT_TRUE(id >= 0 && id < 61) << id;
  EXPECT_STREQ(FinishReasonName(result.finish), "length");
  EXPECT_TRUE(decoder.Generate({1}, Greedy(0), nullptr).tokens.empty());
}

TEST(GenerateTest, GreedyEqualsArgmaxChainOfFullForwards) {
  CausalLM lm = TinyModel();
  const std::vector<int64_t> prompt = SeededIds(5, 61, 31);
  SamplingOptions o = Greedy(12);
  o.stop_at_eos = false;
  const auto result = Decoder(lm).Generate(prompt, o, nullptr);
  std::vector<int64_t> seq = prompt, expected;
  for (int i = 0; i < 12; ++i) {
    const int64_t next = FullLogits(lm, seq)[-1].argmax().item<int64_t>();
    expected.push_back(next);
    seq.push_back(next);
  }
  EXPECT_EQ(result.tokens, expected);
  EXPECT_GT(std::set<int64_t>(expected.begin(), expected.end()).size(), 1u);
}

TEST(GenerateTest, StopsAtEos) {
  CausalLM lm = TinyModel();
  Decoder decoder(lm);
  SamplingOptions o = Greedy(12);
  o.stop_at_eos = false;
  const std::vector<int64_t> prompt = {3, 4, 5};
  const auto free_run = decoder.Generate(prompt, o, nullptr);
  // Make the first token that did not occur before an EOS token.
  size_t j = 1;
  while (j < free_run.tokens.size() &&
         std::count(free_run.tokens.begin(), free_run.tokens.begin() + j, free_run.tokens[j]) > 0) {
    ++j;
  }
  ASSERT_LT(j, free_run.tokens.size());
  lm->config.eos_token_ids = {free_run.tokens[j]};
  o.stop_at_eos = true;
  const auto result = decoder.Generate(prompt, o, nullptr);
  EXPECT_EQ(result.finish, FinishReason::kEos);
  EXPECT_EQ(result.tokens, std::vector<int64_t>(free_run.tokens.begin(), free_run.tokens.begin() + j));
  o.stop_at_eos = false;  // the EOS token is then generated like any other
  EXPECT_EQ(decoder.Generate(prompt, o, nullptr).tokens, free_run.tokens);
}

TEST(GenerateTest, CallbackReturningFalseCancels) {
  CausalLM lm = TinyModel();
  SamplingOptions o = Greedy(10);
  o.stop_at_eos = false;
  int calls = 0;
  const auto result = Decoder(lm).Generate({1, 2, 3}, o, nullptr, [&](const std::string&) {
    return ++calls < 3;
  });
  EXPECT_EQ(result.finish, FinishReason::kCancelled);
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(result.tokens.size(), 3u);
}

TEST(GenerateTest, SamplingIsSeeded) {
  CausalLM lm = TinyModel();
  Decoder decoder(lm);
  SamplingOptions o;
  o.temperature = 1.0;
  o.max_tokens = 20;
  o.stop_at_eos = false;
  o.seed = 17;
  const auto a = decoder.Generate({1, 2}, o, nullptr).tokens;
  EXPECT_EQ(decoder.Generate({1, 2}, o, nullptr).tokens, a);
  o.seed = 18;
  EXPECT_NE(decoder.Generate({1, 2}, o, nullptr).tokens, a);
}

TEST(GenerateTest, InvalidRequests) {
  CausalLM lm = TinyModel();
  Decoder decoder(lm);
  EXPECT_NE(ErrorOf([&] { decoder.Generate({}, Greedy(3), nullptr); }).find("the prompt is empty"),
            std::string::npos);
  SamplingOptions o = Greedy(3);
  o.stop = {"x"};
  EXPECT_NE(ErrorOf([&] { decoder.Generate({1}, o, nullptr); }).find("stop strings need a tokenizer"),
            std::string::npos);
  o.temperature = -1;
  o.stop = {};
  EXPECT_NE(ErrorOf([&] { decoder.Generate({1}, o, nullptr); }).find("temperature"), std::string::npos);
}

// ---- text generation with a trained tokenizer --------------------------------------------------

class TextTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    path_ = test::TrainTokenizer(*dir_, &why_);
    if (!path_.empty()) tokenizer_ = LoadSentencePieceTokenizer(path_).release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!tokenizer_) GTEST_SKIP() << why_;
  }

  // A model that, after BOS, greedily generates exactly the tokens of `text` and then EOS.
  CausalLM ModelGenerating(const std::string& text, std::vector<int64_t>* ids_out = nullptr) {
    const std::vector<int64_t> ids = tokenizer_->Encode(text);
    EXPECT_EQ(tokenizer_->Decode(ids), text) << "pick a text the tokenizer round-trips";
    std::map<int64_t, int64_t> next;
    int64_t prev = tokenizer_->bos_id();
    for (int64_t id : ids) {
      EXPECT_EQ(next.count(prev), 0u) << "token " << prev << " repeats in the chain of '" << text << "'";
      next[prev] = id;
      prev = id;
    }
    next[prev] = tokenizer_->eos_id();
    if (ids_out) *ids_out = ids;
    return test::ScriptedModel(tokenizer_->vocab_size(), next, tokenizer_->eos_id());
  }

  struct Streamed {
    GenerationResult result;
    std::vector<std::string> deltas;
    std::string joined;
  };
  Streamed Generate(CausalLM lm, SamplingOptions o, int cancel_after = -1) {
    Streamed s;
    s.result = Decoder(lm).Generate({tokenizer_->bos_id()}, o, tokenizer_, [&](const std::string& d) {
      s.deltas.push_back(d);
      s.joined += d;
      return cancel_after < 0 || static_cast<int>(s.deltas.size()) < cancel_after;
    });
    return s;
  }

  static test::TempDir* dir_;
  static std::string path_, why_;
  static Tokenizer* tokenizer_;
};
test::TempDir* TextTest::dir_ = nullptr;
std::string TextTest::path_, TextTest::why_;
Tokenizer* TextTest::tokenizer_ = nullptr;

const char* kText = "hello world, this is the end of it";

TEST_F(TextTest, TokenizerBasics) {
  EXPECT_GE(tokenizer_->vocab_size(), 256 + 3);  // byte fallback pieces and the specials
  EXPECT_EQ(tokenizer_->bos_id(), 1);
  EXPECT_EQ(tokenizer_->eos_id(), 2);
  const auto ids = tokenizer_->Encode(kText);
  EXPECT_GT(ids.size(), 3u);
  EXPECT_LT(ids.size(), std::string(kText).size());  // merges happened
  EXPECT_EQ(tokenizer_->Decode(ids), kText);
  EXPECT_EQ(tokenizer_->Decode(tokenizer_->Encode("ü日")), "ü日");  // via byte pieces
  EXPECT_THROW(tokenizer_->Decode({tokenizer_->vocab_size()}), ModelError);
  EXPECT_EQ(LoadTokenizer(dir_->path()), nullptr);  // no tokenizer.model there
  test::WriteFile(*dir_ / "bad.model", "not a sentencepiece model");
  EXPECT_THROW(LoadSentencePieceTokenizer(*dir_ / "bad.model"), ModelError);
}

TEST_F(TextTest, StreamsTheWholeTextAndEndsAtEos) {
  std::vector<int64_t> ids;
  CausalLM lm = ModelGenerating(kText, &ids);
  const Streamed s = Generate(lm, Greedy(100));
  EXPECT_EQ(s.result.finish, FinishReason::kEos);
  EXPECT_EQ(s.result.tokens, ids);
  EXPECT_EQ(s.result.text, kText);
  EXPECT_EQ(s.joined, s.result.text);
  EXPECT_GE(s.deltas.size(), ids.size() / 2) << "text should stream token by token";
}

TEST_F(TextTest, MaxTokensCutsTheText) {
  std::vector<int64_t> ids;
  CausalLM lm = ModelGenerating(kText, &ids);
  const Streamed s = Generate(lm, Greedy(4));
  EXPECT_EQ(s.result.finish, FinishReason::kLength);
  ASSERT_EQ(s.result.tokens.size(), 4u);
  EXPECT_EQ(s.result.text, tokenizer_->Decode({ids.begin(), ids.begin() + 4}));
  EXPECT_EQ(s.joined, s.result.text);
}

TEST_F(TextTest, StopStringIsNeverStreamed) {
  CausalLM lm = ModelGenerating(kText);
  SamplingOptions o = Greedy(100);
  o.stop = {"end"};
  const Streamed s = Generate(lm, o);
  EXPECT_EQ(s.result.finish, FinishReason::kStop);
  EXPECT_EQ(s.result.text, "hello world, this is the ");
  EXPECT_EQ(s.joined, s.result.text);
  for (const auto& d : s.deltas) EXPECT_EQ(d.find("en"), std::string::npos) << "streamed '" << d << "'";
  // Generation stopped at the token that completed the stop string.
  const std::string decoded = tokenizer_->Decode(s.result.tokens);
  EXPECT_NE(decoded.find("end"), std::string::npos) << decoded;
  EXPECT_EQ(tokenizer_->Decode({s.result.tokens.begin(), s.result.tokens.end() - 1}).find("end"),
            std::string::npos);
}

TEST_F(TextTest, StopStringAcrossTokenBoundary) {
  std::vector<int64_t> ids;
  CausalLM lm = ModelGenerating(kText, &ids);
  // The text offset where token 4 starts; the stop string straddles it.
  const size_t boundary = tokenizer_->Decode({ids.begin(), ids.begin() + 4}).size();
  const std::string text = kText;
  ASSERT_GT(boundary, 2u);
  ASSERT_LT(boundary + 2, text.size());
  const std::string stop = text.substr(boundary - 2, 4);
  ASSERT_EQ(text.find(stop), boundary - 2) << "stop '" << stop << "' occurs earlier";
  SamplingOptions o = Greedy(100);
  o.stop = {stop};
  const Streamed s = Generate(lm, o);
  EXPECT_EQ(s.result.finish, FinishReason::kStop);
  EXPECT_EQ(s.result.text, text.substr(0, boundary - 2));
  EXPECT_EQ(s.joined, s.result.text);
  EXPECT_EQ(s.result.tokens.size(), 5u);  // token 4 completes the stop string
}

TEST_F(TextTest, EarliestOfSeveralStopStringsWins) {
  CausalLM lm = ModelGenerating(kText);
  SamplingOptions o = Greedy(100);
  o.stop = {"of it", "world", "xyz"};
  const Streamed s = Generate(lm, o);
  EXPECT_EQ(s.result.finish, FinishReason::kStop);
  EXPECT_EQ(s.result.text, "hello ");
  EXPECT_EQ(s.joined, "hello ");
}

TEST_F(TextTest, StopStringAtTheStart) {
  CausalLM lm = ModelGenerating(kText);
  SamplingOptions o = Greedy(100);
  o.stop = {"hel"};
  const Streamed s = Generate(lm, o);
  EXPECT_EQ(s.result.finish, FinishReason::kStop);
  EXPECT_EQ(s.result.text, "");
  EXPECT_EQ(s.joined, "");
}

TEST_F(TextTest, HeldBackTextIsReleasedWhenTheStopDoesNotMatch) {
  std::vector<int64_t> ids;
  CausalLM lm = ModelGenerating(kText, &ids);
  SamplingOptions o = Greedy(100);
  o.stop = {"this is the beginning", "of itself"};  // long prefixes of the text occur, never the whole
  const Streamed s = Generate(lm, o);
  EXPECT_EQ(s.result.finish, FinishReason::kEos);
  EXPECT_EQ(s.result.text, kText);
  EXPECT_EQ(s.joined, kText);
  // "of it" at the end can only be streamed by the final flush.
  ASSERT_FALSE(s.deltas.empty());
  EXPECT_NE(s.deltas.back().find("of it"), std::string::npos) << s.deltas.back();
  // Held back text flushed at max_tokens too.
  const Streamed cut = Generate(lm, [&] { SamplingOptions c = o; c.max_tokens = static_cast<int64_t>(ids.size()); return c; }());
  EXPECT_EQ(cut.result.finish, FinishReason::kLength);
  EXPECT_EQ(cut.joined, kText);
}

TEST_F(TextTest, CancelWithTokenizer) {
  CausalLM lm = ModelGenerating(kText);
  const Streamed s = Generate(lm, Greedy(100), /*cancel_after=*/2);
  EXPECT_EQ(s.result.finish, FinishReason::kCancelled);
  EXPECT_EQ(s.deltas.size(), 2u);
  EXPECT_EQ(s.joined, s.result.text);
  EXPECT_LT(s.result.text.size(), std::string(kText).size());
}

TEST_F(TextTest, EmptyStopStringRejected) {
  CausalLM lm = ModelGenerating(kText);
  SamplingOptions o = Greedy(10);
  o.stop = {""};
  EXPECT_NE(ErrorOf([&] { Generate(lm, o); }).find("stop strings must not be empty"), std::string::npos);
}

// Characters outside the tokenizer's training text are spelled with byte-fallback pieces, one
// UTF-8 byte per token. Streaming must not emit the partial characters (which sentencepiece
// decodes as U+FFFD) and must end with exactly the text.
TEST_F(TextTest, StreamsMultiByteCharactersSplitAcrossByteTokens) {
  const std::string text = "ü日";  // C3 BC, E6 97 A5: five byte pieces, all distinct
  std::vector<int64_t> ids;
  CausalLM lm = ModelGenerating(text, &ids);
  ASSERT_GE(ids.size(), 5u);
  const Streamed s = Generate(lm, Greedy(100));
  EXPECT_EQ(s.result.finish, FinishReason::kEos);
  EXPECT_EQ(s.result.text, text);
  EXPECT_EQ(s.joined, text) << "streamed deltas do not add up to the text";
  for (const auto& d : s.deltas) {
    EXPECT_EQ(d.find("\xEF\xBF\xBD"), std::string::npos) << "streamed a U+FFFD for a partial character";
    EXPECT_TRUE(CompleteUtf8(d)) << "streamed a delta that splits a character";
  }
  EXPECT_EQ(s.deltas.size(), 2u) << "one delta per completed character";
}

}  // namespace
}  // namespace sharedllm

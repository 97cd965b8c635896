// Evaluation harness: scorer worked examples and smoke runs of `eval ppl` / `eval passkey` on a
// tiny model (an untrained SharedLLM must score exactly like its truncated base model).
#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "llm/errors.h"
#include "eval/evaluation.h"
#include "sharedllm/loaded_model.h"
#include "llm/scoring.h"
#include "tests/model_util.h"

namespace sharedllm {
namespace {

TEST(EvaluationTest, FirstIntegerWorkedExamples) {
  EXPECT_EQ(FirstInteger(" 71432. Remember"), 71432);
  EXPECT_EQ(FirstInteger("the key is 0042 and 7"), 42);
  EXPECT_EQ(FirstInteger("no digits"), -1);
  EXPECT_EQ(FirstInteger(""), -1);
  EXPECT_EQ(FirstInteger("-5"), 5);  // sign is not part of a pass key
}

// A tiny SharedLLM built from the bundled tiny model (real tokenizer, random weights).
std::shared_ptr<LoadedModel> TinySharedLLM(const test::TempDir& dir) {
  RuntimeOptions o;
  o.threads = 1;
  auto tiny = LoadModel(std::string(SHAREDLLM_SOURCE_DIR) + "/models/tiny", o);
  SharedLLMConfig sc;
  sc.num_injection_layers = 1;
  sc.chunk_size = 32;
  sc.tree_depth = 2;
  sc.alphas = {4, 2};
  tiny->shared = std::make_shared<SharedLLM>(tiny->lm, sc);
  return tiny;
}

TEST(EvaluationTest, UntrainedSharedLLMPerplexityEqualsTruncated) {
  test::TempDir dir;
  auto model = TinySharedLLM(dir);
  test::WriteTokenShard(dir / "heldout.bin", 1000, {test::SeededIds(4 * 256 + 10, 1000, 3)});
  const TokenShard shard = TokenShard::Open(dir / "heldout.bin");
  const auto points = EvaluatePerplexity(*model, shard, {1, 2, 4}, 3, 1);
  ASSERT_EQ(points.size(), 3u);
  for (const auto& p : points) {
    EXPECT_EQ(p.windows, 3);
    EXPECT_GT(p.truncated_ppl, 1.0);
    // o_proj is zero: the context cannot change a score.
    EXPECT_NEAR(p.sharedllm_ppl, p.truncated_ppl, 1e-6 * p.truncated_ppl) << p.length_multiple;
    EXPECT_LT(p.log_ratio_se, 1e-6) << p.length_multiple;
    EXPECT_LT(p.copyable_log_ratio_se, 1e-6) << p.length_multiple;
    EXPECT_GT(p.streaming_ppl, 1.0);
  }
  // StreamingLLM over L = W tokens evicts nothing: it is the truncated model; beyond, it is not,
  // and its paired standard error against the truncated model says by how much per window.
  EXPECT_NEAR(points[0].streaming_ppl, points[0].truncated_ppl, 1e-5 * points[0].truncated_ppl);
  EXPECT_LT(points[0].streaming_log_ratio_se, 1e-5);
  EXPECT_GT(std::fabs(points[2].streaming_ppl - points[2].truncated_ppl), 1e-4 * points[2].truncated_ppl);
  EXPECT_GT(points[2].streaming_log_ratio_se, 1e-6);
  EXPECT_TRUE(std::isfinite(points[2].streaming_log_ratio_se));
  // Same windows at every length: the truncated column is one number.
  EXPECT_DOUBLE_EQ(points[0].truncated_ppl, points[2].truncated_ppl);
}

// One document of three periods of 400 seeded ids (vocabulary 1,000): past the first period every
// token is copyable from the context.
TokenShard PeriodicShard(const test::TempDir& dir) {
  const std::vector<int64_t> period = test::SeededIds(400, 1000, 5);
  std::vector<int64_t> doc;
  for (int r = 0; r < 3; ++r) doc.insert(doc.end(), period.begin(), period.end());
  test::WriteTokenShard(dir / "periodic.bin", 1000, {doc});
  return TokenShard::Open(dir / "periodic.bin");
}

TEST(EvaluationTest, CopyableTokensWorkedExample) {
  // context 7 8 9 3 5; text 1 7 8 2 3 5 3 5: flags for the targets 7 8 2 3 5 3 5.
  // (1,7) not in the context; (7,8) is and 8 is new: copyable; (8,2), (2,3), (5,3) are not in it;
  // (3,5) is and 5 is new: copyable; the second (3,5) is already in the text.
  EXPECT_EQ(CopyableTokens({7, 8, 9, 3, 5}, {1, 7, 8, 2, 3, 5, 3, 5}),
            (std::vector<bool>{false, true, false, false, true, false, false}));
  // A token already in the text is not copyable, even with a bigram the text has not had.
  EXPECT_EQ(CopyableTokens({9, 1}, {1, 9, 1}), (std::vector<bool>{false, false}));
  EXPECT_EQ(CopyableTokens({}, {1, 2}), (std::vector<bool>{false}));
  EXPECT_TRUE(CopyableTokens({1, 2}, {1}).empty());
}

// Renaming is one to one, alike in the context and the running text, inside [lo, hi), and leaves
// every other id; the same generator state gives the same renaming.
TEST(EvaluationTest, RenameTokensIsOneToOneAndAlikeInBoth) {
  const std::vector<int64_t> context0 = {5, 100, 101, 5, 100, 109}, running0 = {100, 7, 101, 102, 110};
  int moved = 0;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    std::vector<int64_t> context = context0, running = running0;
    std::mt19937_64 rng(seed);
    RenameTokens(context, running, 100, 110, rng);
    EXPECT_EQ(context[0], 5);
    EXPECT_EQ(context[3], 5);
    EXPECT_EQ(running[1], 7);
    EXPECT_EQ(running[4], 110);  // hi is outside the range
    EXPECT_EQ(context[1], context[4]);
    EXPECT_EQ(context[1], running[0]);
    EXPECT_EQ(context[2], running[2]);
    const std::set<int64_t> renamed = {context[1], context[2], context[5], running[3]};
    EXPECT_EQ(renamed.size(), 4u) << seed;  // 100, 101, 109, 102 stay distinct
    for (int64_t id : renamed) {
      EXPECT_GE(id, 100);
      EXPECT_LT(id, 110);
    }
    moved += context[1] != 100;
    std::vector<int64_t> again_c = context0, again_r = running0;
    std::mt19937_64 again(seed);
    RenameTokens(again_c, again_r, 100, 110, again);
    EXPECT_EQ(again_c, context);
    EXPECT_EQ(again_r, running);
  }
  EXPECT_GE(moved, 15);  // 100 keeps its id with probability 1/10
  std::vector<int64_t> c = {1}, r = {2};
  std::mt19937_64 rng(1);
  EXPECT_THROW(RenameTokens(c, r, 5, 5, rng), ModelError);
}

// --rename-ids: a bijection on the ids, so the same tokens are copyable (the same fraction), the
// text's renaming is the same at every length (one truncated perplexity), and the text scored is
// another than without it; bad ranges and renaming beside a foreign context are refused.
TEST(EvaluationTest, RenamedPerplexityScoresTheSameWindowsRenamed) {
  test::TempDir dir;
  auto model = TinySharedLLM(dir);
  test::RandomizeCrossAttention(model->lm, 9);
  const TokenShard shard = PeriodicShard(dir);
  PplOptions renamed;
  renamed.rename_ids = {3, 1000};
  const auto plain = EvaluatePerplexity(*model, shard, {1, 2, 4}, 3, 1);
  const auto r = EvaluatePerplexity(*model, shard, {1, 2, 4}, 3, 1, renamed);
  ASSERT_EQ(r.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(r[i].copyable_fraction, plain[i].copyable_fraction);
    EXPECT_DOUBLE_EQ(r[i].truncated_ppl, r[0].truncated_ppl);
    EXPECT_GT(std::fabs(r[i].truncated_ppl - plain[i].truncated_ppl), 1e-3 * plain[i].truncated_ppl);
  }
  EXPECT_GT(r[2].copyable_fraction, 0.5);
  EXPECT_DOUBLE_EQ(EvaluatePerplexity(*model, shard, {4}, 3, 1, renamed)[0].sharedllm_ppl, r[2].sharedllm_ppl);
  for (const std::vector<int64_t>& bad : std::vector<std::vector<int64_t>>{{3}, {3, 4}, {3, 1001}, {-1, 5}}) {
    PplOptions o;
    o.rename_ids = bad;
    EXPECT_THROW(EvaluatePerplexity(*model, shard, {4}, 1, 1, o), ModelError) << bad.size();
  }
  renamed.foreign_context = true;
  EXPECT_THROW(EvaluatePerplexity(*model, shard, {4}, 1, 1, renamed), ModelError);
}

// Perplexity split by copyability: a document that repeats itself with a period longer than the
// window has its scored tokens copyable once the context holds a period, none without context;
// both parts pool to the whole (each window scores as many tokens).
TEST(EvaluationTest, PerplexitySplitsCopyableTokensFromTheOthers) {
  test::TempDir dir;
  auto model = TinySharedLLM(dir);
  test::RandomizeCrossAttention(model->lm, 9);
  const TokenShard shard = PeriodicShard(dir);
  PplOptions full;
  full.full_attention_max = 4;
  const auto points = EvaluatePerplexity(*model, shard, {1, 4}, 3, 1, full);
  ASSERT_EQ(points.size(), 2u);
  EXPECT_EQ(points[0].copyable_fraction, 0.0);
  EXPECT_EQ(points[0].sharedllm_copyable_ppl, 0.0);
  const PplPoint& p = points[1];
  EXPECT_GT(p.copyable_fraction, 0.5);
  for (double ppl : {p.sharedllm_copyable_ppl, p.truncated_copyable_ppl}) EXPECT_GT(ppl, 1.0);
  const auto pooled = [&](double copyable, double other) {
    return std::exp(p.copyable_fraction * std::log(copyable) +
                    (1 - p.copyable_fraction) * std::log(std::max(other, 1e-300)));
  };
  if (p.copyable_fraction < 1) {
    EXPECT_NEAR(pooled(p.sharedllm_copyable_ppl, p.sharedllm_other_ppl), p.sharedllm_ppl, 1e-6 * p.sharedllm_ppl);
    EXPECT_NEAR(pooled(p.truncated_copyable_ppl, p.truncated_other_ppl), p.truncated_ppl, 1e-6 * p.truncated_ppl);
  } else {
    EXPECT_NEAR(p.sharedllm_copyable_ppl, p.sharedllm_ppl, 1e-6 * p.sharedllm_ppl);
    EXPECT_NEAR(p.truncated_copyable_ppl, p.truncated_ppl, 1e-6 * p.truncated_ppl);
  }
  // Full attention (YaRN) splits the same way: its parts pool to its perplexity.
  EXPECT_GT(p.full_yarn_copyable_ppl, 1.0);
  if (p.copyable_fraction < 1) {
    EXPECT_NEAR(pooled(p.full_yarn_copyable_ppl, p.full_yarn_other_ppl), p.full_yarn_ppl, 1e-6 * p.full_yarn_ppl);
  } else {
    EXPECT_NEAR(p.full_yarn_copyable_ppl, p.full_yarn_ppl, 1e-6 * p.full_yarn_ppl);
  }
  EXPECT_GT(p.copyable_log_ratio_se, 0.0);
  EXPECT_TRUE(std::isfinite(p.copyable_log_ratio_se));
  // The cross-attention reads the context: the copyable tokens score differently with it.
  EXPECT_NE(p.sharedllm_copyable_ppl, p.truncated_copyable_ppl);
}

// --foreign-context: the same windows and text (the truncated column is identical), but SharedLLM
// reads another document's tokens, so with a cross-attention that reads its context the scores
// differ; one long-enough document is refused.
TEST(EvaluationTest, ForeignContextScoresTheSameTextWithAnotherDocumentsContext) {
  test::TempDir dir;
  auto model = TinySharedLLM(dir);
  test::RandomizeCrossAttention(model->lm, 9);
  test::WriteTokenShard(dir / "two.bin", 1000,
                        {test::SeededIds(4 * 256 + 10, 1000, 3), test::SeededIds(4 * 256 + 10, 1000, 4)});
  const TokenShard two = TokenShard::Open(dir / "two.bin");
  const auto own = EvaluatePerplexity(*model, two, {1, 4}, 4, 1);
  PplOptions foreign_options;
  foreign_options.foreign_context = true;
  const auto foreign = EvaluatePerplexity(*model, two, {1, 4}, 4, 1, foreign_options);
  ASSERT_EQ(own.size(), 2u);
  ASSERT_EQ(foreign.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_DOUBLE_EQ(own[i].truncated_ppl, foreign[i].truncated_ppl);
    EXPECT_DOUBLE_EQ(own[i].streaming_ppl, foreign[i].streaming_ppl);
  }
  EXPECT_DOUBLE_EQ(foreign[0].sharedllm_ppl, foreign[0].truncated_ppl);  // 1x: no context at all
  EXPECT_NE(own[1].sharedllm_ppl, own[1].truncated_ppl);
  EXPECT_GT(std::fabs(foreign[1].sharedllm_ppl - own[1].sharedllm_ppl), 1e-6 * own[1].sharedllm_ppl);
  // Deterministic: the same foreign contexts again.
  EXPECT_DOUBLE_EQ(EvaluatePerplexity(*model, two, {4}, 4, 1, foreign_options)[0].sharedllm_ppl,
                   foreign[1].sharedllm_ppl);

  test::WriteTokenShard(dir / "one.bin", 1000, {test::SeededIds(4 * 256 + 10, 1000, 3)});
  const TokenShard one = TokenShard::Open(dir / "one.bin");
  EXPECT_THROW(EvaluatePerplexity(*model, one, {4}, 2, 1, foreign_options), ModelError);
}

TEST(EvaluationTest, PairedMeanDifferenceWorkedExample) {
  // Differences 1, 2, 3: mean 2, sample standard deviation 1, standard error 1/sqrt(3).
  const auto d = PairedMeanDifference({1.5, 2.5, 4.0}, {0.5, 0.5, 1.0});
  EXPECT_DOUBLE_EQ(d.mean, 2.0);
  EXPECT_NEAR(d.standard_error, 1.0 / std::sqrt(3.0), 1e-12);
  // A constant shift is known exactly; one pair has no spread to measure.
  EXPECT_DOUBLE_EQ(PairedMeanDifference({3, 4, 5}, {2, 3, 4}).standard_error, 0.0);
  const auto one = PairedMeanDifference({2.0}, {0.5});
  EXPECT_DOUBLE_EQ(one.mean, 1.5);
  EXPECT_DOUBLE_EQ(one.standard_error, 0.0);
  EXPECT_THROW(PairedMeanDifference({1, 2}, {1}), ModelError);
}

TEST(EvaluationTest, PooledMeanDifferenceWorkedExample) {
  // Windows of 1 and 3 tokens summing to 2 and 4: mean 6 / 4 = 1.5; residuals 2 - 1.5 = 0.5 and
  // 4 - 4.5 = -0.5, so SE = sqrt(0.5 x 2 / 1) / 4 = 0.25.
  const auto d = PooledMeanDifference({2, 4}, {1, 3});
  EXPECT_DOUBLE_EQ(d.mean, 1.5);
  EXPECT_NEAR(d.standard_error, 0.25, 1e-12);
  // Equal counts: the per-window means' paired standard error, divided by the count.
  const auto e = PooledMeanDifference({2, 4, 6}, {2, 2, 2});
  EXPECT_DOUBLE_EQ(e.mean, 2.0);
  EXPECT_NEAR(e.standard_error, PairedMeanDifference({1, 2, 3}, {0, 0, 0}).standard_error, 1e-12);
  EXPECT_DOUBLE_EQ(PooledMeanDifference({}, {}).mean, 0.0);
  EXPECT_DOUBLE_EQ(PooledMeanDifference({3}, {2}).standard_error, 0.0);
  EXPECT_THROW(PooledMeanDifference({1, 2}, {1}), ModelError);
}

// --kv-dtype: the context read back from each stored format. float32 is what the model computed
// (the same scores); bfloat16 and int8 change them, a little.
TEST(EvaluationTest, PerplexityReadsTheContextInTheStoredFormat) {
  test::TempDir dir;
  auto model = TinySharedLLM(dir);
  test::RandomizeCrossAttention(model->lm, 9);
  const TokenShard shard = PeriodicShard(dir);
  const auto plain = EvaluatePerplexity(*model, shard, {4}, 3, 1);
  PplOptions o;
  o.kv_format = KvFormat::kFloat32;
  EXPECT_DOUBLE_EQ(EvaluatePerplexity(*model, shard, {4}, 3, 1, o)[0].sharedllm_ppl, plain[0].sharedllm_ppl);
  for (KvFormat f : {KvFormat::kBFloat16, KvFormat::kInt8}) {
    o.kv_format = f;
    const auto p = EvaluatePerplexity(*model, shard, {4}, 3, 1, o);
    EXPECT_NE(p[0].sharedllm_ppl, plain[0].sharedllm_ppl) << KvFormatName(f);
    EXPECT_NEAR(p[0].sharedllm_ppl, plain[0].sharedllm_ppl, 0.05 * plain[0].sharedllm_ppl) << KvFormatName(f);
    EXPECT_EQ(p[0].truncated_ppl, plain[0].truncated_ppl) << "no context, nothing stored";
  }
}

TEST(EvaluationTest, PasskeySmokeRun) {
  test::TempDir dir;
  auto model = TinySharedLLM(dir);
  const auto points = EvaluatePasskey(*model, {1, 2}, {0, 1}, 1, 7);
  ASSERT_EQ(points.size(), 4u);
  for (const auto& p : points) {
    EXPECT_EQ(p.trials, 1);
    EXPECT_LE(p.sharedllm_correct, 1);
    EXPECT_LE(p.truncated_correct, 1);
    ASSERT_EQ(p.keys.size(), 1u);
    ASSERT_EQ(p.sharedllm_answers.size(), 1u);
    ASSERT_EQ(p.truncated_answers.size(), 1u);
    EXPECT_GE(p.keys[0], 10000);
    EXPECT_LT(p.keys[0], 100000);
    EXPECT_EQ(p.sharedllm_correct, p.sharedllm_answers[0] == p.keys[0] ? 1 : 0);
    EXPECT_EQ(p.truncated_correct, p.truncated_answers[0] == p.keys[0] ? 1 : 0);
    ASSERT_EQ(p.key_full_resolution.size(), 1u);
    EXPECT_TRUE(p.key_full_resolution[0] == 0 || p.key_full_resolution[0] == 1);
  }
}

TEST(EvaluationTest, SpanAtFullResolutionNeedsOneStrideOneNodeHoldingTheWholeSpan) {
  // Two chunks of 64 tokens at 0 and 64; alphas {2, 1}: level 1 at stride 2, level 2 at stride 1.
  auto node = [](int64_t chunk, int64_t level, int64_t begin, int64_t end) {
    EncodedNode e;
    e.chunk = chunk;
    e.node.level = level;
    e.node.begin = begin;
    e.node.end = end;
    return e;
  };
  const std::vector<EncodedNode> nodes = {node(0, 1, 0, 32), node(0, 2, 32, 48), node(0, 2, 48, 64),
                                          node(1, 2, 0, 16), node(1, 2, 16, 32), node(1, 1, 32, 64)};
  std::vector<const EncodedNode*> selected;
  for (const auto& n : nodes) selected.push_back(&n);
  const std::vector<int64_t> chunk_begins = {0, 64};
  const std::vector<int64_t> alphas = {2, 1};
  EXPECT_TRUE(SpanAtFullResolution(33, 38, selected, chunk_begins, alphas));   // chunk 0, level 2
  EXPECT_TRUE(SpanAtFullResolution(64, 80, selected, chunk_begins, alphas));   // chunk 1's first node, whole
  EXPECT_FALSE(SpanAtFullResolution(5, 10, selected, chunk_begins, alphas));   // stride 2
  EXPECT_FALSE(SpanAtFullResolution(100, 104, selected, chunk_begins, alphas));  // chunk 1, stride 2
  EXPECT_FALSE(SpanAtFullResolution(45, 50, selected, chunk_begins, alphas));  // split over two nodes
  EXPECT_FALSE(SpanAtFullResolution(62, 66, selected, chunk_begins, alphas));  // split over two chunks
  EXPECT_TRUE(SpanAtFullResolution(5, 10, selected, chunk_begins, {1, 1}));    // every level at stride 1
}

}  // namespace
}  // namespace sharedllm

// SharedLLM: zero-init invariance, the context tree, search, static = dynamic, cross-attention
// positions, cached decoding with context, the trainable set, and checkpoint round trips.
#include <random>
#include <set>

#include <gtest/gtest.h>

#include <c10/core/InferenceMode.h>

#include "sharedllm/cross_attention.h"
#include "llm/decoder.h"
#include "llm/errors.h"
#include "sharedllm/loaded_model.h"
#include "sharedllm/node_records.h"
#include "llm/safetensors.h"
#include "llm/scoring.h"
#include "sharedllm/sharedllm.h"
#include "sharedllm/reading.h"
#include "llm/weights.h"
#include "tests/model_util.h"

namespace sharedllm {
namespace {

using test::MaxAbsDiff;
using test::RandomizeCrossAttention;
using test::SeededIds;

ModelConfig Config() {
  ModelConfig c = test::TinyConfig();
  c.num_hidden_layers = 3;
  return c;
}

SharedLLMConfig SmallShared(int64_t layers = 2) {
  SharedLLMConfig s;
  s.num_injection_layers = layers;
  s.chunk_size = 32;
  s.tree_depth = 3;
  s.alphas = {4, 2, 1};
  return s;
}

// "Trains" a separate compressor: seeded noise on every compressor.* weight.
void TrainCompressor(CausalLM& lm, uint64_t seed) {
  c10::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& p : lm->named_parameters()) {
    if (p.key().rfind("compressor.", 0) == 0) {
      p.value().add_(at::normal(0.0, 0.05, p.value().sizes(), gen));
    }
  }
}

std::vector<const EncodedNode*> Pointers(const std::vector<EncodedNode>& nodes) {
  std::vector<const EncodedNode*> out;
  for (const auto& n : nodes) out.push_back(&n);
  return out;
}

// Scores `text` reading `context` through the right-child (language modelling) tree.
std::vector<double> ScoreWithContext(const SharedLLM& s, const std::vector<int64_t>& context,
                                     const std::vector<int64_t>& text) {
  auto nodes = s.BuildDynamicTree(context, at::Tensor());
  auto ctx = s.MakeContext(Pointers(nodes), s.Chunks(context.size()).size());
  CausalLM lm = s.lm();  // a handle to the same module
  return TokenNll(lm, text, &ctx);
}

double MaxDiff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

TEST(SharedLLMTest, UntrainedModelScoresExactlyLikeTheBaseModel) {
  for (const std::string injection : {"bottom", "top", "interleaved"}) {
    CausalLM lm = test::TinyModel(Config());
    const auto text = SeededIds(40, 61, 7);
    const auto base = TokenNll(lm, text);
    auto sc = SmallShared();
    sc.injection = injection;
    SharedLLM s(lm, sc);
    const auto with_context = ScoreWithContext(s, SeededIds(150, 61, 8), text);
    EXPECT_LT(MaxDiff(base, with_context), 1e-5) << injection;
  }
}

TEST(SharedLLMTest, TrainedCrossAttentionMakesContextAndChunkOrderMatter) {
  CausalLM lm = test::TinyModel(Config());
  SharedLLM s(lm, SmallShared());
  RandomizeCrossAttention(lm, 3);
  const auto text = SeededIds(30, 61, 7);
  const auto base = TokenNll(lm, text);
  // Three full chunks of 32; the swapped context exchanges the first two chunks.
  const auto context = SeededIds(96, 61, 9);
  std::vector<int64_t> swapped(context.begin() + 32, context.begin() + 64);
  swapped.insert(swapped.end(), context.begin(), context.begin() + 32);
  swapped.insert(swapped.end(), context.begin() + 64, context.end());
  const auto a = ScoreWithContext(s, context, text);
  const auto b = ScoreWithContext(s, swapped, text);
  EXPECT_GT(MaxDiff(base, a), 1e-3);  // the context is read
  EXPECT_GT(MaxDiff(a, b), 1e-4);     // chunk positions make order matter

  // Without chunk positions, cross-attention is a set operation over keys: order cannot matter.
  CausalLM lm2 = test::TinyModel(Config());
  auto sc = SmallShared();
  sc.chunk_positions = false;
  SharedLLM s2(lm2, sc);
  RandomizeCrossAttention(lm2, 3);
  EXPECT_LT(MaxDiff(ScoreWithContext(s2, context, text), ScoreWithContext(s2, swapped, text)), 1e-5);
}

TEST(ContextTreeTest, ShapesPartitionOddLengths) {
  for (int64_t length : {8, 9, 37, 63, 100, 257}) {
    const ChunkTree tree = ChunkTree::Build(length, 3);
    const auto all = tree.AllNodes();
    ASSERT_EQ(all.size(), 14u);
    for (int64_t level = 1; level <= 3; ++level) {
      int64_t at_pos = 0;
      for (int64_t i = 0; i < (int64_t{1} << level); ++i) {
        const TreeNode& n = tree.node(level, i);
        EXPECT_EQ(n.begin, at_pos);
        EXPECT_GE(n.length(), int64_t{1} << (3 - level));
        EXPECT_EQ(all[ChunkTree::FlatIndex(level, i)], n);
        at_pos = n.end;
      }
      EXPECT_EQ(at_pos, length);
    }
    // Inference split: floor(l/2).
    EXPECT_EQ(tree.node(1, 0).length(), length / 2);
  }
  EXPECT_THROW(ChunkTree::Build(7, 3), ModelError);
}

TEST(ContextTreeTest, SplitNoiseJittersButKeepsTheTreeValid) {
  std::mt19937_64 rng(5);
  std::set<int64_t> first_splits;
  for (int i = 0; i < 50; ++i) {
    const ChunkTree tree = ChunkTree::Build(64, 3, &rng, 5.0);
    first_splits.insert(tree.node(1, 0).end);
    for (const TreeNode& n : tree.AllNodes()) EXPECT_GE(n.length(), int64_t{1} << (3 - n.level));
    EXPECT_EQ(tree.node(3, 7).end, 64);
  }
  EXPECT_GT(first_splits.size(), 5u);  // sigma = 64/5: many distinct split points
}

TEST(ContextTreeTest, PreservedNodesAndCompressionRatio) {
  const ChunkTree tree = ChunkTree::Build(256, 3);
  const auto nodes = PreservedNodes(tree, AlwaysRight);
  ASSERT_EQ(nodes.size(), 4u);  // h + 1
  // Right policy: coarse left halves, fine detail at the end of the chunk.
  EXPECT_EQ(nodes[0], tree.node(1, 0));
  EXPECT_EQ(nodes[1], tree.node(2, 2));
  EXPECT_EQ(nodes[2], tree.node(3, 6));
  EXPECT_EQ(nodes[3], tree.node(3, 7));
  const std::vector<int64_t> alphas = {16, 8, 4};
  int64_t kept = 0;
  for (const auto& n : nodes) kept += KeptLength(n.length(), alphas[n.level - 1]);
  EXPECT_EQ(kept, 32);  // 256 / 8
  SharedLLMConfig c;
  EXPECT_DOUBLE_EQ(c.CompressionRatio(), 8.0);
  // Odd length: ceil keeps every block, so kept >= length / 8.
  const ChunkTree odd = ChunkTree::Build(251, 3);
  kept = 0;
  for (const auto& n : PreservedNodes(odd, AlwaysRight)) kept += KeptLength(n.length(), alphas[n.level - 1]);
  // Level 1 keeps [0,125) -> 8; level 2 [125,188) -> 8; level 3 [188,219) -> 8, [219,251) -> 8.
  EXPECT_EQ(kept, 32);
}

TEST(ContextTreeTest, ChunkSpansKeepEveryToken) {
  auto spans = ChunkSpans(100, 32, 8);
  ASSERT_EQ(spans.size(), 3u);  // 32, 32, 36: the 4-token tail joins the last chunk
  EXPECT_EQ(spans[2].first, 64);
  EXPECT_EQ(spans[2].second, 100);
  spans = ChunkSpans(90, 32, 8);
  ASSERT_EQ(spans.size(), 3u);
  EXPECT_EQ(spans[2].second - spans[2].first, 26);
  EXPECT_TRUE(ChunkSpans(5, 32, 8).empty());
}

TEST(ContextTreeTest, EncodeBatchesLongestFirstWithinThreeQuartersAndTheTokenBudget) {
  //                      0   1   2   3  4   5   6   7
  std::vector<int64_t> l = {32, 30, 16, 25, 8, 31, 24, 12};
  using B = std::vector<std::vector<size_t>>;
  // 32 fits 100 / 32 = 3 nodes: 32, 31, 30; then width 25 (3 nodes of >= 18.75): 25, 24; ...
  EXPECT_EQ(EncodeBatches(l, 100), (B{{0, 5, 1}, {3, 6}, {2, 7}, {4}}));
  EXPECT_EQ(EncodeBatches(l, 1000), (B{{0, 5, 1, 3, 6}, {2, 7}, {4}}));
  EXPECT_EQ(EncodeBatches(l, 1), (B{{0}, {5}, {1}, {3}, {6}, {2}, {7}, {4}}));  // at least one each
  EXPECT_TRUE(EncodeBatches({}, 100).empty());
}

TEST(ContextTreeTest, DownsampleModes) {
  auto x = at::arange(10, at::TensorOptions().dtype(at::kFloat)).view({1, 10, 1});
  auto first = Downsample(x, 4, "first").view({-1});
  auto last = Downsample(x, 4, "last").view({-1});
  auto mean = Downsample(x, 4, "mean").view({-1});
  EXPECT_TRUE(at::equal(first, at::tensor({0.f, 4.f, 8.f})));
  EXPECT_TRUE(at::equal(last, at::tensor({3.f, 7.f, 9.f})));
  EXPECT_TRUE(at::allclose(mean, at::tensor({1.5f, 5.5f, 8.5f})));
  EXPECT_THROW(Downsample(x, 4, "median"), ModelError);
}

// Encode batches nodes of different lengths (right-padded, one gather per layer); each node must
// come out as the lower model and Downsample give it for that node alone, in every mode.
TEST(SharedLLMTest, BatchedEncodingEqualsEachNodeAlone) {
  CausalLM lm = test::TinyModel(Config());
  c10::InferenceMode guard;
  const auto doc = SeededIds(150, 61, 33);
  std::mt19937_64 rng(5);
  for (const std::string mode : {"first", "last", "mean"}) {
    SharedLLMConfig sc = SmallShared();
    sc.selection = mode;
    sc.search_vector = mode == "mean" ? "mean" : "last";  // both search vectors, padded batches
    sc.alphas = {8, 3, 1};  // strides that do not divide the (jittered) node lengths
    SharedLLM s(lm, sc);
    std::vector<SharedLLM::NodeJob> jobs;
    const auto spans = s.Chunks(static_cast<int64_t>(doc.size()));
    for (size_t c = 0; c < spans.size(); ++c) {
      const auto tree = ChunkTree::Build(spans[c].second - spans[c].first, 3, &rng, 3.0);
      for (const TreeNode& n : tree.AllNodes()) {
        jobs.push_back({doc.data() + spans[c].first, static_cast<int64_t>(c), n});
      }
    }
    // A small budget: several batches, each mixing lengths.
    const auto encoded = s.Encode(jobs, /*max_batch_tokens=*/100);
    ASSERT_EQ(encoded.size(), jobs.size());
    std::set<int64_t> lengths;
    for (size_t i = 0; i < jobs.size(); ++i) {
      const TreeNode& n = jobs[i].node;
      lengths.insert(n.length());
      EXPECT_EQ(encoded[i].node, n);
      EXPECT_EQ(encoded[i].chunk, jobs[i].chunk);
      std::vector<int64_t> ids(jobs[i].chunk_tokens + n.begin, jobs[i].chunk_tokens + n.end);
      auto alone = lm->ForwardLower(at::tensor(ids).view({1, -1}), 2);
      const int64_t alpha = sc.alphas[n.level - 1];
      for (int64_t j = 0; j < 2; ++j) {
        auto k = Downsample(alone.k[j][0], alpha, mode);
        auto v = Downsample(alone.v[j][0], alpha, mode);
        ASSERT_EQ(encoded[i].k[j].sizes(), k.sizes()) << mode << " node " << i;
        EXPECT_TRUE(encoded[i].k[j].is_contiguous());
        EXPECT_LT(MaxAbsDiff(encoded[i].k[j], k), 1e-5) << mode << " node " << i;
        EXPECT_LT(MaxAbsDiff(encoded[i].v[j], v), 1e-5) << mode << " node " << i;
      }
      const auto search = sc.search_vector == "mean" ? alone.first_layer[0].mean(0)
                                                     : alone.first_layer[0][n.length() - 1];
      EXPECT_LT(MaxAbsDiff(encoded[i].search, search), 1e-5) << mode << " node " << i;
    }
    EXPECT_GT(lengths.size(), 6u) << "the jittered tree should mix many lengths";
  }
}

TEST(SearchTest, PicksTheChildThatHoldsThePlantedMatch) {
  CausalLM lm = test::TinyModel(Config());
  SharedLLM s(lm, SmallShared());
  c10::InferenceMode guard;
  for (int side = 0; side < 4; ++side) {
    // One chunk of 64 tokens; the query is exactly one of its level-1 halves, so that half's
    // search vector equals the query's (cosine 1), with either kind of search vector.
    auto chunk = SeededIds(64, 61, 20 + side);
    std::vector<int64_t> query(chunk.begin() + 32 * (side % 2), chunk.begin() + 32 * (side % 2 + 1));
    auto sc = SmallShared();
    sc.chunk_size = 64;
    sc.search_vector = side < 2 ? "last" : "mean";
    SharedLLM s64(lm, sc);
    DocumentTree tree = s64.BuildStaticTree(chunk);
    auto selected = s64.Select(tree, s64.QueryVector(query));
    ASSERT_EQ(selected.size(), 4u);
    // The preserved level-1 node is the sibling of the expanded (matching) half.
    const EncodedNode* level1 = nullptr;
    for (auto* n : selected) {
      if (n->node.level == 1) level1 = n;
    }
    ASSERT_NE(level1, nullptr);
    EXPECT_EQ(level1->node.index, 1 - side % 2) << "query matched half " << side % 2 << ", "
                                                << sc.search_vector;
  }
}

TEST(SearchTest, StaticTreeSelectionEqualsDynamicConstruction) {
  CausalLM lm = test::TinyModel(Config());
  SharedLLM s(lm, SmallShared());
  c10::InferenceMode guard;
  const auto doc = SeededIds(150, 61, 30);  // chunks 32, 32, 32, 32, 22
  const DocumentTree tree = s.BuildStaticTree(doc);
  ASSERT_EQ(tree.num_chunks(), 5);
  for (int q = 0; q < 4; ++q) {
    at::Tensor query = q == 3 ? at::Tensor() : s.QueryVector(SeededIds(12, 61, 40 + q));
    const auto from_static = s.Select(tree, query);
    const auto dynamic = s.BuildDynamicTree(doc, query);
    ASSERT_EQ(from_static.size(), dynamic.size());
    for (size_t i = 0; i < dynamic.size(); ++i) {
      EXPECT_EQ(from_static[i]->chunk, dynamic[i].chunk);
      EXPECT_EQ(from_static[i]->node, dynamic[i].node);
      for (size_t j = 0; j < dynamic[i].k.size(); ++j) {
        EXPECT_LT(MaxAbsDiff(from_static[i]->k[j], dynamic[i].k[j]), 1e-6);
        EXPECT_LT(MaxAbsDiff(from_static[i]->v[j], dynamic[i].v[j]), 1e-6);
      }
    }
  }
}

TEST(SearchTest, TreeOfChosenChunksEqualsThoseChunksOfTheFullTree) {
  CausalLM lm = test::TinyModel(Config());
  SharedLLM s(lm, SmallShared());
  c10::InferenceMode guard;
  const auto doc = SeededIds(150, 61, 30);  // chunks 32, 32, 32, 32, 22
  const DocumentTree full = s.BuildStaticTree(doc);
  const std::vector<int64_t> chosen = {1, 4};
  const DocumentTree part = s.BuildStaticTree(doc, chosen);
  ASSERT_EQ(part.num_chunks(), 2);
  for (size_t i = 0; i < chosen.size(); ++i) {
    EXPECT_EQ(part.chunks[i].node(1, 0), full.chunks[chosen[i]].node(1, 0));
    ASSERT_EQ(part.nodes[i].size(), full.nodes[chosen[i]].size());
    for (size_t n = 0; n < part.nodes[i].size(); ++n) {
      const EncodedNode& a = part.nodes[i][n];
      const EncodedNode& b = full.nodes[chosen[i]][n];
      EXPECT_EQ(a.chunk, static_cast<int64_t>(i)) << "numbered by reading position";
      EXPECT_EQ(a.node, b.node);  // (values equal up to batching's float rounding)
      EXPECT_LT(MaxAbsDiff(a.search, b.search), 1e-5);
      for (size_t j = 0; j < a.k.size(); ++j) {
        EXPECT_LT(MaxAbsDiff(a.k[j], b.k[j]), 1e-5);
        EXPECT_LT(MaxAbsDiff(a.v[j], b.v[j]), 1e-5);
      }
    }
  }
  EXPECT_THROW(s.BuildStaticTree(doc, {2, 1}), ModelError);
  EXPECT_THROW(s.BuildStaticTree(doc, {5}), ModelError);
}

TEST(SearchTest, ReadBudgetIsTheModelsUnlessLowered) {
  SharedLLMConfig c = SmallShared();
  c.chunk_budget = 8;
  EXPECT_EQ(ReadBudget(c, 0), 8);
  EXPECT_EQ(ReadBudget(c, 3), 3);
  EXPECT_THROW(ReadBudget(c, 9), ModelError);
  EXPECT_THROW(ReadBudget(c, -1), ModelError);
  c.chunk_budget = 0;  // no limit: any request
  EXPECT_EQ(ReadBudget(c, 0), 0);
  EXPECT_EQ(ReadBudget(c, 1000), 1000);
  // The budget travels in sharedllm.json and is validated.
  c.chunk_budget = 128;
  EXPECT_EQ(SharedLLMConfig::FromJsonText(c.ToJsonText()).chunk_budget, 128);
  c.chunk_budget = -2;
  EXPECT_THROW(c.Validate(4), ModelError);
}

TEST(SearchTest, TreesOfABatchEqualEachTreeBuiltAlone) {
  CausalLM lm = test::TinyModel(Config());
  SharedLLMConfig sc = SmallShared();
  sc.split_noise = true;
  SharedLLM s(lm, sc);
  c10::InferenceMode guard;
  const std::vector<std::vector<int64_t>> docs = {SeededIds(150, 61, 50), SeededIds(64, 61, 51),
                                                  SeededIds(97, 61, 52)};
  const std::vector<at::Tensor> queries = {s.QueryVector(SeededIds(12, 61, 53)), at::Tensor(),
                                           s.QueryVector(SeededIds(7, 61, 54))};
  std::vector<std::mt19937_64> batch_rngs = {std::mt19937_64(1), std::mt19937_64(2), std::mt19937_64(3)};
  const auto trees = s.BuildDynamicTrees({&docs[0], &docs[1], &docs[2]}, queries,
                                         {&batch_rngs[0], &batch_rngs[1], &batch_rngs[2]});
  ASSERT_EQ(trees.size(), 3u);
  for (size_t b = 0; b < docs.size(); ++b) {
    std::mt19937_64 rng(b + 1);
    const auto alone = s.BuildDynamicTree(docs[b], queries[b], &rng);
    ASSERT_EQ(trees[b].size(), alone.size()) << "context " << b;
    for (size_t i = 0; i < alone.size(); ++i) {
      EXPECT_EQ(trees[b][i].chunk, alone[i].chunk);
      EXPECT_EQ(trees[b][i].node, alone[i].node) << "context " << b << " node " << i;
      for (size_t j = 0; j < alone[i].k.size(); ++j) {
        EXPECT_LT(MaxAbsDiff(trees[b][i].k[j], alone[i].k[j]), 1e-5);
        EXPECT_LT(MaxAbsDiff(trees[b][i].v[j], alone[i].v[j]), 1e-5);
      }
    }
    EXPECT_EQ(batch_rngs[b](), rng()) << "the same noise was drawn for context " << b;
  }
}

TEST(NodeRecordsTest, KeysAndValuesRoundTripThroughEachStoredFormat) {
  torch::manual_seed(5);
  EncodedNode node;
  node.chunk = 3;
  node.node = TreeNode{1, 0, 0, 16};
  node.search = torch::randn({8});
  node.k = {torch::randn({2, 5, 4}) * 3, torch::randn({2, 5, 4})};
  node.v = {torch::randn({2, 5, 4}), torch::randn({2, 5, 4}) * 0.01};
  node.k[1].select(2, 1).zero_();  // an all-zero channel: scale 0, values stay 0
  const NodeRecord f32 = ToRecord(node, KvFormat::kFloat32);
  const NodeRecord bf16 = ToRecord(node, KvFormat::kBFloat16);
  const NodeRecord i8 = ToRecord(node, KvFormat::kInt8);
  EXPECT_EQ(f32.k[0].dtype, DType::kF32);
  EXPECT_EQ(bf16.k[0].dtype, DType::kBF16);
  EXPECT_EQ(i8.k[0].dtype, DType::kI8);
  EXPECT_TRUE(f32.k_scale.empty() && bf16.k_scale.empty());
  ASSERT_EQ(i8.k_scale.size(), 2u);
  EXPECT_EQ(i8.k_scale[0].shape, (std::vector<int64_t>{2, 1, 4})) << "one scale per head and channel";
  EXPECT_EQ(i8.k_scale[0].dtype, DType::kI8) << "a power of two: its exponent in one byte";
  {
    // The exponent is the least with max |x| / 2^e <= 127: a max of exactly 127 · 2^-3 gives -3.
    EncodedNode exact = node;
    exact.k = {at::full({1, 2, 1}, 127.0 / 8), at::full({1, 2, 1}, 0.0)};
    exact.v = exact.k;
    const NodeRecord r = ToRecord(exact, KvFormat::kInt8);
    EXPECT_EQ(static_cast<int8_t>(r.k_scale[0].data[0]), -3);
    EXPECT_EQ(static_cast<int8_t>(r.k[0].data[0]), 127);
    EXPECT_EQ(MaxAbsDiff(RoundTrip(exact, KvFormat::kInt8).k[0], exact.k[0]), 0.0);
  }
  EXPECT_EQ(i8.k[0].data.size() * 4, f32.k[0].data.size());
  EXPECT_EQ(f32.search.dtype, DType::kF32) << "search vectors: float32 beside float32";
  EXPECT_EQ(i8.search.dtype, DType::kBF16) << "else bfloat16";
  EXPECT_LT(MaxAbsDiff(RoundTrip(node, KvFormat::kInt8).search, node.search), 0.02);
  const EncodedNode back32 = RoundTrip(node, KvFormat::kFloat32);
  EXPECT_EQ(MaxAbsDiff(back32.k[0], node.k[0]), 0.0);
  const EncodedNode back8 = RoundTrip(node, KvFormat::kInt8);
  EXPECT_EQ(back8.k[0].scalar_type(), at::kFloat);
  EXPECT_FALSE(back8.batch) << "read from the stored values, not the encoder's batch";
  for (size_t j = 0; j < 2; ++j) {
    for (const auto& [orig, got] : {std::pair{node.k[j], back8.k[j]}, std::pair{node.v[j], back8.v[j]}}) {
      // Within half a step; the step, a power of two, is below twice max |x| / 127.
      const auto step = orig.abs().amax({1}, true) / 127.0;
      EXPECT_TRUE(((got - orig).abs() <= step * 1.0001 + 1e-7).all().item<bool>());
      EXPECT_GT(MaxAbsDiff(got, orig), 0.0);
    }
  }
  EXPECT_EQ(back8.k[1].select(2, 1).abs().max().item<float>(), 0.0f);
  // Small values keep their relative precision (the scale is per channel, not per tensor).
  EXPECT_LT(MaxAbsDiff(back8.v[1], node.v[1]), 0.01 / 127 * 4);
  EXPECT_THROW(ParseKvFormat("int4"), ModelError);
  EXPECT_EQ(ParseKvFormat(KvFormatName(KvFormat::kInt8)), KvFormat::kInt8);
}

TEST(ContextTreeTest, ParentsShareTheirLeadingKeptRowsWithTheirLeftChild) {
  // "last" at strides 2 then 1: the parent's kept positions 1, 3, ..., 15 are the child's rows.
  EXPECT_EQ(SharedLeadingRows(32, 2, 16, 1, "last"), (std::vector<int64_t>{1, 3, 5, 7, 9, 11, 13, 15}));
  EXPECT_EQ(SharedLeadingRows(32, 2, 16, 1, "first"), (std::vector<int64_t>{0, 2, 4, 6, 8, 10, 12, 14}));
  EXPECT_TRUE(SharedLeadingRows(32, 2, 16, 1, "mean").empty()) << "a block mean is no one position";
  // The paper's strides 16 then 8: parent positions 15, 31, ..., 255 are child rows 1, 3, ..., 31.
  const auto paper = SharedLeadingRows(512, 16, 256, 8, "last");
  ASSERT_EQ(paper.size(), 16u);
  EXPECT_EQ(paper.front(), 1);
  EXPECT_EQ(paper.back(), 31);
  // Strides that do not line up: parent position 2 is no kept position of the child (1, 3, 5).
  EXPECT_TRUE(SharedLeadingRows(12, 3, 6, 2, "last").empty());
  // A short last block of the child still is the child's row: parent 0..16 at 2 keeps 1, ..., 15
  // inside a 9-token child at 2 (kept 1, 3, 5, 7, 8): positions 1, 3, 5, 7 shared.
  EXPECT_EQ(SharedLeadingRows(17, 2, 9, 2, "last"), (std::vector<int64_t>{0, 1, 2, 3}));
  // A parent of one kept row ("first", 4 tokens at stride 4) keeps it: a record has rows.
  EXPECT_TRUE(SharedLeadingRows(4, 4, 2, 2, "first").empty());
  EXPECT_EQ(SharedLeadingRows(8, 4, 4, 2, "first"), (std::vector<int64_t>{0}));
}

TEST(NodeRecordsTest, ParentsAreStoredWithoutTheRowsTheirLeftChildHoldsAndReadBackWhole) {
  CausalLM lm = test::TinyModel(Config());
  for (const std::string selection : {"last", "first"}) {
    SharedLLMConfig sc = SmallShared();  // depth 3, strides 4, 2, 1
    sc.selection = selection;
    SharedLLM s(lm, sc);
    c10::InferenceMode guard;
    const auto doc = SeededIds(70, 61, 31);  // chunks of 32 and 38 tokens
    const DocumentTree tree = s.BuildStaticTree(doc);
    for (const auto& nodes : tree.nodes) {
      const std::vector<NodeRecord> records = ChunkRecords(s, nodes, KvFormat::kFloat32);
      int64_t parents = 0;
      for (size_t i = 0; i < nodes.size(); ++i) {
        const EncodedNode& p = nodes[i];
        const int64_t kept = p.k[0].size(1);
        for (const EncodedNode& left : nodes) {
          if (left.node.level != p.node.level + 1 || left.node.index != 2 * p.node.index) continue;
          ++parents;
          const std::vector<int64_t> rows = s.SharedRows(p.node, left.node);
          ASSERT_FALSE(rows.empty()) << selection;
          // The claim the store relies on: encoded apart (other batches), the rows are the same.
          const at::Tensor index = at::tensor(rows, at::kLong);
          for (size_t j = 0; j < p.k.size(); ++j) {
            const int64_t n = static_cast<int64_t>(rows.size());
            EXPECT_LT(MaxAbsDiff(p.k[j].narrow(1, 0, n), left.k[j].index_select(1, index)), 1e-5);
            EXPECT_LT(MaxAbsDiff(p.v[j].narrow(1, 0, n), left.v[j].index_select(1, index)), 1e-5);
          }
          EXPECT_EQ(records[i].k[0].shape[1], kept - static_cast<int64_t>(rows.size()))
              << "stored once, with the child";
          // A parent stored whole (by an earlier build) reads back as it is; a wrong count throws.
          EXPECT_EQ(WithSharedRows(s, p, left).k[0].size(1), kept);
          EncodedNode cut = p;
          cut.k[0] = cut.k[0].narrow(1, 1, kept - 1);
          EXPECT_THROW(WithSharedRows(s, cut, left), ModelError);
        }
      }
      EXPECT_EQ(parents, 6) << "levels 1 and 2 have children";
      // Stored and read back, every node is what the encoder made.
      const std::vector<EncodedNode> back = RoundTripChunk(s, nodes, KvFormat::kFloat32);
      ASSERT_EQ(back.size(), nodes.size());
      for (size_t i = 0; i < nodes.size(); ++i) {
        EXPECT_EQ(back[i].node, nodes[i].node);
        for (size_t j = 0; j < nodes[i].k.size(); ++j) {
          ASSERT_EQ(back[i].k[j].sizes(), nodes[i].k[j].sizes());
          EXPECT_LT(MaxAbsDiff(back[i].k[j], nodes[i].k[j]), 1e-5);
          EXPECT_LT(MaxAbsDiff(back[i].v[j], nodes[i].v[j]), 1e-5);
        }
      }
      for (const auto& n : RoundTripChunk(s, nodes, KvFormat::kInt8)) {
        EXPECT_EQ(n.k[0].size(1), KeptLength(n.node.length(), sc.alphas[n.node.level - 1]));
      }
    }
  }
}

TEST(SharedLLMTest, CachedDecodingWithContextEqualsFullForward) {
  CausalLM lm = test::TinyModel(Config());
  SharedLLM s(lm, SmallShared());
  RandomizeCrossAttention(lm, 4);
  c10::InferenceMode guard;
  auto nodes = s.BuildDynamicTree(SeededIds(100, 61, 50), at::Tensor());
  auto ctx = s.MakeContext(Pointers(nodes), 3);
  const auto ids = SeededIds(20, 61, 51);
  auto full = lm->forward(test::Ids(ids), nullptr, &ctx).squeeze(0);  // [20, V]
  Decoder decoder(lm, &ctx);
  KVCache cache = lm->NewCache();
  auto first = decoder.Prefill(std::vector<int64_t>(ids.begin(), ids.begin() + 8), cache);
  EXPECT_LT(MaxAbsDiff(first, full[7]), 1e-5);
  for (size_t t = 8; t < ids.size(); ++t) {
    auto step = decoder.DecodeOneToken(ids[t], cache);
    EXPECT_LT(MaxAbsDiff(step, full[t]), 1e-5) << "position " << t;
  }
  // And the context is really used at every decode step.
  auto plain = lm->forward(test::Ids(ids)).squeeze(0);
  EXPECT_GT(MaxAbsDiff(plain[19], full[19]), 1e-3);
}

TEST(SharedLLMTest, PaddedBatchContextEqualsSingleContexts) {
  CausalLM lm = test::TinyModel(Config());
  SharedLLM s(lm, SmallShared());
  RandomizeCrossAttention(lm, 5);
  c10::InferenceMode guard;
  // Two contexts of 3 chunks each but different lengths (so different kept counts).
  auto a = s.BuildDynamicTree(SeededIds(96, 61, 60), at::Tensor());
  auto b = s.BuildDynamicTree(SeededIds(120, 61, 61), at::Tensor());
  auto batch = s.MakeBatchContext({Pointers(a), Pointers(b)}, {3, 3});
  ASSERT_TRUE(batch.key_mask.defined());
  const auto ids_a = SeededIds(10, 61, 62), ids_b = SeededIds(10, 61, 63);
  auto both = at::cat({test::Ids(ids_a), test::Ids(ids_b)}, 0);
  auto logits = lm->forward(both, nullptr, &batch);
  auto ctx_a = s.MakeContext(Pointers(a), 3), ctx_b = s.MakeContext(Pointers(b), 3);
  EXPECT_LT(MaxAbsDiff(logits[0], lm->forward(test::Ids(ids_a), nullptr, &ctx_a)[0]), 1e-5);
  EXPECT_LT(MaxAbsDiff(logits[1], lm->forward(test::Ids(ids_b), nullptr, &ctx_b)[0]), 1e-5);
}

// Gradients reach exactly the parameters marked trainable.
void CheckGradients(bool lower_trainable) {
  CausalLM lm = test::TinyModel(Config());
  for (auto& p : lm->parameters()) p.set_requires_grad(false);
  SharedLLM s(lm, SmallShared(2));
  RandomizeCrossAttention(lm, 6);
  s.SetTrainable(lower_trainable);
  auto nodes = s.BuildDynamicTree(SeededIds(96, 61, 70), at::Tensor());
  auto ctx = s.MakeContext(Pointers(nodes), 3);
  auto logits = lm->forward(test::Ids(SeededIds(16, 61, 71)), nullptr, &ctx);
  logits.pow(2).mean().backward();
  int trainable = 0;
  for (auto& p : lm->named_parameters()) {
    const auto& name = p.key();
    const bool expect_train =
        lower_trainable || IsSharedLLMParameter(name) || name == "lm_head.weight" ||
        name == "model.norm.weight" || name.rfind("model.layers.2.", 0) == 0;
    EXPECT_EQ(p.value().requires_grad(), expect_train) << name;
    if (expect_train) {
      ++trainable;
      ASSERT_TRUE(p.value().grad().defined()) << name;
      EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << name;
    } else {
      EXPECT_FALSE(p.value().grad().defined()) << name;
    }
  }
  EXPECT_GT(trainable, 0);
}

TEST(SharedLLMTest, GradientsReachExactlyTheTrainableSet) { CheckGradients(false); }
TEST(SharedLLMTest, TrainableLowerModelGetsGradientsToo) { CheckGradients(true); }

// A separate compressor starts as the base model's bottom layers (scores unchanged); training it
// changes what the context says but never the base model, and it round-trips through
// sharedllm.safetensors, which must hold it.
TEST(SharedLLMTest, SeparateCompressorTrainsWithoutTouchingTheBaseModel) {
  test::TempDir dir;
  CausalLM lm = test::TinyModel(Config());
  for (auto& p : lm->parameters()) p.set_requires_grad(false);
  SaveModel(lm, dir.path());
  SharedLLM s(lm, SmallShared(2));
  RandomizeCrossAttention(lm, 8);
  const auto context = SeededIds(100, 61, 90), text = SeededIds(20, 61, 91);
  const auto shared_scores = ScoreWithContext(s, context, text);
  const auto truncated = TokenNll(lm, text, nullptr);
  s.SeparateCompressor();
  EXPECT_EQ(s.config().compressor, "separate");
  EXPECT_LT(MaxDiff(ScoreWithContext(s, context, text), shared_scores), 1e-6);

  // Trainable: the copy and the cross-attention; with the upper model frozen, nothing else.
  s.SetTrainable(/*lower_trainable=*/true, /*upper_trainable=*/false);
  auto nodes = s.BuildDynamicTree(context, at::Tensor());
  auto ctx = s.MakeContext(Pointers(nodes), s.Chunks(context.size()).size());
  lm->forward(test::Ids(text), nullptr, &ctx).pow(2).mean().backward();
  int copies = 0;
  for (auto& p : lm->named_parameters()) {
    const bool copy = p.key().rfind("compressor.", 0) == 0;
    copies += copy;
    EXPECT_EQ(p.value().requires_grad(), copy || IsCrossAttentionParameter(p.key())) << p.key();
    // Of the top lower layer only the key/value path reaches the context.
    const bool live = p.key().rfind("compressor.0.", 0) == 0 ||
                      p.key().find("k_proj") != std::string::npos ||
                      p.key().find("v_proj") != std::string::npos ||
                      p.key().find("input_layernorm") != std::string::npos;
    if (copy && live) {
      ASSERT_TRUE(p.value().grad().defined()) << p.key();
      EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
    }
  }
  EXPECT_EQ(copies, 2 * 9);  // two layers: 2 norms, q/k/v/o, gate/up/down

  // "Train" the copy: the context's effect moves, the base model (truncated scores) does not.
  TrainCompressor(lm, 9);
  const auto trained = ScoreWithContext(s, context, text);
  EXPECT_GT(MaxDiff(trained, shared_scores), 1e-3);
  EXPECT_EQ(TokenNll(lm, text, nullptr), truncated);

  SaveSharedLLM(s, dir.path());
  RuntimeOptions options;
  options.threads = 1;
  auto loaded = LoadModel(dir.path(), options);
  EXPECT_EQ(loaded->shared->config().compressor, "separate");
  EXPECT_LT(MaxDiff(ScoreWithContext(*loaded->shared, context, text), trained), 1e-6);
  EXPECT_EQ(TokenNll(loaded->lm, text, nullptr), truncated);
  // A second SharedLLM over the loaded model (what `--ablate` builds) reads the same trained copy.
  SharedLLMConfig ablated = loaded->shared->config();
  ablated.search = false;
  SharedLLM again(loaded->lm, ablated);
  EXPECT_EQ(again.config().compressor, "separate");
  EXPECT_EQ(loaded->lm->named_parameters().size(), lm->named_parameters().size());
  EXPECT_LT(MaxDiff(ScoreWithContext(again, context, text), trained), 1e-6);
  // A separate compressor without its weights in sharedllm.safetensors is refused.
  WriteSafetensors(dir / "sharedllm.safetensors", CollectParameters(*lm, IsCrossAttentionParameter),
                   {{"format", "pt"}});
  EXPECT_THROW(LoadModel(dir.path(), options), ModelError);
}

// Sets every parameter whose name contains `part` to `value`.
void FillParameters(CausalLM& lm, const std::string& part, double value) {
  c10::NoGradGuard no_grad;
  for (auto& p : lm->named_parameters()) {
    if (p.key().find(part) != std::string::npos) p.value().fill_(value);
  }
}

// Saves `s` into `dir` (which holds its base model), reloads it and expects the same scores and
// `flag` set; then a sharedllm.safetensors without the tensors named `part` must be refused.
void ExpectReloadsAndNeedsItsWeights(CausalLM& lm, SharedLLM& s, const test::TempDir& dir,
                                     const std::vector<int64_t>& context,
                                     const std::vector<int64_t>& text, bool SharedLLMConfig::*flag,
                                     const std::string& part) {
  const auto scores = ScoreWithContext(s, context, text);
  SaveSharedLLM(s, dir.path());
  RuntimeOptions options;
  options.threads = 1;
  auto loaded = LoadModel(dir.path(), options);
  EXPECT_TRUE(loaded->shared->config().*flag);
  EXPECT_LT(MaxDiff(ScoreWithContext(*loaded->shared, context, text), scores), 1e-6);
  WriteSafetensors(dir / "sharedllm.safetensors",
                   CollectParameters(*lm, [&](const std::string& n) {
                     return IsCrossAttentionParameter(n) && n.find(part) == std::string::npos;
                   }),
                   {{"format", "pt"}});
  EXPECT_THROW(LoadModel(dir.path(), options), ModelError) << part;
}

// A gate added to a trained cross-attention leaves the scores as they were (o_proj rescaled); a
// closed gate shuts the context out (scores equal the model truncated to the window) and an open
// one passes it; the gate round-trips through sharedllm.json and sharedllm.safetensors.
TEST(SharedLLMTest, GateStartsNeutralClosesToTheTruncatedModelAndRoundTrips) {
  test::TempDir dir;
  CausalLM lm = test::TinyModel(Config());
  SaveModel(lm, dir.path());
  SharedLLM s(lm, SmallShared(2));
  RandomizeCrossAttention(lm, 11);
  const auto context = SeededIds(100, 61, 92), text = SeededIds(20, 61, 93);
  const auto ungated = ScoreWithContext(s, context, text);
  const auto truncated = TokenNll(lm, text, nullptr);
  ASSERT_GT(MaxDiff(ungated, truncated), 1e-3);
  const size_t before = lm->named_parameters().size();
  s.AddGate();
  s.AddGate();  // no-op the second time
  EXPECT_TRUE(s.config().gate);
  // gate_proj weight + bias in each of the 2 injection layers, all inside cross_attn (so they are
  // saved in sharedllm.safetensors and get the new parameters' learning rate).
  EXPECT_EQ(lm->named_parameters().size(), before + 2 * 2);
  int gate_params = 0;
  for (auto& p : lm->named_parameters()) {
    if (p.key().find(".cross_attn.gate_proj.") != std::string::npos) {
      ++gate_params;
      EXPECT_TRUE(IsCrossAttentionParameter(p.key())) << p.key();
    }
  }
  EXPECT_EQ(gate_params, 2 * 2);
  EXPECT_LT(MaxDiff(ScoreWithContext(s, context, text), ungated), 1e-5);

  auto set_gate = [&](double bias) { FillParameters(lm, "cross_attn.gate_proj.bias", bias); };
  set_gate(-60.0);  // every head closed: nothing of the context reaches the upper model
  EXPECT_LT(MaxDiff(ScoreWithContext(s, context, text), truncated), 1e-5);
  set_gate(1.5);
  const auto gated = ScoreWithContext(s, context, text);
  EXPECT_GT(MaxDiff(gated, ungated), 1e-4);
  EXPECT_GT(MaxDiff(gated, truncated), 1e-3);
  // Round trip; sharedllm.json says gated but the weights hold no gate: refused.
  ExpectReloadsAndNeedsItsWeights(lm, s, dir, context, text, &SharedLLMConfig::gate, "gate_proj");
}

// The attention sink: far below the scores it changes nothing, far above them it shuts the context
// out (the truncated model's scores), in between it takes a share; it trains, round-trips, and a
// sharedllm.json with a sink but weights without one is refused.
TEST(SharedLLMTest, SinkSpansUngatedToTruncatedAndRoundTrips) {
  test::TempDir dir;
  CausalLM lm = test::TinyModel(Config());
  SaveModel(lm, dir.path());
  SharedLLM s(lm, SmallShared(2));
  RandomizeCrossAttention(lm, 12);
  const auto context = SeededIds(100, 61, 94), text = SeededIds(20, 61, 95);
  const auto plain = ScoreWithContext(s, context, text);
  const auto truncated = TokenNll(lm, text, nullptr);
  ASSERT_GT(MaxDiff(plain, truncated), 1e-3);
  const size_t before = lm->named_parameters().size();
  s.AddSink(-60.0);
  s.AddSink(5.0);  // no-op the second time
  EXPECT_TRUE(s.config().sink);
  EXPECT_EQ(lm->named_parameters().size(), before + 2);  // one [heads] logit per injection layer
  for (auto& p : lm->named_parameters()) {
    if (p.key().find(".cross_attn.sink") != std::string::npos) {
      EXPECT_TRUE(IsCrossAttentionParameter(p.key()));
      EXPECT_EQ(p.value().numel(), Config().num_attention_heads);
    }
  }
  auto set_sink = [&](double logit) { FillParameters(lm, ".cross_attn.sink", logit); };
  EXPECT_LT(MaxDiff(ScoreWithContext(s, context, text), plain), 1e-5);  // logit -60: no share
  set_sink(60.0);  // the sink takes all the attention: nothing of the context reaches the model
  EXPECT_LT(MaxDiff(ScoreWithContext(s, context, text), truncated), 1e-5);
  set_sink(1.0);
  const auto sunk = ScoreWithContext(s, context, text);
  EXPECT_GT(MaxDiff(sunk, plain), 1e-4);
  EXPECT_GT(MaxDiff(sunk, truncated), 1e-4);
  // The logit gets a gradient (it trains as a cross-attention parameter).
  {
    auto ids = at::tensor(std::vector<int64_t>(text.begin(), text.end()), at::kLong).unsqueeze(0);
    auto nodes = s.BuildDynamicTree(context, at::Tensor());
    auto ctx = s.MakeContext(Pointers(nodes), s.Chunks(context.size()).size());
    lm->forward(ids, nullptr, &ctx).logsumexp(-1).sum().backward();
    for (auto& p : lm->named_parameters()) {
      if (p.key().find(".cross_attn.sink") != std::string::npos) {
        ASSERT_TRUE(p.value().grad().defined()) << p.key();
        EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
      }
    }
  }
  ExpectReloadsAndNeedsItsWeights(lm, s, dir, context, text, &SharedLLMConfig::sink, ".sink");
}

// Deepening a trained injection (M = 1 to 3) leaves the scores as they were: the new layers get
// neutral cross-attention with the model's gate and a sink at the given logit, and the separate
// compressor a copy of each new base layer. Once the new layers train they read the context; the
// deeper model round-trips. Shrinking, too deep, and non-bottom injections are refused unchanged.
TEST(SharedLLMTest, DeeperInjectionStartsNeutralAndRoundTrips) {
  test::TempDir dir;
  CausalLM lm = test::TinyModel(Config());
  SaveModel(lm, dir.path());
  SharedLLM s(lm, SmallShared(1));
  s.SeparateCompressor();
  s.AddGate();
  s.AddSink(2.0);
  RandomizeCrossAttention(lm, 13);
  const auto context = SeededIds(100, 61, 96), text = SeededIds(20, 61, 97);
  const auto before = ScoreWithContext(s, context, text);
  ASSERT_GT(MaxDiff(before, TokenNll(lm, text, nullptr)), 1e-3);
  s.SetNumInjectionLayers(3, 5.0);
  EXPECT_EQ(s.config().num_injection_layers, 3);
  EXPECT_LT(MaxDiff(ScoreWithContext(s, context, text), before), 1e-6);
  const auto params = lm->named_parameters();
  for (const std::string layer : {"1", "2"}) {
    const std::string ca = "model.layers." + layer + ".cross_attn.";
    ASSERT_TRUE(params.contains(ca + "gate_proj.weight")) << layer;
    EXPECT_TRUE(at::equal(params[ca + "sink"], at::full_like(params[ca + "sink"], 5.0)));
    EXPECT_EQ(params[ca + "o_proj.weight"].abs().sum().item<double>(), 0.0);
    EXPECT_TRUE(at::equal(params["compressor." + layer + ".mlp.up_proj.weight"],
                          params["model.layers." + layer + ".mlp.up_proj.weight"]));
  }
  {
    c10::NoGradGuard no_grad;  // "train" only the new top injection layer
    params["model.layers.2.cross_attn.o_proj.weight"].normal_(0.0, 0.3);
  }
  const auto deeper = ScoreWithContext(s, context, text);
  EXPECT_GT(MaxDiff(deeper, before), 1e-4);
  SaveSharedLLM(s, dir.path());
  RuntimeOptions options;
  options.threads = 1;
  auto loaded = LoadModel(dir.path(), options);
  EXPECT_EQ(loaded->shared->config().num_injection_layers, 3);
  EXPECT_LT(MaxDiff(ScoreWithContext(*loaded->shared, context, text), deeper), 1e-6);
  const std::string json = s.config().ToJsonText();
  EXPECT_THROW(s.SetNumInjectionLayers(2), ModelError);  // shrinking
  EXPECT_THROW(s.SetNumInjectionLayers(4), ModelError);  // the base model has 3 layers
  EXPECT_EQ(s.config().ToJsonText(), json);
  EXPECT_EQ(lm->named_parameters().size(), params.size());
  CausalLM other = test::TinyModel(Config());
  SharedLLMConfig top = SmallShared(1);
  top.injection = "top";
  SharedLLM t(other, top);
  EXPECT_THROW(t.SetNumInjectionLayers(2), ModelError);
  EXPECT_EQ(t.config().num_injection_layers, 1);
}

// With inherit_o_scale s the new layers start as their own self-attention heads over the
// context: o_proj = s x self_attn.o_proj (divided by the half-open gate's 0.5 where gated), so the
// scores move at once; a bad scale, or a scale that would start no new layer, is refused with
// nothing changed.
TEST(SharedLLMTest, DeeperInjectionCanStartAsTheLayersOwnHeads) {
  for (const bool gated : {false, true}) {
    CausalLM lm = test::TinyModel(Config());
    SharedLLM s(lm, SmallShared(1));
    s.SeparateCompressor();
    if (gated) s.AddGate();
    RandomizeCrossAttention(lm, 13);
    const auto context = SeededIds(100, 61, 96), text = SeededIds(20, 61, 97);
    const auto before = ScoreWithContext(s, context, text);
    const std::string json = s.config().ToJsonText();
    EXPECT_THROW(s.SetNumInjectionLayers(3, 0.0, -0.5), ModelError);
    EXPECT_THROW(s.SetNumInjectionLayers(3, 0.0, std::nan("")), ModelError);
    EXPECT_THROW(s.SetNumInjectionLayers(1, 0.0, 0.25), ModelError);  // adds no layer to start
    EXPECT_THROW(s.SetNumInjectionLayers(1, 0.0, -0.5), ModelError);
    EXPECT_EQ(s.config().ToJsonText(), json);
    s.SetNumInjectionLayers(3, 0.0, 0.25);
    const auto params = lm->named_parameters();
    for (const std::string layer : {"1", "2"}) {
      const std::string l = "model.layers." + layer + ".";
      const auto self_o = params[l + "self_attn.o_proj.weight"];
      EXPECT_TRUE(at::allclose(params[l + "cross_attn.o_proj.weight"],
                               self_o * (gated ? 0.5 : 0.25)))
          << layer;
      EXPECT_TRUE(at::equal(params[l + "cross_attn.q_proj.weight"],
                            params[l + "self_attn.q_proj.weight"]));
      EXPECT_TRUE(at::equal(params[l + "cross_attn.norm.weight"],
                            params[l + "input_layernorm.weight"]));
    }
    // Layer 0's trained reader is left as it was.
    EXPECT_GT(params["model.layers.0.cross_attn.o_proj.weight"].abs().sum().item<double>(), 0.0);
    EXPECT_GT(MaxDiff(ScoreWithContext(s, context, text), before), 1e-4) << gated;
  }
}

// own_lower: the new injection layers read the base model's own lower layers, not copies added to
// the (trained) separate compressor. Layer 0's keys stay the copy's; layers 1 and 2's are those
// the base's own bottom layers give (what a shared compressor encodes), so the copy's training
// does not reach them. A copy holding fewer than M layers only grows so; the mixed model
// round-trips; own_lower without a separate compressor, and a separate_layers that does not fit,
// are refused.
TEST(SharedLLMTest, OwnLowerLayersReadTheBaseModelsOwnKeys) {
  test::TempDir dir;
  CausalLM lm = test::TinyModel(Config());
  SaveModel(lm, dir.path());
  SharedLLM s(lm, SmallShared(1));
  s.SeparateCompressor();
  TrainCompressor(lm, 21);  // its keys now differ from the base's
  RandomizeCrossAttention(lm, 23);
  const auto context = SeededIds(100, 61, 98), text = SeededIds(20, 61, 99);
  const DocumentTree copied = s.BuildStaticTree(context);
  s.SetNumInjectionLayers(2, 0.0, 0.25, /*own_lower=*/true);
  EXPECT_EQ(s.config().separate_layers, 1);
  s.SetNumInjectionLayers(3);  // the copy holds fewer than M: grows from the base's own
  EXPECT_EQ(s.config().separate_layers, 1);
  int copies = 0;
  for (auto& p : lm->named_parameters()) copies += p.key().rfind("compressor.", 0) == 0;
  EXPECT_EQ(copies, 9);  // one layer

  CausalLM plain = test::TinyModel(Config());  // the same base weights, a shared compressor
  SharedLLM own(plain, SmallShared(3));
  const DocumentTree mixed = s.BuildStaticTree(context), reference = own.BuildStaticTree(context);
  ASSERT_EQ(mixed.nodes.size(), reference.nodes.size());
  bool copy_differs = false;
  for (size_t c = 0; c < mixed.nodes.size(); ++c) {
    for (size_t n = 0; n < mixed.nodes[c].size(); ++n) {
      const EncodedNode &m = mixed.nodes[c][n], &r = reference.nodes[c][n];
      ASSERT_EQ(m.k.size(), 3u);
      EXPECT_TRUE(at::equal(m.k[0], copied.nodes[c][n].k[0]));
      EXPECT_TRUE(at::equal(m.v[0], copied.nodes[c][n].v[0]));
      copy_differs = copy_differs || !at::allclose(m.k[0], r.k[0]);
      for (size_t j = 1; j < 3; ++j) {
        EXPECT_TRUE(at::allclose(m.k[j], r.k[j], 1e-5, 1e-6)) << c << " " << n << " " << j;
        EXPECT_TRUE(at::allclose(m.v[j], r.v[j], 1e-5, 1e-6)) << c << " " << n << " " << j;
      }
    }
  }
  EXPECT_TRUE(copy_differs);

  const auto scores = ScoreWithContext(s, context, text);
  SaveSharedLLM(s, dir.path());
  RuntimeOptions options;
  options.threads = 1;
  auto loaded = LoadModel(dir.path(), options);
  EXPECT_EQ(loaded->shared->config().separate_layers, 1);
  EXPECT_LT(MaxDiff(ScoreWithContext(*loaded->shared, context, text), scores), 1e-6);

  SharedLLM shared(test::TinyModel(Config()), SmallShared(1));
  EXPECT_THROW(shared.SetNumInjectionLayers(2, 0.0, 0.0, /*own_lower=*/true), ModelError);
  EXPECT_EQ(shared.config().num_injection_layers, 1);
  SharedLLMConfig c = SmallShared(2);
  c.separate_layers = 1;
  EXPECT_THROW(c.Validate(3), ModelError);  // needs a separate compressor
  c.compressor = "separate";
  c.Validate(3);
  EXPECT_EQ(SharedLLMConfig::FromJsonText(c.ToJsonText()).separate_layers, 1);
  c.separate_layers = 3;
  EXPECT_THROW(c.Validate(3), ModelError);  // more than M
  EXPECT_EQ(SmallShared(2).ToJsonText().find("separate_layers"), std::string::npos);
}

TEST(SharedLLMTest, SaveAndLoadRoundTrip) {
  test::TempDir dir;
  CausalLM lm = test::TinyModel(Config());
  SaveModel(lm, dir.path());
  SharedLLM s(lm, SmallShared());
  RandomizeCrossAttention(lm, 7);
  SaveSharedLLM(s, dir.path());
  RuntimeOptions options;
  options.threads = 1;
  auto loaded = LoadModel(dir.path(), options);
  ASSERT_NE(loaded->shared, nullptr);
  EXPECT_EQ(loaded->shared->config().ToJsonText(), s.config().ToJsonText());
  const auto context = SeededIds(100, 61, 80), text = SeededIds(20, 61, 81);
  EXPECT_LT(MaxDiff(ScoreWithContext(s, context, text),
                    ScoreWithContext(*loaded->shared, context, text)), 1e-6);
  // Without sharedllm.safetensors the directory is rejected with a hint.
  ::remove((dir / "sharedllm.safetensors").c_str());
  EXPECT_THROW(LoadModel(dir.path(), options), ModelError);
}

TEST(SharedLLMConfigTest, ValidatesAndRoundTrips) {
  SharedLLMConfig c;
  c.alphas = {16, 8};
  EXPECT_THROW(c.Validate(8), ModelError);  // depth 3 needs 3 strides
  c = SharedLLMConfig();
  c.num_injection_layers = 9;
  EXPECT_THROW(c.Validate(8), ModelError);
  c = SharedLLMConfig();
  c.selection = "median";
  EXPECT_THROW(c.Validate(8), ModelError);
  c = SharedLLMConfig();
  c.num_injection_layers = 2;
  c.injection = "interleaved";
  EXPECT_EQ(c.InjectionLayers(8), (std::vector<int64_t>{0, 4}));
  c.injection = "top";
  EXPECT_EQ(c.InjectionLayers(8), (std::vector<int64_t>{6, 7}));
  const auto back = SharedLLMConfig::FromJsonText(c.ToJsonText());
  EXPECT_EQ(back.ToJsonText(), c.ToJsonText());
  // A field this build does not know is refused with its name, not ignored: a model that relied on
  // it would otherwise load and compute something else.
  try {
    SharedLLMConfig::FromJsonText(R"({"chunk_size": 64, "context_top_k": 4, "lower_trainable": false})");
    ADD_FAILURE() << "unknown fields accepted";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("context_top_k, lower_trainable"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace sharedllm

// The engine's stored form of a chunk: only the key/value heads a cross-attention head reads, in
// the stored element type, and answers that do not depend on either.
#include "service/engine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace sharedllm::service {
namespace {

using sharedllm::test::TempDir;

class EngineTest : public ::testing::Test {
 protected:
  // models/tiny has 4 query heads over 2 key/value heads. "full": cross-attention starting as
  // each layer's own heads (every o_proj column non-zero); "dropped": the same with query heads
  // 0 and 1 taken out, so key/value head 0 of layer 0 is read by nobody.
  void SetUp() override {
    full_ = dir_ / "full";
    dropped_ = dir_ / "dropped";
    auto r = sharedllm::test::Run(
        {SHAREDLLM_BIN, "init", "--base", std::string(SHAREDLLM_SOURCE_DIR) + "/models/tiny",
         "--out", full_, "--layers", "1", "--chunk-size", "32", "--depth", "2", "--alphas", "2,1",
         "--inherit-o-scale", "1"},
        dir_.path());
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    r = sharedllm::test::Run(
        {SHAREDLLM_BIN, "edit", "--model", full_, "--out", dropped_, "--drop-heads", "0:0,0:1"},
        dir_.path());
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  }
  std::unique_ptr<Engine> Load(const std::string& dir, const std::string& kv_dtype) {
    EngineOptions o;
    o.model_dir = dir;
    o.threads = 1;
    o.kv_dtype = kv_dtype;
    auto e = Engine::Load(o);
    EXPECT_TRUE(e.ok()) << e.status();
    return e.ok() ? std::move(*e) : nullptr;
  }
  // The test's chunk: at most 32 tokens (the models' chunk size).
  std::vector<int64_t> Chunk(Engine& e) {
    auto tokens = e.Tokenize("the program may copy the work under the terms of this licence");
    EXPECT_TRUE(tokens.ok());
    if (!tokens.ok()) return {};
    tokens->resize(std::min<size_t>(tokens->size(), 32));
    return *tokens;
  }
  std::string AnswerText(Engine& e, const std::vector<NodeRecord>& records) {
    auto prompt = e.PromptIds("the licence says");
    EXPECT_TRUE(prompt.ok());
    // Every node of the chunk, each parent with its left chain (as the query service loads it).
    std::vector<ReadNode> nodes;
    for (const NodeRecord& rec : records) {
      ReadNode n{rec, 0, {}};
      for (const auto& [level, index] : e.LeftChain(rec.level, rec.index)) {
        for (const NodeRecord& other : records) {
          if (other.level == level && other.index == index) n.left.push_back(other);
        }
      }
      nodes.push_back(std::move(n));
    }
    AnswerOptions o;
    o.max_tokens = 12;
    std::string text;
    auto r = e.Answer(*prompt, nodes, 1, o, [&](const std::string& d) {
      text += d;
      return true;
    });
    EXPECT_TRUE(r.ok()) << r.status();
    return text;
  }
  TempDir dir_;
  std::string full_, dropped_;
};

TEST_F(EngineTest, OnlyTheHeadsSomeoneReadsAreStoredAndAnswersDoNotChange) {
  auto full = Load(full_, "float32");
  auto dropped = Load(dropped_, "float32");
  ASSERT_TRUE(full && dropped);
  const auto tokens = Chunk(*full);
  auto all_heads = full->EncodeChunk(tokens, 0);
  auto read_heads = dropped->EncodeChunk(tokens, 0);
  ASSERT_TRUE(all_heads.ok() && read_heads.ok());
  ASSERT_EQ(all_heads->size(), read_heads->size());
  for (size_t i = 0; i < all_heads->size(); ++i) {
    const auto& a = (*all_heads)[i];
    const auto& b = (*read_heads)[i];
    EXPECT_EQ(a.k[0].shape[0], 2);
    EXPECT_EQ(b.k[0].shape[0], 1) << "head 0 is read by nobody";
    EXPECT_EQ(b.v[0].shape[0], 1);
    EXPECT_EQ(a.k[0].shape[1], b.k[0].shape[1]);
    EXPECT_EQ(b.k[0].data.size() * 2, a.k[0].data.size());
    // The stored head is head 1 of the full record (the lower model is the same).
    EXPECT_EQ(b.k[0].data, a.k[0].data.substr(a.k[0].data.size() / 2));
  }
  // Reading the full records or the reduced ones gives the same answer.
  const std::string from_all = AnswerText(*dropped, *all_heads);
  EXPECT_FALSE(from_all.empty());
  EXPECT_EQ(AnswerText(*dropped, *read_heads), from_all);
}

TEST_F(EngineTest, KeysAndValuesAreStoredInTheChosenType) {
  auto bf16 = Load(full_, "bfloat16");
  auto f32 = Load(full_, "float32");
  ASSERT_TRUE(bf16 && f32);
  const auto tokens = Chunk(*f32);
  auto a = bf16->EncodeChunk(tokens, 0);
  auto b = f32->EncodeChunk(tokens, 0);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*a)[0].k[0].dtype, DType::kBF16);
  EXPECT_EQ((*b)[0].k[0].dtype, DType::kF32);
  EXPECT_EQ((*a)[0].k[0].data.size() * 2, (*b)[0].k[0].data.size());
  EXPECT_EQ((*a)[0].search.dtype, DType::kBF16) << "search vectors beside 16-bit keys/values";
  EXPECT_EQ((*b)[0].search.dtype, DType::kF32);
  EXPECT_FALSE(AnswerText(*f32, *a).empty());  // a float32 model reads bfloat16 records
  auto i8 = Load(full_, "int8");
  ASSERT_TRUE(i8);
  auto c = i8->EncodeChunk(tokens, 0);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)[0].k[0].dtype, DType::kI8);
  ASSERT_EQ((*c)[0].k_scale.size(), (*c)[0].k.size()) << "one scale tensor per layer";
  EXPECT_EQ((*c)[0].k[0].data.size() * 4, (*b)[0].k[0].data.size());
  EXPECT_FALSE(AnswerText(*f32, *c).empty());  // and int8 ones, scaled back
  EngineOptions bad;
  bad.model_dir = full_;
  bad.kv_dtype = "int4";
  EXPECT_EQ(Engine::Load(bad).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sharedllm::service

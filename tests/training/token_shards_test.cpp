// Token shards (training/token_shards.h): round trips through a writer that follows the format spec
// byte by byte, a cross-check against the Python writer (corpus/shards.py), and every kind
// of malformed file, which must throw ModelError naming the file and the problem.
#include "training/token_shards.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "llm/errors.h"
#include "tests/model_error.h"
#include "tests/test_util.h"

namespace sharedllm {
namespace {

using test::ErrorOf;
using test::TempDir;

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// The fields of a shard file; Bytes() serialises them exactly as the spec says, so a test can
// make any field wrong while everything else (including the checksum) stays right.
struct ShardSpec {
  std::string magic = std::string("SLTOKv1\0", 8);
  uint32_t vocab_size = 100;
  uint32_t dtype = 2;
  std::vector<uint64_t> offsets;
  std::vector<uint32_t> tokens;

  static ShardSpec FromDocuments(const std::vector<std::vector<uint32_t>>& docs, uint32_t vocab) {
    ShardSpec s;
    s.vocab_size = vocab;
    s.dtype = vocab <= 65536 ? 2 : 4;
    for (const auto& d : docs) {
      s.offsets.push_back(s.tokens.size());
      s.tokens.insert(s.tokens.end(), d.begin(), d.end());
    }
    return s;
  }

  std::string Bytes() const {
    std::string out = magic;
    PutU32(&out, vocab_size);
    PutU32(&out, dtype);
    PutU64(&out, tokens.size());
    PutU64(&out, offsets.size());
    for (uint64_t o : offsets) PutU64(&out, o);
    for (uint32_t t : tokens) {
      if (dtype == 4) {
        PutU32(&out, t);
      } else {
        out.push_back(static_cast<char>(t & 0xff));
        out.push_back(static_cast<char>((t >> 8) & 0xff));
      }
    }
    PutU32(&out, Crc32(out.data(), out.size()));
    return out;
  }
};

std::vector<int64_t> AsInt64(const std::vector<uint32_t>& v) { return {v.begin(), v.end()}; }

class TokenShardTest : public ::testing::Test {
 protected:
  // Writes `bytes` to a fresh file and returns the error of opening it.
  std::string OpenError(const std::string& bytes, int64_t model_vocab = 0) {
    const std::string path = dir_ / ("bad" + std::to_string(counter_++) + ".bin");
    test::WriteFile(path, bytes);
    const std::string error = ErrorOf([&] { TokenShard::Open(path, model_vocab); });
    EXPECT_NE(error.find(path), std::string::npos) << "message does not name the file: " << error;
    return error;
  }

  const std::vector<std::vector<uint32_t>> docs_ = {{1, 5, 6}, {1, 7}, {1, 2, 3, 4, 99}};
  TempDir dir_;
  int counter_ = 0;
};

TEST(Crc32Test, MatchesZlib) {
  // The standard check value of CRC-32/ISO-HDLC (zlib.crc32(b"123456789")).
  EXPECT_EQ(Crc32("123456789", 9), 0xCBF43926u);
  EXPECT_EQ(Crc32("", 0), 0u);
  // Incremental use gives the same result as one call.
  const std::string text = "The quick brown fox jumps over the lazy dog, twice over.";
  const uint32_t once = Crc32(text.data(), text.size());
  EXPECT_EQ(Crc32(text.data() + 13, text.size() - 13, Crc32(text.data(), 13)), once);
  EXPECT_EQ(Crc32("The quick brown fox jumps over the lazy dog", 43), 0x414FA339u);
}

TEST_F(TokenShardTest, RoundTripUint16) {
  const std::string path = dir_ / "a.bin";
  test::WriteFile(path, ShardSpec::FromDocuments(docs_, 100).Bytes());
  const TokenShard shard = TokenShard::Open(path, 100);
  EXPECT_EQ(shard.num_tokens(), 10);
  EXPECT_EQ(shard.num_documents(), 3);
  EXPECT_EQ(shard.vocab_size(), 100);
  EXPECT_EQ(shard.dtype_bytes(), 2);
  EXPECT_EQ(shard.path(), path);
  std::vector<int64_t> all;
  for (int64_t i = 0; i < shard.num_documents(); ++i) {
    const auto [begin, count] = shard.Document(i);
    EXPECT_EQ(shard.Slice(begin, count), AsInt64(docs_[i])) << "document " << i;
    const auto d = AsInt64(docs_[i]);
    all.insert(all.end(), d.begin(), d.end());
  }
  using Span = std::pair<int64_t, int64_t>;
  EXPECT_EQ(shard.Document(0), Span(0, 3));
  EXPECT_EQ(shard.Document(1), Span(3, 2));
  EXPECT_EQ(shard.Document(2), Span(5, 5));
  EXPECT_EQ(shard.Slice(0, shard.num_tokens()), all);
  EXPECT_EQ(shard.Slice(2, 3), (std::vector<int64_t>{6, 1, 7}));  // across documents
  EXPECT_TRUE(shard.Slice(10, 0).empty());
  EXPECT_EQ(shard.At(9), 99);
  // A model with a larger vocabulary can read it too.
  EXPECT_EQ(TokenShard::Open(path, 32000).num_tokens(), 10);
}

TEST_F(TokenShardTest, RoundTripUint32) {
  const std::vector<std::vector<uint32_t>> docs = {{1, 65535, 65536, 69999}, {1, 0, 40000}};
  const std::string path = dir_ / "b.bin";
  test::WriteFile(path, ShardSpec::FromDocuments(docs, 70000).Bytes());
  const TokenShard shard = TokenShard::Open(path);
  EXPECT_EQ(shard.dtype_bytes(), 4);
  EXPECT_EQ(shard.vocab_size(), 70000);
  EXPECT_EQ(shard.Slice(0, 4), AsInt64(docs[0]));
  EXPECT_EQ(shard.Slice(shard.Document(1).first, shard.Document(1).second), AsInt64(docs[1]));
}

TEST_F(TokenShardTest, EmptyShardOpens) {
  const std::string path = dir_ / "empty.bin";
  test::WriteFile(path, ShardSpec::FromDocuments({}, 100).Bytes());
  const TokenShard shard = TokenShard::Open(path);
  EXPECT_EQ(shard.num_tokens(), 0);
  EXPECT_EQ(shard.num_documents(), 0);
  EXPECT_TRUE(shard.Slice(0, 0).empty());
}

TEST_F(TokenShardTest, CopiesShareTheMappingAndOutliveTheOriginal) {
  const std::string path = dir_ / "c.bin";
  test::WriteFile(path, ShardSpec::FromDocuments(docs_, 100).Bytes());
  std::vector<TokenShard> kept;
  {
    const TokenShard shard = TokenShard::Open(path);
    kept.push_back(shard);
  }
  EXPECT_EQ(kept[0].Slice(5, 5), AsInt64(docs_[2]));
}

// The Python writer that make_shards.py uses produces files this reader accepts, with the same
// tokens (and its zlib CRC agrees with ours).
TEST_F(TokenShardTest, ReadsWhatThePythonWriterWrites) {
  const std::string python = "/usr/bin/python3";
  const std::string script = std::string(SHAREDLLM_SOURCE_DIR) + "/corpus/shards.py";
  if (test::Run({python, "-c", "import numpy"}, dir_.path()).exit_code != 0) {
    GTEST_SKIP() << python << " with numpy is not available";
  }
  for (const uint32_t vocab : {8192u, 70000u}) {
    const std::vector<std::vector<uint32_t>> docs = {{1, 17, 4000, vocab - 1}, {1}, {1, 2, 3}};
    std::string json = "{\"vocab_size\": " + std::to_string(vocab) + ", \"documents\": [";
    for (size_t i = 0; i < docs.size(); ++i) {
      json += i ? ", [" : "[";
      for (size_t j = 0; j < docs[i].size(); ++j) json += (j ? ", " : "") + std::to_string(docs[i][j]);
      json += "]";
    }
    json += "]}";
    const std::string in = dir_ / ("docs" + std::to_string(vocab) + ".json");
    const std::string out = dir_ / ("py" + std::to_string(vocab) + ".bin");
    test::WriteFile(in, json);
    const auto r = test::Run({python, script, out, in}, dir_.path());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    // Byte-identical to the C++ spec writer.
    EXPECT_EQ(test::ReadFile(out), ShardSpec::FromDocuments(docs, vocab).Bytes());
    const TokenShard shard = TokenShard::Open(out, vocab);
    ASSERT_EQ(shard.num_documents(), 3);
    for (int64_t i = 0; i < 3; ++i) {
      EXPECT_EQ(shard.Slice(shard.Document(i).first, shard.Document(i).second),
                AsInt64(docs[i]));
    }
  }
}

TEST_F(TokenShardTest, MissingFile) {
  const std::string path = dir_ / "nope.bin";
  const std::string error = ErrorOf([&] { TokenShard::Open(path); });
  EXPECT_NE(error.find(path), std::string::npos) << error;
  EXPECT_NE(error.find("cannot open"), std::string::npos) << error;
}

TEST_F(TokenShardTest, BadMagic) {
  ShardSpec s = ShardSpec::FromDocuments(docs_, 100);
  s.magic = std::string("SLTOKv2\0", 8);
  EXPECT_NE(OpenError(s.Bytes()).find("bad magic"), std::string::npos);
  std::string safetensors(64, ' ');
  EXPECT_NE(OpenError(safetensors).find("bad magic"), std::string::npos);
}

TEST_F(TokenShardTest, UnknownDtype) {
  ShardSpec s = ShardSpec::FromDocuments(docs_, 100);
  s.dtype = 3;
  EXPECT_NE(OpenError(s.Bytes()).find("unknown dtype code 3"), std::string::npos);
  s.dtype = 8;
  EXPECT_NE(OpenError(s.Bytes()).find("unknown dtype code 8"), std::string::npos);
}

TEST_F(TokenShardTest, TruncatedFile) {
  const std::string good = ShardSpec::FromDocuments(docs_, 100).Bytes();
  for (size_t keep : {size_t{0}, size_t{10}, size_t{35}, good.size() - 5, good.size() - 1}) {
    const std::string error = OpenError(good.substr(0, keep));
    EXPECT_NE(error.find("truncated"), std::string::npos) << "keep " << keep << ": " << error;
  }
  // A header that declares absurd sizes is a truncated file too, not an overflow.
  std::string huge = good;
  for (int i = 16; i < 32; ++i) huge[i] = '\xff';
  EXPECT_NE(OpenError(huge).find("truncated"), std::string::npos);
}

TEST_F(TokenShardTest, TrailingBytes) {
  const std::string error = OpenError(ShardSpec::FromDocuments(docs_, 100).Bytes() + "xx");
  EXPECT_NE(error.find("size mismatch"), std::string::npos) << error;
}

TEST_F(TokenShardTest, ChecksumMismatch) {
  std::string bytes = ShardSpec::FromDocuments(docs_, 100).Bytes();
  bytes[32 + 8 * 3 + 2] ^= 0x01;  // a token's low byte; the stored CRC is now stale
  const std::string error = OpenError(bytes);
  EXPECT_NE(error.find("checksum mismatch"), std::string::npos) << error;
  std::string bad_crc = ShardSpec::FromDocuments(docs_, 100).Bytes();
  bad_crc.back() ^= 0x40;
  EXPECT_NE(OpenError(bad_crc).find("checksum mismatch"), std::string::npos);
}

TEST_F(TokenShardTest, OffsetsNotIncreasing) {
  ShardSpec s = ShardSpec::FromDocuments(docs_, 100);
  s.offsets = {0, 5, 3};
  std::string error = OpenError(s.Bytes());
  EXPECT_NE(error.find("not increasing"), std::string::npos) << error;
  s.offsets = {0, 3, 3};  // an empty document
  error = OpenError(s.Bytes());
  EXPECT_NE(error.find("not increasing"), std::string::npos) << error;
}

TEST_F(TokenShardTest, OffsetsOutOfRange) {
  ShardSpec s = ShardSpec::FromDocuments(docs_, 100);
  s.offsets = {0, 3, 10};  // == num_tokens
  std::string error = OpenError(s.Bytes());
  EXPECT_NE(error.find("out of range"), std::string::npos) << error;
  s.offsets = {0, 3, uint64_t{1} << 62};
  error = OpenError(s.Bytes());
  EXPECT_NE(error.find("out of range"), std::string::npos) << error;
  s.offsets = {2, 3, 5};  // tokens before the first document
  error = OpenError(s.Bytes());
  EXPECT_NE(error.find("expected 0"), std::string::npos) << error;
  ShardSpec orphan = ShardSpec::FromDocuments(docs_, 100);
  orphan.offsets.clear();  // tokens but no documents
  error = OpenError(orphan.Bytes());
  EXPECT_NE(error.find("no documents"), std::string::npos) << error;
}

TEST_F(TokenShardTest, VocabLargerThanTheModels) {
  const std::string error = OpenError(ShardSpec::FromDocuments(docs_, 100).Bytes(), 64);
  EXPECT_NE(error.find("vocab_size 100 is larger than the model's 64"), std::string::npos) << error;
}

TEST_F(TokenShardTest, TokenIdOutOfVocabulary) {
  ShardSpec s = ShardSpec::FromDocuments(docs_, 100);
  s.tokens[7] = 100;
  const std::string error = OpenError(s.Bytes());
  EXPECT_NE(error.find("token id 100 at index 7"), std::string::npos) << error;
  ShardSpec z = ShardSpec::FromDocuments(docs_, 100);
  z.vocab_size = 0;
  EXPECT_NE(OpenError(z.Bytes()).find("vocab_size is 0"), std::string::npos);
}

TEST_F(TokenShardTest, SliceAndDocumentBoundsAreChecked) {
  const std::string path = dir_ / "d.bin";
  test::WriteFile(path, ShardSpec::FromDocuments(docs_, 100).Bytes());
  const TokenShard shard = TokenShard::Open(path);
  EXPECT_NE(ErrorOf([&] { shard.Slice(8, 3); }).find("outside"), std::string::npos);
  EXPECT_NE(ErrorOf([&] { shard.Slice(-1, 1); }).find("outside"), std::string::npos);
  EXPECT_NE(ErrorOf([&] { shard.Slice(0, -1); }).find("outside"), std::string::npos);
  EXPECT_NE(ErrorOf([&] { shard.Document(3); }).find("out of range"), std::string::npos);
  EXPECT_NE(ErrorOf([&] { shard.Document(-1); }).find("out of range"), std::string::npos);
}

// A pool of two shards whose tokens say which shard they came from: 300 tokens of 1s and 100 of
// 2s. Without weights windows come 3:1 (in proportion to tokens); with weights {1, 3}, 1:3; a
// weight of 0 never picks its shard; bad weights are refused.
TEST_F(TokenShardTest, PoolPicksShardsByTokensOrByWeight) {
  const std::string ones = dir_ / "ones.bin", twos = dir_ / "twos.bin";
  test::WriteFile(ones, ShardSpec::FromDocuments({std::vector<uint32_t>(300, 1)}, 100).Bytes());
  test::WriteFile(twos, ShardSpec::FromDocuments({std::vector<uint32_t>(100, 2)}, 100).Bytes());
  auto share_of_twos = [](const TokenPool& pool) {
    std::mt19937_64 rng(7);
    int twos_seen = 0;
    const int n = 4000;
    for (int i = 0; i < n; ++i) {
      const auto w = pool.Window(rng, 8);
      EXPECT_EQ(w.size(), 8u);
      EXPECT_TRUE(std::all_of(w.begin(), w.end(), [&](int64_t t) { return t == w[0]; }))
          << "a window crossed shards";
      twos_seen += w[0] == 2;
    }
    return static_cast<double>(twos_seen) / n;
  };
  EXPECT_NEAR(share_of_twos(TokenPool({ones, twos})), 0.25, 0.03);
  EXPECT_NEAR(share_of_twos(TokenPool({ones, twos}, {1, 3})), 0.75, 0.03);
  EXPECT_EQ(share_of_twos(TokenPool({ones, twos}, {1, 0})), 0.0);
  EXPECT_EQ(TokenPool({ones, twos}).vocab_size(), 100);

  EXPECT_NE(ErrorOf([&] { TokenPool({ones, twos}, {1}); }).find("1 weights for 2 shards"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { TokenPool({ones, twos}, {1, -1}); }).find(">= 0"), std::string::npos);
  EXPECT_NE(ErrorOf([&] { TokenPool({ones, twos}, {0, 0}); }).find("all be 0"), std::string::npos);
  // A window longer than the picked shard names that shard.
  std::mt19937_64 rng(1);
  EXPECT_NE(ErrorOf([&] { TokenPool({ones, twos}, {0, 1}).Window(rng, 100); }).find(twos),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { TokenPool(std::vector<std::string>{}).Window(rng, 1); }).find("no token shards"),
            std::string::npos);
}

}  // namespace
}  // namespace sharedllm

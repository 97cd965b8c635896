// Safetensors reading and writing: bit-exact round trips, sharded checkpoints, and corrupted
// inputs, which must throw ModelError with a useful message rather than crash.
#include "llm/safetensors.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>

#include "llm/errors.h"
#include "tests/model_error.h"
#include "tests/test_util.h"

namespace sharedllm {
namespace {

using test::ErrorOf;
using nlohmann::json;
using test::TempDir;

// Same dtype, shape and bytes.
void ExpectBitEqual(const at::Tensor& a, const at::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.scalar_type(), b.scalar_type()) << what;
  ASSERT_EQ(a.sizes().vec(), b.sizes().vec()) << what;
  auto ca = a.contiguous(), cb = b.contiguous();
  const size_t bytes = ca.numel() * ca.element_size();
  ASSERT_EQ(bytes, cb.numel() * cb.element_size()) << what;
  if (bytes == 0) return;
  EXPECT_EQ(std::memcmp(ca.data_ptr(), cb.data_ptr(), bytes), 0) << what << " differs bitwise";
}

// An 8-byte little-endian header length, the header, the data.
std::string RawFile(const std::string& header, const std::string& data = "") {
  std::string out;
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + header + data;
}

std::string FileError(const std::string& path) {
  return ErrorOf([&] { SafetensorsFile f(path); });
}

NamedTensors SampleTensors() {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  auto f32 = at::randn({3, 5}, gen);
  f32[0][0].fill_(-0.0);
  f32[0][1].fill_(std::numeric_limits<float>::infinity());
  f32[0][2].fill_(std::numeric_limits<float>::denorm_min());
  auto f16 = at::randn({4, 2}, gen).to(at::kHalf);
  f16[0][0].fill_(65504.0);  // largest half
  f16[0][1].fill_(-0.0);
  auto bf16 = at::randn({2, 3, 4}, gen).to(at::kBFloat16);
  bf16[1][2][3].fill_(1e30);  // beyond half's range, fine for bf16
  auto i64 = at::tensor(std::vector<int64_t>{0, -1, int64_t{1} << 40, std::numeric_limits<int64_t>::min(),
                                             std::numeric_limits<int64_t>::max(), 42});
  return {
      {"model.f32", f32},
      {"model.f16", f16},
      {"model.bf16", bf16},
      {"model.i64", i64},
      {"model.i32", at::arange(-3, 3, at::TensorOptions().dtype(at::kInt))},
      {"model.u8", at::arange(250, 256, at::TensorOptions().dtype(at::kLong)).to(at::kByte)},
      {"model.bool", at::tensor(std::vector<int64_t>{1, 0, 1}).to(at::kBool)},
      {"model.scalar", at::scalar_tensor(3.5)},
      {"model.empty", at::empty({0, 3})},
      {"model.transposed", at::arange(6, at::TensorOptions().dtype(at::kFloat)).view({2, 3}).t()},
  };
}

TEST(SafetensorsTest, RoundTripIsBitExact) {
  TempDir dir;
  const std::string path = dir / "t.safetensors";
  const NamedTensors tensors = SampleTensors();
  WriteSafetensors(path, tensors, {{"format", "pt"}, {"note", "hello"}});
  SafetensorsFile f(path);
  EXPECT_EQ(f.path(), path);
  std::vector<std::string> expected_names;
  for (const auto& [name, t] : tensors) expected_names.push_back(name);
  std::sort(expected_names.begin(), expected_names.end());
  EXPECT_EQ(f.names(), expected_names);
  for (const auto& [name, t] : tensors) {
    ASSERT_TRUE(f.contains(name)) << name;
    EXPECT_EQ(f.shape(name), t.sizes().vec()) << name;
    ExpectBitEqual(f.tensor(name), t, name);
  }
  EXPECT_FALSE(f.contains("nope"));
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"note", "hello"}}));
  // The transposed input was written in logical order.
  EXPECT_EQ(f.tensor("model.transposed")[0][1].item<float>(), 3.0f);
}

TEST(SafetensorsTest, FileLayout) {
  TempDir dir;
  const std::string path = dir / "t.safetensors";
  WriteSafetensors(path, {{"a", at::ones({3}, at::kHalf)}, {"b", at::zeros({2, 2})}});
  const std::string bytes = test::ReadFile(path);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ((8 + n) % 8, 0u) << "data section not 8-byte aligned";
  ASSERT_EQ(bytes.size(), 8 + n + 3 * 2 + 4 * 4);
  const json header = json::parse(bytes.substr(8, n));
  EXPECT_EQ(header["a"]["dtype"], "F16");
  EXPECT_EQ(header["a"]["shape"], json::array({3}));
  EXPECT_EQ(header["a"]["data_offsets"], json::array({0, 6}));
  EXPECT_EQ(header["b"]["dtype"], "F32");
  EXPECT_EQ(header["b"]["data_offsets"], json::array({6, 22}));
  EXPECT_FALSE(header.contains("__metadata__"));
  EXPECT_FALSE(test::Exists(path + ".tmp"));  // the atomic write cleaned up
}

TEST(SafetensorsTest, TensorOutlivesTheFileObject) {
  TempDir dir;
  const std::string path = dir / "t.safetensors";
  const auto values = at::arange(1000, at::TensorOptions().dtype(at::kFloat));
  WriteSafetensors(path, {{"x", values}});
  at::Tensor t;
  {
    SafetensorsFile f(path);
    t = f.tensor("x");
  }
  EXPECT_TRUE(at::equal(t, values));  // the mapping lives as long as the tensor
}

TEST(SafetensorsTest, WriteRejectsBadInput) {
  TempDir dir;
  const std::string dup = ErrorOf([&] {
    WriteSafetensors(dir / "d.safetensors", {{"a", at::ones({1})}, {"a", at::ones({2})}});
  });
  EXPECT_NE(dup.find("duplicate tensor name a"), std::string::npos) << dup;
  const std::string complex = ErrorOf([&] {
    WriteSafetensors(dir / "c.safetensors", {{"z", at::ones({2}, at::kComplexFloat)}});
  });
  EXPECT_NE(complex.find("cannot store dtype"), std::string::npos) << complex;
}

TEST(SafetensorsTest, ShardedCheckpointRoundTrip) {
  TempDir dir;
  NamedTensors tensors;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  for (int i = 0; i < 5; ++i) {
    tensors.emplace_back("model.layers." + std::to_string(i) + ".weight", at::randn({4, 6}, gen));
  }
  tensors.emplace_back("model.ids", at::arange(10, at::TensorOptions().dtype(at::kLong)));
  // 96 bytes per float tensor: at most one per 100-byte shard.
  WriteCheckpoint(dir.path(), tensors, /*max_shard_bytes=*/100);
  EXPECT_FALSE(test::Exists(dir / "model.safetensors"));
  ASSERT_TRUE(test::Exists(dir / "model.safetensors.index.json"));
  const json index = json::parse(test::ReadFile(dir / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 5 * 96 + 80);
  ASSERT_EQ(index["weight_map"].size(), tensors.size());
  std::set<std::string> shards;
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
    shards.insert(it->get<std::string>());
  }
  EXPECT_EQ(shards.size(), 6u);
  EXPECT_TRUE(shards.count("model-00001-of-00006.safetensors"));
  EXPECT_TRUE(shards.count("model-00006-of-00006.safetensors"));
  for (const auto& s : shards) EXPECT_TRUE(test::Exists(dir / s)) << s;
  EXPECT_EQ(SafetensorsFile(dir / "model-00001-of-00006.safetensors").metadata().at("format"), "pt");

  CheckpointReader reader(dir.path());
  EXPECT_EQ(reader.names().size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    ASSERT_TRUE(reader.contains(name)) << name;
    EXPECT_EQ(reader.shape(name), t.sizes().vec());
    ExpectBitEqual(reader.tensor(name), t, name);
  }
  const std::string missing = ErrorOf([&] { reader.tensor("nope"); });
  EXPECT_NE(missing.find("no tensor named nope"), std::string::npos) << missing;
}

// Saving a checkpoint again into the same directory must read back what was saved last, also
// when the new one fits one file and the old one was sharded (e.g. a float32 model re-saved as
// bfloat16): a stale model.safetensors.index.json would otherwise win over model.safetensors.
TEST(SafetensorsTest, RewritingAsOneFileReplacesAShardedCheckpoint) {
  TempDir dir;
  WriteCheckpoint(dir.path(), {{"a", at::zeros({8})}, {"b", at::zeros({8})}}, /*max_shard_bytes=*/40);
  ASSERT_TRUE(test::Exists(dir / "model.safetensors.index.json"));
  const NamedTensors fresh = {{"a", at::ones({8})}, {"b", at::ones({8})}};
  WriteCheckpoint(dir.path(), fresh);
  ASSERT_TRUE(test::Exists(dir / "model.safetensors"));
  CheckpointReader reader(dir.path());
  ExpectBitEqual(reader.tensor("a"), fresh[0].second, "a");
  ExpectBitEqual(reader.tensor("b"), fresh[1].second, "b");
}

TEST(SafetensorsTest, SmallCheckpointIsOneFile) {
  TempDir dir;
  const NamedTensors tensors = {{"a", at::ones({2, 2})}, {"b", at::zeros({3}, at::kBFloat16)}};
  WriteCheckpoint(dir.path(), tensors);
  EXPECT_TRUE(test::Exists(dir / "model.safetensors"));
  EXPECT_FALSE(test::Exists(dir / "model.safetensors.index.json"));
  CheckpointReader reader(dir.path());
  EXPECT_EQ(reader.names(), std::vector<std::string>({"a", "b"}));
  ExpectBitEqual(reader.tensor("b"), tensors[1].second, "b");
  CheckpointReader one = CheckpointReader::FromFile(dir / "model.safetensors");
  ExpectBitEqual(one.tensor("a"), tensors[0].second, "a");
}

// ---- corrupted files ---------------------------------------------------------------------------

struct Corrupt {
  const char* what;
  std::string bytes;
  const char* message;
};

TEST(SafetensorsTest, CorruptFilesThrowModelError) {
  const std::string f32x4(16, '\0');
  const Corrupt cases[] = {
      {"empty file", "", "shorter than the 8-byte header length"},
      {"shorter than 8 bytes", "abc", "shorter than the 8-byte header length"},
      {"header length beyond the file", RawFile("{}").replace(0, 2, "\xe8\x03"),
       "header length 1000 exceeds the file size"},
      {"absurd header length", std::string(7, '\xff') + '\x7f' + "{}", "is absurd"},
      {"header not JSON", RawFile("{\"a\": [1, 2"), "header is not JSON"},
      {"header not an object", RawFile("[1, 2, 3]"), "header is not a JSON object"},
      {"offsets beyond the data",
       RawFile(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,32]}})", f32x4),
       "byte range [0, 32) lies outside the 16-byte data section"},
      {"offsets reversed",
       RawFile(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", f32x4),
       "lies outside"},
      {"byte count does not match the shape",
       RawFile(R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}})", f32x4),
       "byte range holds 16 bytes but the shape needs 24"},
      {"bf16 count does not match",
       RawFile(R"({"a":{"dtype":"BF16","shape":[4],"data_offsets":[0,16]}})", f32x4),
       "holds 16 bytes but the shape needs 8"},
      {"unknown dtype", RawFile(R"({"a":{"dtype":"X99","shape":[4],"data_offsets":[0,16]}})", f32x4),
       "a: unsupported dtype X99"},
      {"missing shape", RawFile(R"({"a":{"dtype":"F32","data_offsets":[0,16]}})", f32x4),
       "a: malformed entry"},
      {"three offsets", RawFile(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,8,16]}})", f32x4),
       "a: malformed entry"},
      {"entry not an object", RawFile(R"({"a": 5})", f32x4), "a: malformed entry"},
      {"negative dimension",
       RawFile(R"({"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", f32x4),
       "a: negative dimension"},
      {"two bad entries",
       RawFile(R"({"a":{"dtype":"X","shape":[4],"data_offsets":[0,16]},
                   "b":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}})", f32x4),
       "2 bad tensor entries"},
  };
  TempDir dir;
  int i = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    const std::string path = dir / ("bad" + std::to_string(i++) + ".safetensors");
    test::WriteFile(path, c.bytes);
    const std::string msg = FileError(path);
    EXPECT_NE(msg.find(c.message), std::string::npos) << msg;
    if (!msg.empty() && msg.find("cannot open") == std::string::npos) {
      EXPECT_NE(msg.find(path + ": not a valid safetensors file"), std::string::npos) << msg;
      EXPECT_NE(msg.find("hint"), std::string::npos) << msg;
    }
  }
}

TEST(SafetensorsTest, TruncatedDataSection) {
  TempDir dir;
  const std::string path = dir / "t.safetensors";
  WriteSafetensors(path, {{"a", at::ones({8})}, {"b", at::ones({8})}});
  const std::string whole = test::ReadFile(path);
  test::WriteFile(path, whole.substr(0, whole.size() - 4));
  const std::string msg = FileError(path);
  EXPECT_NE(msg.find("b: byte range [32, 64) lies outside the 60-byte data section"),
            std::string::npos) << msg;
  // Cut inside the header: the declared header length now exceeds the file.
  test::WriteFile(path, whole.substr(0, 20));
  EXPECT_NE(FileError(path).find("exceeds the file size 20"), std::string::npos);
}

// A shape whose byte count overflows 64 bits must be rejected. Unchecked, [2^62, 4] F32 needs
// 2^66 = 0 (mod 2^64) bytes and passes as an empty range, and [2^62 + 1, 4] needs 2^66 + 16 = 16
// bytes and matches a 16-byte range: a tensor of 2^64 elements viewing 16 mapped bytes.
TEST(SafetensorsTest, OverflowingShapeIsRejected) {
  TempDir dir;
  const std::string data(16, '\0');
  const std::string headers[] = {
      R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}})",
      R"({"a":{"dtype":"F32","shape":[4611686018427387905,4],"data_offsets":[0,16]}})",
  };
  int i = 0;
  for (const auto& header : headers) {
    SCOPED_TRACE(header);
    const std::string path = dir / ("overflow" + std::to_string(i++) + ".safetensors");
    test::WriteFile(path, RawFile(header, data));
    const std::string msg = FileError(path);
    EXPECT_NE(msg.find(path + ": not a valid safetensors file"), std::string::npos) << msg;
    EXPECT_NE(msg.find("a: "), std::string::npos) << msg;
  }
}

TEST(SafetensorsTest, MissingFile) {
  TempDir dir;
  const std::string msg = FileError(dir / "absent.safetensors");
  EXPECT_NE(msg.find("cannot open " + (dir / "absent.safetensors")), std::string::npos) << msg;
}

// ---- checkpoint directories --------------------------------------------------------------------

class IndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteSafetensors(dir_ / "s1.safetensors", {{"a", at::ones({2})}, {"b", at::ones({3})}});
    WriteSafetensors(dir_ / "s2.safetensors", {{"c", at::ones({4})}});
  }
  void WriteIndex(const json& weight_map) {
    test::WriteFile(dir_ / "model.safetensors.index.json",
                    json{{"metadata", json::object()}, {"weight_map", weight_map}}.dump());
  }
  std::string ReaderError() {
    return ErrorOf([&] { CheckpointReader r(dir_.path()); });
  }
  TempDir dir_;
};

TEST_F(IndexTest, ConsistentIndexReads) {
  WriteIndex({{"a", "s1.safetensors"}, {"b", "s1.safetensors"}, {"c", "s2.safetensors"}});
  CheckpointReader r(dir_.path());
  EXPECT_EQ(r.names(), std::vector<std::string>({"a", "b", "c"}));
  EXPECT_EQ(r.shape("c"), std::vector<int64_t>({4}));
}

TEST_F(IndexTest, MissingShard) {
  WriteIndex({{"a", "s1.safetensors"}, {"z", "model-00009-of-00009.safetensors"}});
  const std::string msg = ReaderError();
  EXPECT_NE(msg.find("cannot open " + (dir_ / "model-00009-of-00009.safetensors")), std::string::npos)
      << msg;
}

TEST_F(IndexTest, TensorNotInItsShard) {
  WriteIndex({{"a", "s1.safetensors"}, {"c", "s1.safetensors"}, {"b", "s2.safetensors"}});
  const std::string msg = ReaderError();
  EXPECT_NE(msg.find("inconsistent with its shards"), std::string::npos) << msg;
  EXPECT_NE(msg.find("c: the index says s1.safetensors but it is not there"), std::string::npos) << msg;
  EXPECT_NE(msg.find("b: the index says s2.safetensors but it is not there"), std::string::npos) << msg;
}

TEST_F(IndexTest, BadIndexFiles) {
  test::WriteFile(dir_ / "model.safetensors.index.json", "{\"weight_map\": ");
  EXPECT_NE(ReaderError().find("not valid JSON"), std::string::npos);
  test::WriteFile(dir_ / "model.safetensors.index.json", "{\"metadata\": {}}");
  EXPECT_NE(ReaderError().find("missing the 'weight_map' object"), std::string::npos);
  WriteIndex({{"a", "../s1.safetensors"}});
  EXPECT_NE(ReaderError().find("must be a plain file name"), std::string::npos);
  WriteIndex({{"a", 3}});
  EXPECT_NE(ReaderError().find("a: shard name is not a string"), std::string::npos);
}

TEST(CheckpointTest, NoModelFilesGivesHint) {
  TempDir dir;
  test::WriteFile(dir / "pytorch_model.bin", "not read");
  const std::string msg = ErrorOf([&] { CheckpointReader r(dir.path()); });
  EXPECT_NE(msg.find("no model.safetensors or model.safetensors.index.json in " + dir.path()),
            std::string::npos) << msg;
  EXPECT_NE(msg.find("hint"), std::string::npos) << msg;
  EXPECT_NE(msg.find("safe_serialization"), std::string::npos) << msg;
}

TEST(CheckpointTest, CorruptSingleFileNamesIt) {
  TempDir dir;
  test::WriteFile(dir / "model.safetensors", "short");
  const std::string msg = ErrorOf([&] { CheckpointReader r(dir.path()); });
  EXPECT_NE(msg.find(dir / "model.safetensors"), std::string::npos) << msg;
}

}  // namespace
}  // namespace sharedllm

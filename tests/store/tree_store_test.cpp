// The RocksDB tree store against a real database in a fresh temporary directory: bit-exact round
// trips, key order, the READY/resume protocol (including a writer process that dies without
// closing the database), checksums, deletion, tenant isolation, paging, fingerprints and jobs.
// Where a test must look below the store's API (count keys, corrupt a value) it opens the
// directory with plain RocksDB after closing the store.
#include "store/rocksdb_tree_store.h"

#include <dirent.h>
#include <gtest/gtest.h>

#include <tuple>
#include <rocksdb/db.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "tests/test_util.h"
#include "store/crc32c.h"
#include "store/key_codec.h"
#include "store/value_codec.h"

namespace sharedllm {
namespace {

using test::TempDir;
using namespace treestore;  // NOLINT: key/value codec helpers

constexpr int64_t kDepth = 3;      // 2 + 4 + 8 = 14 nodes per chunk
constexpr int64_t kLayers = 2;     // lower-model layers
constexpr int64_t kChunkLen = 32;  // tokens per chunk
constexpr int64_t kHidden = 8;
constexpr int64_t kKvHeads = 2;
constexpr int64_t kHeadDim = 4;
constexpr char kFingerprint[] = "llama-tiny@sha256:0123";

TensorBlob RandomBlob(DType dtype, std::vector<int64_t> shape, std::mt19937_64& rng) {
  TensorBlob t{dtype, std::move(shape), {}};
  t.data.resize(t.numel() * ElementSize(dtype));
  for (char& c : t.data) c = static_cast<char>(rng());
  return t;
}

struct Chunk {
  std::vector<int64_t> tokens;
  std::vector<NodeRecord> nodes;  // level 1 first, left to right: the store's order
};

// A deterministic chunk of document `seed`: every node of a depth-kDepth tree over kChunkLen
// tokens, K/V [kv_heads, kept, head_dim] with kept = length / 2^(kDepth + 2 - level).
Chunk MakeChunk(uint64_t seed, int64_t chunk) {
  std::mt19937_64 rng(seed * 1000003 + chunk);
  Chunk c;
  for (int64_t i = 0; i < kChunkLen; ++i) c.tokens.push_back(static_cast<int64_t>(rng() % 32000));
  for (int64_t level = 1; level <= kDepth; ++level) {
    const int64_t width = kChunkLen >> level;
    for (int64_t index = 0; index < (int64_t{1} << level); ++index) {
      NodeRecord n;
      n.chunk = chunk;
      n.level = level;
      n.index = index;
      n.begin = index * width;
      n.end = n.begin + width;
      n.search = RandomBlob(DType::kF32, {kHidden}, rng);
      const int64_t kept = std::max<int64_t>(1, width >> (kDepth + 2 - level));
      for (int64_t l = 0; l < kLayers; ++l) {
        n.k.push_back(RandomBlob(DType::kBF16, {kKvHeads, kept, kHeadDim}, rng));
        n.v.push_back(RandomBlob(DType::kBF16, {kKvHeads, kept, kHeadDim}, rng));
      }
      c.nodes.push_back(std::move(n));
    }
  }
  return c;
}

DocumentMeta Meta(const std::string& tenant, const std::string& id, int64_t num_chunks,
                  const std::string& collection = "") {
  DocumentMeta m;
  m.tenant = tenant;
  m.document_id = id;
  m.collection_id = collection;
  m.name = id + ".txt";
  m.sha256 = "ab" + id;
  m.size_bytes = 1000 * num_chunks;
  m.num_tokens = kChunkLen * num_chunks;
  m.num_chunks = num_chunks;
  m.model_fingerprint = kFingerprint;
  m.created_unix_ms = 1700000000000;
  return m;
}

std::vector<NodeRef> AllRefs(int64_t num_chunks) {
  std::vector<NodeRef> refs;
  for (int64_t c = 0; c < num_chunks; ++c) {
    for (int64_t level = 1; level <= kDepth; ++level) {
      for (int64_t i = 0; i < (int64_t{1} << level); ++i) refs.push_back({c, level, i});
    }
  }
  return refs;
}

// A RocksDB handle on the store's directory, with its column families: the view from below.
class RawDb {
 public:
  explicit RawDb(const std::string& path) {
    std::vector<rocksdb::ColumnFamilyDescriptor> families = {
        {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()}};
    for (int f = 0; f < RocksDbTreeStore::kNumFamilies; ++f) {
      families.emplace_back(RocksDbTreeStore::FamilyName(static_cast<RocksDbTreeStore::Family>(f)),
                            rocksdb::ColumnFamilyOptions());
    }
    rocksdb::DB* raw = nullptr;
    const rocksdb::Status s =
        rocksdb::DB::Open(rocksdb::DBOptions(), path, families, &handles_, &raw);
    db_.reset(raw);
    if (!s.ok()) ADD_FAILURE() << s.ToString();
  }
  ~RawDb() {
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h).PermitUncheckedError();
  }
  bool ok() const { return db_ != nullptr; }
  rocksdb::ColumnFamilyHandle* cf(int family) { return handles_[family + 1]; }

  // Every key of `family` starting with `prefix`, in order.
  std::vector<std::string> Keys(int family, const std::string& prefix = "") {
    std::vector<std::string> keys;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cf(family)));
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      keys.push_back(it->key().ToString());
    }
    EXPECT_TRUE(it->status().ok()) << it->status().ToString();
    return keys;
  }
  std::string Get(int family, const std::string& key) {
    std::string value;
    const rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cf(family), key, &value);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return value;
  }
  void Put(int family, const std::string& key, const std::string& value) {
    const rocksdb::Status s = db_->Put(rocksdb::WriteOptions(), cf(family), key, value);
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  void Delete(int family, const std::string& key) {
    const rocksdb::Status s = db_->Delete(rocksdb::WriteOptions(), cf(family), key);
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  // Flips one bit in the middle of a stored value, as a bad disk sector would.
  void FlipBit(int family, const std::string& key) {
    std::string value = Get(family, key);
    ASSERT_FALSE(value.empty());
    value[value.size() / 2] ^= 0x10;
    Put(family, key, value);
  }

 private:
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
};

class TreeStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.path = dir_ / "db";
    options_.block_cache_mb = 8;
    options_.sync_writes = false;  // a process crash still keeps every batch (the WAL is written)
    Reopen();
  }
  void Reopen() {
    store_.reset();
    auto opened = RocksDbTreeStore::Open(options_);
    ASSERT_TRUE(opened.ok()) << opened.status();
    store_ = *std::move(opened);
  }
  void Close() { store_.reset(); }

  void WriteChunk(const std::string& tenant, const std::string& doc, uint64_t seed, int64_t c) {
    const Chunk chunk = MakeChunk(seed, c);
    const absl::Status s = store_->PutChunk(tenant, doc, c, chunk.tokens, chunk.nodes, {});
    ASSERT_TRUE(s.ok()) << s;
  }
  // Creates and fully ingests a document, READY.
  void Ingest(const std::string& tenant, const std::string& doc, uint64_t seed, int64_t chunks,
              const std::string& collection = "") {
    ASSERT_TRUE(store_->PutDocument(Meta(tenant, doc, chunks, collection)).ok());
    for (int64_t c = 0; c < chunks; ++c) WriteChunk(tenant, doc, seed, c);
    const absl::Status s = store_->MarkReady(tenant, doc);
    ASSERT_TRUE(s.ok()) << s;
  }
  // Everything the store returns for the document equals what was written, bit for bit.
  void ExpectDocument(const std::string& tenant, const std::string& doc, uint64_t seed,
                      int64_t chunks) {
    auto vectors = store_->LoadVectors(tenant, doc);
    ASSERT_TRUE(vectors.ok()) << vectors.status();
    auto nodes = store_->LoadNodes(tenant, doc, AllRefs(chunks));
    ASSERT_TRUE(nodes.ok()) << nodes.status();
    ASSERT_EQ(vectors->size(), nodes->size());
    size_t i = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      const Chunk want = MakeChunk(seed, c);
      auto tokens = store_->LoadChunkTokens(tenant, doc, c);
      ASSERT_TRUE(tokens.ok()) << tokens.status();
      EXPECT_EQ(*tokens, want.tokens) << "chunk " << c;
      for (const NodeRecord& w : want.nodes) {
        ASSERT_LT(i, nodes->size());
        const NodeRecord& got = (*nodes)[i];
        EXPECT_TRUE(got == w) << "chunk " << c << " level " << w.level << " index " << w.index;
        const NodeRecord& vec = (*vectors)[i];
        EXPECT_EQ(vec.chunk, w.chunk);
        EXPECT_EQ(vec.level, w.level);
        EXPECT_EQ(vec.index, w.index);
        EXPECT_EQ(vec.begin, w.begin);
        EXPECT_EQ(vec.end, w.end);
        EXPECT_TRUE(vec.search == w.search);
        EXPECT_TRUE(vec.k.empty() && vec.v.empty()) << "LoadVectors returns no K/V";
        ++i;
      }
    }
    EXPECT_EQ(i, nodes->size());
  }

  TempDir dir_;
  RocksDbTreeStoreOptions options_;
  std::unique_ptr<RocksDbTreeStore> store_;
};

// Codecs ------------------------------------------------------------------------------------

TEST(Crc32cTest, KnownVectorsAndBothImplementationsAgree) {
  EXPECT_EQ(Crc32c("123456789"), 0xe3069283u);
  EXPECT_EQ(Crc32cPortable("123456789"), 0xe3069283u);
  EXPECT_EQ(Crc32c(""), 0u);
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8a9136aau);  // RFC 3720 B.4
  std::mt19937_64 rng(7);
  std::string data(1000, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  for (size_t off : {0, 1, 3, 7}) {
    for (size_t len : {0, 1, 7, 8, 9, 63, 500, 993}) {
      const absl::string_view s(data.data() + off, std::min(len, data.size() - off));
      EXPECT_EQ(Crc32c(s), Crc32cPortable(s)) << off << " " << len;
    }
  }
  // Incremental == one shot.
  EXPECT_EQ(
      Crc32c(absl::string_view(data).substr(300), Crc32c(absl::string_view(data).substr(0, 300))),
      Crc32c(data));
}

// A damaged metadata record whose integer field holds a float (5e30: converting it to int64 is
// undefined behaviour, found by fuzz/value_codec_fuzz; 2.5: silently truncated) is DATA_LOSS.
TEST(ValueCodecTest, MetadataIntegersMustBeIntegers) {
  auto sealed = [](const std::string& json) { return Seal(std::string(1, '\x01') + json); };
  EXPECT_TRUE(DecodeDocumentMeta(sealed(R"({"num_chunks": 3, "state": "READY"})")).ok());
  for (const char* bad : {R"({"num_chunks": 5.5e30})", R"({"num_chunks": 2.5})",
                          R"({"created_unix_ms": "soon"})", R"({"chunks_done": -1e300})"}) {
    auto m = DecodeDocumentMeta(sealed(bad));
    EXPECT_EQ(m.status().code(), absl::StatusCode::kDataLoss) << bad;
  }
  // And the terms of a chunk: only what PutChunk could have written.
  std::string body(1, '\x01');
  body += std::string("\x01\x00\x00\x00\x00\x00\x00\x00", 8);  // one term: "" counted 0 times
  EXPECT_EQ(DecodeChunkTerms(Seal(body)).status().code(), absl::StatusCode::kDataLoss);
}

TEST(KeyCodecTest, BigEndianIntegersSortNumerically) {
  EXPECT_LT(ChunkKey("t", "d", 2), ChunkKey("t", "d", 10));
  EXPECT_LT(ChunkKey("t", "d", 255), ChunkKey("t", "d", 256));
  EXPECT_LT(ChunkKey("t", "d", 1), ChunkKey("t", "d", 1u << 24));
  EXPECT_LT(NodeKey("t", "d", 3, 255), NodeKey("t", "d", 3, 256));
  EXPECT_LT(NodeKey("t", "d", 3, 65535), NodeKey("t", "d", 4, 0));
  EXPECT_LT(LayerKey("t", "d", 3, 5, 9), LayerKey("t", "d", 3, 5, 300));
  EXPECT_EQ(ChunkKey("t", "d", 0x01020304), std::string("\x00\x01t\x00\x01"
                                                        "d\x01\x02\x03\x04",
                                                        10));
}

TEST(KeyCodecTest, LengthPrefixesNeverCollide) {
  auto starts_with = [](const std::string& s, const std::string& p) {
    return s.compare(0, p.size(), p) == 0;
  };
  // "doc" vs "doc1": no key of one document starts with the other's document key.
  EXPECT_FALSE(starts_with(DocumentKey("t", "doc1"), DocumentKey("t", "doc")));
  EXPECT_FALSE(starts_with(ChunkKey("t", "doc1", 0), DocumentKey("t", "doc")));
  EXPECT_FALSE(starts_with(LayerKey("t", "doc", 0, 0, 0), DocumentKey("t", "doc1")));
  // Tenant "a" vs "ab", and the concatenations "a"+"bc" vs "ab"+"c".
  EXPECT_FALSE(starts_with(DocumentKey("ab", "x"), TenantPrefix("a")));
  EXPECT_NE(DocumentKey("a", "bc"), DocumentKey("ab", "c"));
  EXPECT_FALSE(starts_with(DocumentKey("ab", "c"), DocumentKey("a", "bc")));
  // A prefix range covers exactly the prefix's keys.
  const std::string lo = DocumentKey("t", "doc"), hi = PrefixSuccessor(lo);
  EXPECT_TRUE(LayerKey("t", "doc", 0xffffffff, 0xffff, 0xffff) < hi);
  EXPECT_FALSE(DocumentKey("t", "doc1") >= lo && DocumentKey("t", "doc1") < hi);
  EXPECT_EQ(PrefixSuccessor(std::string("a\xff\xff", 3)), "b");
  EXPECT_EQ(PrefixSuccessor(std::string("\xff", 1)), "");
}

TEST(KeyCodecTest, FlatNodeIndexAndDescribe) {
  EXPECT_EQ(*FlatNodeIndex(1, 0), 0);
  EXPECT_EQ(*FlatNodeIndex(1, 1), 1);
  EXPECT_EQ(*FlatNodeIndex(2, 0), 2);
  EXPECT_EQ(*FlatNodeIndex(3, 7), 13);
  EXPECT_EQ(*FlatNodeIndex(15, (1 << 15) - 1), 65533);
  for (int64_t level = 1; level <= kMaxLevel; ++level) {
    for (int64_t index : {int64_t{0}, (int64_t{1} << level) - 1}) {
      int64_t l = 0, i = 0;
      LevelAndIndex(*FlatNodeIndex(level, index), &l, &i);
      EXPECT_EQ(l, level);
      EXPECT_EQ(i, index);
    }
  }
  EXPECT_EQ(FlatNodeIndex(0, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FlatNodeIndex(16, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FlatNodeIndex(2, 4).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FlatNodeIndex(2, -1).status().code(), absl::StatusCode::kInvalidArgument);
  const std::string d = DescribeKey("kv", LayerKey("acme", "doc", 3, 5, 1));
  EXPECT_NE(d.find("tenant \"acme\" document \"doc\" chunk 3 node 5 (level 2, index 3) layer 1"),
            std::string::npos)
      << d;
}

// Documents and trees -------------------------------------------------------------------------

TEST_F(TreeStoreTest, RoundTripIsBitExact) {
  Ingest("acme", "report", 1, 3, "q3");
  ExpectDocument("acme", "report", 1, 3);

  auto meta = store_->GetDocument("acme", "report");
  ASSERT_TRUE(meta.ok()) << meta.status();
  const DocumentMeta want = Meta("acme", "report", 3, "q3");
  EXPECT_EQ(meta->tenant, "acme");
  EXPECT_EQ(meta->document_id, "report");
  EXPECT_EQ(meta->collection_id, "q3");
  EXPECT_EQ(meta->name, want.name);
  EXPECT_EQ(meta->sha256, want.sha256);
  EXPECT_EQ(meta->size_bytes, want.size_bytes);
  EXPECT_EQ(meta->num_tokens, want.num_tokens);
  EXPECT_EQ(meta->num_chunks, 3);
  EXPECT_EQ(meta->chunks_done, 3);
  EXPECT_EQ(meta->state, kDocumentReady);
  EXPECT_EQ(meta->model_fingerprint, kFingerprint);
  EXPECT_EQ(meta->created_unix_ms, want.created_unix_ms);
  EXPECT_GT(meta->updated_unix_ms, 0);

  // A selection in any order, with repeats, comes back in the order asked.
  const std::vector<NodeRef> refs = {{2, 3, 7}, {0, 1, 0}, {2, 3, 7}, {1, 2, 1}};
  auto nodes = store_->LoadNodes("acme", "report", refs);
  ASSERT_TRUE(nodes.ok()) << nodes.status();
  ASSERT_EQ(nodes->size(), refs.size());
  for (size_t i = 0; i < refs.size(); ++i) {
    const Chunk c = MakeChunk(1, refs[i].chunk);
    const NodeRecord& want_node = c.nodes[*FlatNodeIndex(refs[i].level, refs[i].index)];
    EXPECT_TRUE((*nodes)[i] == want_node) << i;
  }
}

TEST_F(TreeStoreTest, ChunksComeBackInNumericOrder) {
  Ingest("t", "long", 2, 12);
  auto vectors = store_->LoadVectors("t", "long");
  ASSERT_TRUE(vectors.ok()) << vectors.status();
  ASSERT_EQ(vectors->size(), 12u * 14u);
  for (size_t i = 0; i < vectors->size(); ++i) {
    EXPECT_EQ((*vectors)[i].chunk, static_cast<int64_t>(i / 14)) << i;
  }
  Close();
  RawDb raw(options_.path);
  const auto keys = raw.Keys(RocksDbTreeStore::kTokens, DocumentKey("t", "long"));
  ASSERT_EQ(keys.size(), 12u);
  for (uint32_t c = 0; c < 12; ++c) EXPECT_EQ(keys[c], ChunkKey("t", "long", c));  // 2 before 10
}

TEST_F(TreeStoreTest, ReadyOnlyAfterEveryChunk) {
  ASSERT_TRUE(store_->PutDocument(Meta("t", "d", 3)).ok());
  WriteChunk("t", "d", 3, 0);
  WriteChunk("t", "d", 3, 1);
  const absl::Status early = store_->MarkReady("t", "d");
  EXPECT_EQ(early.code(), absl::StatusCode::kFailedPrecondition) << early;
  EXPECT_NE(std::string(early.message()).find("2 of 3"), std::string::npos) << early;
  EXPECT_EQ(store_->LoadVectors("t", "d").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->LoadNodes("t", "d", {{0, 1, 0}}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->LoadChunkTokens("t", "d", 0).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // Only MarkReady makes a document READY.
  DocumentMeta cheat = Meta("t", "d", 3);
  cheat.chunks_done = 2;
  cheat.state = kDocumentReady;
  EXPECT_EQ(store_->PutDocument(cheat).code(), absl::StatusCode::kFailedPrecondition);

  WriteChunk("t", "d", 3, 2);
  ASSERT_TRUE(store_->MarkReady("t", "d").ok());
  EXPECT_TRUE(store_->MarkReady("t", "d").ok()) << "idempotent";
  ExpectDocument("t", "d", 3, 3);
  // A READY tree is immutable: a late chunk write is refused.
  const Chunk late = MakeChunk(3, 2);
  EXPECT_EQ(store_->PutChunk("t", "d", 2, late.tokens, late.nodes, {}).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(TreeStoreTest, ReopenKeepsEverything) {
  Ingest("t", "a", 4, 2);
  Ingest("t", "b", 5, 3, "c");
  ASSERT_TRUE(store_->PutJob("t", "job1", R"({"state":"READY"})").ok());
  Reopen();
  ExpectDocument("t", "a", 4, 2);
  ExpectDocument("t", "b", 5, 3);
  auto job = store_->GetJob("t", "job1");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(*job, R"({"state":"READY"})");
  auto page = store_->ListDocuments("t", "", "", 10);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->documents.size(), 2u);
}

TEST_F(TreeStoreTest, InterruptedJobResumesFromChunksDone) {
  ASSERT_TRUE(store_->PutDocument(Meta("t", "d", 5)).ok());
  WriteChunk("t", "d", 6, 0);
  WriteChunk("t", "d", 6, 1);  // interrupted after chunk k = 1
  Reopen();
  auto meta = store_->GetDocument("t", "d");
  ASSERT_TRUE(meta.ok()) << meta.status();
  EXPECT_EQ(meta->chunks_done, 2);
  EXPECT_EQ(meta->state, kDocumentIndexing);
  // Chunks go in order: skipping chunk 2 is refused, so progress is always a prefix.
  const Chunk skip = MakeChunk(6, 3);
  const absl::Status s = store_->PutChunk("t", "d", 3, skip.tokens, skip.nodes, {});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  // Resume exactly where the store says.
  for (int64_t c = meta->chunks_done; c < meta->num_chunks; ++c) WriteChunk("t", "d", 6, c);
  ASSERT_TRUE(store_->MarkReady("t", "d").ok());
  ExpectDocument("t", "d", 6, 5);
}

// Run as a separate process by the next test: writes chunks 0 and 1 of a document the parent
// created, then dies without closing the database (no destructor, no flush).
TEST(TreeStoreCrashChild, WriteTwoChunksThenDie) {
  const char* path = std::getenv("SHAREDLLM_TREESTORE_CRASH_DB");
  if (!path) GTEST_SKIP() << "only run by TreeStoreTest.ProcessDeathLeavesAConsistentPrefix";
  RocksDbTreeStoreOptions options;
  options.path = path;
  options.sync_writes = false;
  auto store = RocksDbTreeStore::Open(options);
  if (!store.ok()) std::_Exit(3);
  for (int64_t c = 0; c < 2; ++c) {
    const Chunk chunk = MakeChunk(9, c);
    if (!(*store)->PutChunk("t", "d", c, chunk.tokens, chunk.nodes, {}).ok()) std::_Exit(4);
  }
  std::_Exit(0);
}

TEST_F(TreeStoreTest, ProcessDeathLeavesAConsistentPrefix) {
  ASSERT_TRUE(store_->PutDocument(Meta("t", "d", 4)).ok());
  Close();
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  ASSERT_GT(n, 0);
  exe[n] = '\0';
  const auto r = test::Run({"env", "SHAREDLLM_TREESTORE_CRASH_DB=" + options_.path, exe,
                            "--gtest_filter=TreeStoreCrashChild.*"},
                           dir_.path());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Reopen();
  auto meta = store_->GetDocument("t", "d");
  ASSERT_TRUE(meta.ok()) << meta.status();
  EXPECT_EQ(meta->chunks_done, 2);
  for (int64_t c = 2; c < 4; ++c) WriteChunk("t", "d", 9, c);
  ASSERT_TRUE(store_->MarkReady("t", "d").ok());
  ExpectDocument("t", "d", 9, 4);
}

TEST_F(TreeStoreTest, RetriedChunkWriteReplacesTheChunk) {
  ASSERT_TRUE(store_->PutDocument(Meta("t", "d", 2)).ok());
  // First attempt of chunk 0 with different content and an extra level-4 node.
  Chunk first = MakeChunk(77, 0);
  NodeRecord extra = first.nodes.back();
  extra.level = 4;
  extra.index = 0;
  extra.begin = 0;
  extra.end = 2;
  first.nodes.push_back(extra);
  ASSERT_TRUE(store_->PutChunk("t", "d", 0, first.tokens, first.nodes, {}).ok());
  WriteChunk("t", "d", 10, 0);  // the retry
  WriteChunk("t", "d", 10, 1);
  ASSERT_TRUE(store_->MarkReady("t", "d").ok());
  ExpectDocument("t", "d", 10, 2);
  EXPECT_EQ(store_->LoadNodes("t", "d", {{0, 4, 0}}).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(TreeStoreTest, RestartingAJobDropsItsChunks) {
  ASSERT_TRUE(store_->PutDocument(Meta("t", "d", 3)).ok());
  WriteChunk("t", "d", 11, 0);
  WriteChunk("t", "d", 11, 1);
  DocumentMeta restart = Meta("t", "d", 3);
  restart.chunks_done = 0;
  ASSERT_TRUE(store_->PutDocument(restart).ok());
  Close();
  {
    RawDb raw(options_.path);
    for (int f : {RocksDbTreeStore::kTokens, RocksDbTreeStore::kVectors, RocksDbTreeStore::kKv}) {
      EXPECT_EQ(raw.Keys(f, DocumentKey("t", "d")).size(), 0u) << f;
    }
  }
  Reopen();
  for (int64_t c = 0; c < 3; ++c) WriteChunk("t", "d", 12, c);
  ASSERT_TRUE(store_->MarkReady("t", "d").ok());
  ExpectDocument("t", "d", 12, 3);
}

TEST_F(TreeStoreTest, InvalidWritesAreRefused) {
  using absl::StatusCode;
  EXPECT_EQ(store_->PutDocument(Meta("", "d", 1)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->PutDocument(Meta("t", std::string(2000, 'x'), 1)).code(),
            StatusCode::kInvalidArgument);
  DocumentMeta bad_state = Meta("t", "d", 1);
  bad_state.state = "DONE";
  EXPECT_EQ(store_->PutDocument(bad_state).code(), StatusCode::kInvalidArgument);
  DocumentMeta ahead = Meta("t", "d", 2);
  ahead.chunks_done = 1;
  EXPECT_EQ(store_->PutDocument(ahead).code(), StatusCode::kFailedPrecondition);

  Chunk c = MakeChunk(13, 0);
  EXPECT_EQ(store_->PutChunk("t", "nope", 0, c.tokens, c.nodes, {}).code(), StatusCode::kNotFound);
  ASSERT_TRUE(store_->PutDocument(Meta("t", "d", 1)).ok());
  const Chunk c1 = MakeChunk(13, 1);
  EXPECT_EQ(store_->PutChunk("t", "d", 1, c1.tokens, c1.nodes, {}).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(store_->PutChunk("t", "d", -1, c.tokens, c.nodes, {}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->PutChunk("t", "d", 0, c.tokens, {}, {}).code(), StatusCode::kInvalidArgument);

  auto refused = [&](auto mutate) {
    Chunk m = MakeChunk(13, 0);
    mutate(m);
    return store_->PutChunk("t", "d", 0, m.tokens, m.nodes, {}).code();
  };
  EXPECT_EQ(refused([](Chunk& m) { m.nodes[3].k[1].data.pop_back(); }),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(refused([](Chunk& m) { m.nodes[0].search.shape = {kHidden + 1}; }),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(refused([](Chunk& m) { m.nodes[0].search.dtype = static_cast<DType>(9); }),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(refused([](Chunk& m) { m.nodes[2].v.pop_back(); }), StatusCode::kInvalidArgument);
  EXPECT_EQ(refused([](Chunk& m) { m.nodes[2].chunk = 1; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(refused([](Chunk& m) { m.nodes[2].index = 9; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(refused([](Chunk& m) { m.nodes[2].end = kChunkLen + 1; }),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(refused([](Chunk& m) { m.nodes.push_back(m.nodes[0]); }), StatusCode::kInvalidArgument);
  // Nothing of the refused writes landed.
  auto meta = store_->GetDocument("t", "d");
  ASSERT_TRUE(meta.ok());
  EXPECT_EQ(meta->chunks_done, 0);
}

TEST_F(TreeStoreTest, BadNodeReferences) {
  Ingest("t", "d", 14, 2);
  using absl::StatusCode;
  EXPECT_EQ(store_->LoadNodes("t", "d", {{2, 1, 0}}).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(store_->LoadNodes("t", "d", {{-1, 1, 0}}).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(store_->LoadNodes("t", "d", {{0, 0, 0}}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->LoadNodes("t", "d", {{0, 2, 4}}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->LoadNodes("t", "d", {{0, 4, 0}}).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->LoadChunkTokens("t", "d", 2).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(store_->LoadVectors("t", "missing").status().code(), StatusCode::kNotFound);
  auto none = store_->LoadNodes("t", "d", {});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

// Checksums -----------------------------------------------------------------------------------

TEST_F(TreeStoreTest, CorruptValuesAreDataLoss) {
  Ingest("t", "d", 15, 3);
  Ingest("t", "other", 16, 1);
  Close();
  const uint16_t node = *FlatNodeIndex(2, 1);
  {
    RawDb raw(options_.path);
    ASSERT_TRUE(raw.ok());
    raw.FlipBit(RocksDbTreeStore::kKv, LayerKey("t", "d", 1, node, 1));
    raw.FlipBit(RocksDbTreeStore::kVectors, NodeKey("t", "d", 2, 0));
    raw.FlipBit(RocksDbTreeStore::kTokens, ChunkKey("t", "d", 0));
    raw.FlipBit(RocksDbTreeStore::kDocuments, DocumentKey("t", "other"));
  }
  Reopen();
  auto kv = store_->LoadNodes("t", "d", {{0, 1, 0}, {1, 2, 1}});
  ASSERT_EQ(kv.status().code(), absl::StatusCode::kDataLoss) << kv.status();
  const std::string message(kv.status().message());
  EXPECT_NE(message.find("kv key tenant \"t\" document \"d\" chunk 1 node 3 (level 2, index 1) "
                         "layer 1"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("checksum mismatch"), std::string::npos) << message;
  // Nodes away from the damage still load.
  EXPECT_TRUE(store_->LoadNodes("t", "d", {{1, 2, 0}, {0, 3, 5}}).ok());

  auto vectors = store_->LoadVectors("t", "d");
  ASSERT_EQ(vectors.status().code(), absl::StatusCode::kDataLoss) << vectors.status();
  EXPECT_NE(std::string(vectors.status().message()).find("vectors key"), std::string::npos);
  EXPECT_NE(std::string(vectors.status().message()).find("chunk 2 node 0"), std::string::npos);

  auto tokens = store_->LoadChunkTokens("t", "d", 0);
  ASSERT_EQ(tokens.status().code(), absl::StatusCode::kDataLoss) << tokens.status();
  EXPECT_NE(std::string(tokens.status().message()).find("tokens key"), std::string::npos);

  auto meta = store_->GetDocument("t", "other");
  ASSERT_EQ(meta.status().code(), absl::StatusCode::kDataLoss) << meta.status();
  // Listed as FAILED, not an error for the whole list (ACorruptMetadataRecordIsListedAsFailed...).
  auto listed = store_->ListDocuments("t", "", "", 10);
  ASSERT_TRUE(listed.ok()) << listed.status();
  for (const auto& m : listed->documents) {
    if (m.document_id == "other") EXPECT_EQ(m.state, kDocumentFailed);
  }
  // A corrupt document can still be deleted.
  EXPECT_TRUE(store_->DeleteDocument("t", "other").ok());
  EXPECT_TRUE(store_->ListDocuments("t", "", "", 10).ok());
}

TEST_F(TreeStoreTest, MissingLayerIsDataLoss) {
  Ingest("t", "d", 17, 1);
  Close();
  {
    RawDb raw(options_.path);
    raw.Delete(RocksDbTreeStore::kKv, LayerKey("t", "d", 0, *FlatNodeIndex(1, 1), 1));
  }
  Reopen();
  auto nodes = store_->LoadNodes("t", "d", {{0, 1, 1}});
  ASSERT_EQ(nodes.status().code(), absl::StatusCode::kDataLoss) << nodes.status();
  EXPECT_NE(std::string(nodes.status().message()).find("layer 1"), std::string::npos);
}

TEST_F(TreeStoreTest, LargeKvValuesLiveInBlobFilesAndAreChecked) {
  // 64 KiB K and V tensors: above min_blob_size, so after a flush they live in blob files.
  std::mt19937_64 rng(25);
  Chunk chunk;
  chunk.tokens.assign(512, 7);
  for (int64_t index = 0; index < 2; ++index) {
    NodeRecord n;
    n.level = 1;
    n.index = index;
    n.begin = 256 * index;
    n.end = n.begin + 256;
    n.search = RandomBlob(DType::kF32, {512}, rng);
    for (int l = 0; l < 2; ++l) {
      n.k.push_back(RandomBlob(DType::kBF16, {8, 64, 64}, rng));
      n.v.push_back(RandomBlob(DType::kBF16, {8, 64, 64}, rng));
    }
    chunk.nodes.push_back(std::move(n));
  }
  ASSERT_TRUE(store_->PutDocument(Meta("t", "big", 1)).ok());
  ASSERT_TRUE(store_->PutChunk("t", "big", 0, chunk.tokens, chunk.nodes, {}).ok());
  ASSERT_TRUE(store_->MarkReady("t", "big").ok());
  Reopen();  // replaying the WAL flushes the memtables: K/V go to blob files
  auto nodes = store_->LoadNodes("t", "big", {{0, 1, 1}, {0, 1, 0}});
  ASSERT_TRUE(nodes.ok()) << nodes.status();
  EXPECT_TRUE((*nodes)[0] == chunk.nodes[1]);
  EXPECT_TRUE((*nodes)[1] == chunk.nodes[0]);
  Close();

  std::vector<std::string> blobs;
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(options_.path.c_str()), ::closedir);
  ASSERT_TRUE(d);
  while (dirent* e = ::readdir(d.get())) {
    const std::string name = e->d_name;
    if (name.size() > 5 && name.compare(name.size() - 5, 5, ".blob") == 0) blobs.push_back(name);
  }
  ASSERT_EQ(blobs.size(), 1u);
  // Damage the middle of the blob file: RocksDB's own blob checksum reports it as corruption,
  // which the store maps to DATA_LOSS.
  const std::string blob_path = options_.path + "/" + blobs[0];
  std::string bytes = test::ReadFile(blob_path);
  bytes[bytes.size() / 2] ^= 0x01;
  test::WriteFile(blob_path, bytes);
  Reopen();
  absl::Status s = absl::OkStatus();
  for (int64_t index = 0; index < 2 && s.ok(); ++index) {
    s = store_->LoadNodes("t", "big", {{0, 1, index}}).status();
  }
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
}

// Deletion and isolation ----------------------------------------------------------------------

TEST_F(TreeStoreTest, DeleteRemovesEveryKeyOfTheDocumentOnly) {
  Ingest("t", "doc", 18, 3);
  Ingest("t", "doc1", 19, 2);  // its id extends "doc"
  ASSERT_TRUE(store_->PutJob("t", "doc", R"({"document":"doc"})").ok());
  ASSERT_TRUE(store_->DeleteDocument("t", "doc").ok());
  EXPECT_EQ(store_->GetDocument("t", "doc").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->DeleteDocument("t", "doc").code(), absl::StatusCode::kNotFound);
  ExpectDocument("t", "doc1", 19, 2);
  EXPECT_TRUE(store_->GetJob("t", "doc").ok()) << "job records outlive their document";
  Close();
  RawDb raw(options_.path);
  for (int f : {RocksDbTreeStore::kDocuments, RocksDbTreeStore::kTokens, RocksDbTreeStore::kVectors,
                RocksDbTreeStore::kKv}) {
    EXPECT_EQ(raw.Keys(f, DocumentKey("t", "doc")).size(), 0u)
        << RocksDbTreeStore::FamilyName(static_cast<RocksDbTreeStore::Family>(f));
  }
  EXPECT_EQ(raw.Keys(RocksDbTreeStore::kVectors, DocumentKey("t", "doc1")).size(), 2u * 14u);
  EXPECT_EQ(raw.Keys(RocksDbTreeStore::kKv, DocumentKey("t", "doc1")).size(), 2u * 14u * kLayers);
}

TEST_F(TreeStoreTest, TenantsNeverSeeEachOther) {
  using absl::StatusCode;
  Ingest("a", "bc", 20, 2, "col");
  Ingest("ab", "c", 21, 1, "col");  // "a"+"bc" == "ab"+"c" if keys were concatenated
  Ingest("a", "shared", 22, 1);
  Ingest("ab", "shared", 23, 2);
  ASSERT_TRUE(store_->PutJob("a", "j", R"({"n":1})").ok());

  ExpectDocument("a", "bc", 20, 2);
  ExpectDocument("ab", "c", 21, 1);
  ExpectDocument("a", "shared", 22, 1);
  ExpectDocument("ab", "shared", 23, 2);

  // Tenant "b" (and "ab" for "a"'s own ids) sees nothing of tenant "a".
  for (const std::string intruder : {"b", "ab"}) {
    EXPECT_EQ(store_->GetDocument(intruder, "bc").status().code(), StatusCode::kNotFound);
    EXPECT_EQ(store_->LoadVectors(intruder, "bc").status().code(), StatusCode::kNotFound);
    EXPECT_EQ(store_->LoadNodes(intruder, "bc", {{0, 1, 0}}).status().code(),
              StatusCode::kNotFound);
    EXPECT_EQ(store_->LoadChunkTokens(intruder, "bc", 0).status().code(), StatusCode::kNotFound);
    EXPECT_EQ(store_->CheckFingerprint(intruder, "bc", kFingerprint).code(), StatusCode::kNotFound);
    EXPECT_EQ(store_->DeleteDocument(intruder, "bc").code(), StatusCode::kNotFound);
    EXPECT_EQ(store_->GetJob(intruder, "j").status().code(), StatusCode::kNotFound);
    EXPECT_EQ(store_->DeleteJob(intruder, "j").code(), StatusCode::kNotFound);
    const Chunk chunk = MakeChunk(1, 0);
    EXPECT_EQ(store_->PutChunk(intruder, "bc", 0, chunk.tokens, chunk.nodes, {}).code(),
              StatusCode::kNotFound);
  }
  auto b_docs = store_->ListDocuments("b", "", "", 100);
  ASSERT_TRUE(b_docs.ok());
  EXPECT_TRUE(b_docs->documents.empty());
  auto b_jobs = store_->ListJobs("b");
  ASSERT_TRUE(b_jobs.ok());
  EXPECT_TRUE(b_jobs->empty());
  auto a_docs = store_->ListDocuments("a", "", "", 100);
  ASSERT_TRUE(a_docs.ok());
  ASSERT_EQ(a_docs->documents.size(), 2u);
  for (const auto& d : a_docs->documents) EXPECT_EQ(d.tenant, "a");
  auto ab_docs = store_->ListDocuments("ab", "col", "", 100);
  ASSERT_TRUE(ab_docs.ok());
  ASSERT_EQ(ab_docs->documents.size(), 1u);
  EXPECT_EQ(ab_docs->documents[0].document_id, "c");

  // Deleting "ab"'s "shared" leaves "a"'s.
  ASSERT_TRUE(store_->DeleteDocument("ab", "shared").ok());
  ExpectDocument("a", "shared", 22, 1);

  // Below the API: every key of every family starts with its own tenant's prefix, and the keys
  // under TenantPrefix("a") all parse back to tenant "a" (none belongs to "ab").
  Close();
  RawDb raw(options_.path);
  for (int f = 0; f < RocksDbTreeStore::kNumFamilies; ++f) {
    for (const std::string& key : raw.Keys(f)) {
      KeyReader reader(key);
      const absl::string_view tenant = reader.Str();
      ASSERT_TRUE(reader.ok());
      EXPECT_TRUE(tenant == "a" || tenant == "ab") << DescribeKey("?", key);
    }
    for (const std::string& key : raw.Keys(f, TenantPrefix("a"))) {
      KeyReader reader(key);
      EXPECT_EQ(reader.Str(), "a");
    }
  }
}

// Listing, fingerprints, jobs -----------------------------------------------------------------

TEST_F(TreeStoreTest, PagingReturnsEveryDocumentExactlyOnce) {
  std::set<std::string> all, in_c1;
  for (int i = 0; i < 25; ++i) {
    const std::string id = "doc" + std::to_string(i);
    const std::string col = i % 3 == 0 ? "c1" : "c2";
    ASSERT_TRUE(store_->PutDocument(Meta("t", id, 1, col)).ok());
    all.insert(id);
    if (col == "c1") in_c1.insert(id);
  }
  ASSERT_TRUE(store_->PutDocument(Meta("u", "doc0", 1, "c1")).ok());  // another tenant

  auto list_all = [&](const std::string& collection, int64_t page_size) {
    std::vector<std::string> ids;
    std::string token;
    int pages = 0;
    do {
      auto page = store_->ListDocuments("t", collection, token, page_size);
      EXPECT_TRUE(page.ok()) << page.status();
      if (!page.ok()) break;
      EXPECT_LE(static_cast<int64_t>(page->documents.size()), page_size <= 0 ? 100 : page_size);
      for (const auto& d : page->documents) ids.push_back(d.document_id);
      token = page->next_page_token;
      EXPECT_LT(++pages, 100);
    } while (!token.empty() && pages < 100);
    return ids;
  };
  for (int64_t page_size : {1, 2, 7, 25, 26, 1000, 0}) {
    const auto ids = list_all("", page_size);
    EXPECT_EQ(ids.size(), all.size()) << page_size;
    EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()), all) << page_size;
    // Key order: ids by length, then bytes.
    EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end(), [](const auto& x, const auto& y) {
      return x.size() != y.size() ? x.size() < y.size() : x < y;
    }));
  }
  for (int64_t page_size : {1, 3, 100}) {
    const auto ids = list_all("c1", page_size);
    EXPECT_EQ(ids.size(), in_c1.size()) << page_size;
    EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()), in_c1) << page_size;
  }
  EXPECT_EQ(store_->ListDocuments("t", "", "not hex!", 10).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(TreeStoreTest, FingerprintMismatchIsFailedPrecondition) {
  Ingest("t", "d", 24, 1);
  EXPECT_TRUE(store_->CheckFingerprint("t", "d", kFingerprint).ok());
  const absl::Status s = store_->CheckFingerprint("t", "d", "mistral-tiny@sha256:9999");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(s.message()).find(kFingerprint), std::string::npos) << s;
  EXPECT_NE(std::string(s.message()).find("mistral-tiny@sha256:9999"), std::string::npos) << s;
  EXPECT_EQ(store_->CheckFingerprint("t", "nope", kFingerprint).code(),
            absl::StatusCode::kNotFound);
}

TEST_F(TreeStoreTest, JobsRoundTrip) {
  EXPECT_EQ(store_->GetJob("t", "j1").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(store_->PutJob("t", "j2", R"({"state":"QUEUED"})").ok());
  ASSERT_TRUE(store_->PutJob("t", "j1", R"({"state":"COMPRESSING","done":3})").ok());
  ASSERT_TRUE(store_->PutJob("t", "j2", R"({"state":"READY"})").ok());  // overwrite
  ASSERT_TRUE(store_->PutJob("u", "j1", R"({"other":true})").ok());
  EXPECT_EQ(store_->PutJob("t", "j3", "{not json").code(), absl::StatusCode::kInvalidArgument);
  auto j1 = store_->GetJob("t", "j1");
  ASSERT_TRUE(j1.ok());
  EXPECT_EQ(*j1, R"({"state":"COMPRESSING","done":3})");
  auto jobs = store_->ListJobs("t");
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_EQ((*jobs)[0].job_id, "j1");
  EXPECT_EQ((*jobs)[1].job_id, "j2");
  EXPECT_EQ((*jobs)[1].json, R"({"state":"READY"})");
  ASSERT_TRUE(store_->DeleteJob("t", "j1").ok());
  EXPECT_EQ(store_->GetJob("t", "j1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store_->GetJob("u", "j1").ok());
}

// Concurrency and opening ---------------------------------------------------------------------

TEST_F(TreeStoreTest, ConcurrentIngestionOfSeveralDocuments) {
  constexpr int kDocs = 4;
  for (int d = 0; d < kDocs; ++d) {
    ASSERT_TRUE(store_->PutDocument(Meta("t", "d" + std::to_string(d), 3)).ok());
  }
  std::vector<std::thread> threads;
  std::vector<absl::Status> results(kDocs);
  for (int d = 0; d < kDocs; ++d) {
    threads.emplace_back([&, d] {
      const std::string id = "d" + std::to_string(d);
      for (int64_t c = 0; c < 3 && results[d].ok(); ++c) {
        const Chunk chunk = MakeChunk(100 + d, c);
        results[d] = store_->PutChunk("t", id, c, chunk.tokens, chunk.nodes, {});
      }
      if (results[d].ok()) results[d] = store_->MarkReady("t", id);
    });
  }
  for (auto& t : threads) t.join();
  for (int d = 0; d < kDocs; ++d) {
    ASSERT_TRUE(results[d].ok()) << results[d];
    ExpectDocument("t", "d" + std::to_string(d), 100 + d, 3);
  }
}

// The retrieval index ------------------------------------------------------------------------

// Postings of `term` as (document, chunk, count, length) tuples, for comparisons.
std::vector<std::tuple<std::string, int64_t, int32_t, int32_t>> Postings(
    TreeStore& store, const std::string& tenant, const std::string& term,
    const std::string& collection = "", const std::string& document = "", int64_t limit = 0) {
  auto found = store.LoadPostings(tenant, term, collection, document, limit);
  EXPECT_TRUE(found.ok()) << found.status();
  std::vector<std::tuple<std::string, int64_t, int32_t, int32_t>> out;
  if (!found.ok()) return out;
  for (const auto& p : *found) out.emplace_back(p.document_id, p.chunk, p.count, p.length);
  return out;
}

TEST_F(TreeStoreTest, ACorruptMetadataRecordIsListedAsFailedNotAnError) {
  Ingest("t", "a", 1, 1);
  Ingest("t", "b", 2, 1, "c");
  Ingest("t", "z", 3, 1, "c");
  Close();
  {
    RawDb raw(options_.path);
    raw.Put(RocksDbTreeStore::kDocuments, DocumentKey("t", "b"), "garbage");
  }
  Reopen();
  auto page = store_->ListDocuments("t", "", "", 10);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->documents.size(), 3u);
  EXPECT_EQ(page->documents[1].document_id, "b");
  EXPECT_EQ(page->documents[1].state, kDocumentFailed);
  EXPECT_NE(page->documents[1].error.find("delete the document"), std::string::npos);
  EXPECT_EQ(page->documents[2].state, kDocumentReady);
  auto in_c = store_->ListDocuments("t", "c", "", 10);
  ASSERT_TRUE(in_c.ok());
  ASSERT_EQ(in_c->documents.size(), 1u) << "its collection is unknown";
  EXPECT_EQ(in_c->documents[0].document_id, "z");
  EXPECT_EQ(store_->GetTenantUsage("t")->documents, 3);
  EXPECT_TRUE(store_->DeleteDocument("t", "b").ok());
  EXPECT_EQ(store_->ListDocuments("t", "", "", 10)->documents.size(), 2u);
}

TEST_F(TreeStoreTest, Int8KeysAndValuesKeepTheirScales) {
  std::mt19937_64 rng(11);
  Chunk chunk = MakeChunk(4, 0);
  for (NodeRecord& n : chunk.nodes) {
    for (size_t l = 0; l < n.k.size(); ++l) {
      const int64_t kept = n.k[l].shape[1];
      n.k[l] = RandomBlob(DType::kI8, {kKvHeads, kept, kHeadDim}, rng);
      n.v[l] = RandomBlob(DType::kI8, {kKvHeads, kept, kHeadDim}, rng);
      n.k_scale.push_back(RandomBlob(DType::kBF16, {kKvHeads, 1, kHeadDim}, rng));
      // Exponents (this build) or bfloat16 scales (earlier ones): both are kept.
      n.v_scale.push_back(RandomBlob(l == 0 ? DType::kI8 : DType::kBF16, {kKvHeads, 1, kHeadDim}, rng));
    }
  }
  ASSERT_TRUE(store_->PutDocument(Meta("t", "q", 1)).ok());
  // Refused before anything is written: a missing scale, a wrong shape, a scale on bf16.
  Chunk bad = chunk;
  bad.nodes[0].k_scale.pop_back();
  EXPECT_EQ(store_->PutChunk("t", "q", 0, bad.tokens, bad.nodes, {}).code(),
            absl::StatusCode::kInvalidArgument);
  bad = chunk;
  bad.nodes[0].v_scale[0].shape = {kKvHeads, 2, kHeadDim / 2};
  EXPECT_EQ(store_->PutChunk("t", "q", 0, bad.tokens, bad.nodes, {}).code(),
            absl::StatusCode::kInvalidArgument);
  bad = chunk;
  bad.nodes[0].k_scale[0].dtype = DType::kI64;
  bad.nodes[0].k_scale[0].data.resize(bad.nodes[0].k_scale[0].data.size() * 4);
  EXPECT_EQ(store_->PutChunk("t", "q", 0, bad.tokens, bad.nodes, {}).code(),
            absl::StatusCode::kInvalidArgument) << "an integer scale other than an exponent";
  bad = MakeChunk(4, 0);
  bad.nodes[0].k_scale = chunk.nodes[0].k_scale;
  bad.nodes[0].v_scale = chunk.nodes[0].v_scale;
  EXPECT_EQ(store_->PutChunk("t", "q", 0, bad.tokens, bad.nodes, {}).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(store_->PutChunk("t", "q", 0, chunk.tokens, chunk.nodes, {}).ok());
  ASSERT_TRUE(store_->MarkReady("t", "q").ok());
  Reopen();
  auto nodes = store_->LoadNodes("t", "q", AllRefs(1));
  ASSERT_TRUE(nodes.ok()) << nodes.status();
  ASSERT_EQ(nodes->size(), chunk.nodes.size());
  for (size_t i = 0; i < nodes->size(); ++i) EXPECT_TRUE((*nodes)[i] == chunk.nodes[i]) << i;
  // Float K/V come back without scales.
  Ingest("t", "f", 5, 1);
  auto plain = store_->LoadNodes("t", "f", AllRefs(1));
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE((*plain)[0].k_scale.empty());
}

TEST_F(TreeStoreTest, RetrievalIndexIsPersistedPerTenantAndDeletedWithItsDocument) {
  using P = std::tuple<std::string, int64_t, int32_t, int32_t>;
  for (const std::string doc : {"a", "b"}) {
    ASSERT_TRUE(store_->PutDocument(Meta("t", doc, 2)).ok());
    for (int64_t c = 0; c < 2; ++c) {
      const Chunk chunk = MakeChunk(5, c);
      ChunkTerms terms = {{"grass", 3}, {"the", 4}};
      if (doc == "b" && c == 1) terms = {{"key", 2}, {"pass", 1}, {"the", 5}};
      ASSERT_TRUE(store_->PutChunk("t", doc, c, chunk.tokens, chunk.nodes, terms).ok());
    }
    ASSERT_TRUE(store_->MarkReady("t", doc).ok());
  }
  Ingest("other", "b", 6, 1);  // another tenant, same id, no terms
  EXPECT_EQ(Postings(*store_, "t", "key"), (std::vector<P>{{"b", 1, 2, 8}}));
  EXPECT_EQ(Postings(*store_, "t", "the"),
            (std::vector<P>{{"a", 0, 4, 7}, {"a", 1, 4, 7}, {"b", 0, 4, 7}, {"b", 1, 5, 8}}));
  EXPECT_TRUE(Postings(*store_, "other", "the").empty());
  EXPECT_TRUE(Postings(*store_, "t", "absent").empty());
  Reopen();
  EXPECT_EQ(Postings(*store_, "t", "key"), (std::vector<P>{{"b", 1, 2, 8}}));
  ASSERT_TRUE(store_->DeleteDocument("t", "b").ok());
  EXPECT_TRUE(Postings(*store_, "t", "key").empty());
  EXPECT_EQ(Postings(*store_, "t", "the"), (std::vector<P>{{"a", 0, 4, 7}, {"a", 1, 4, 7}}));
  Close();
  RawDb raw(options_.path);
  EXPECT_EQ(raw.Keys(RocksDbTreeStore::kTerms, DocumentKey("t", "b")).size(), 0u);
  EXPECT_EQ(raw.Keys(RocksDbTreeStore::kTerms, DocumentKey("t", "a")).size(), 2u);
  EXPECT_EQ(raw.Keys(RocksDbTreeStore::kPostings).size(), 4u);  // a's two chunks x two terms
}

TEST_F(TreeStoreTest, RewrittenAndDroppedChunksTakeTheirPostingsAlong) {
  using P = std::tuple<std::string, int64_t, int32_t, int32_t>;
  ASSERT_TRUE(store_->PutDocument(Meta("t", "d", 3)).ok());
  const Chunk chunk = MakeChunk(8, 0);
  ASSERT_TRUE(store_->PutChunk("t", "d", 0, chunk.tokens, chunk.nodes, {{"old", 1}}).ok());
  ASSERT_TRUE(store_->PutChunk("t", "d", 0, chunk.tokens, chunk.nodes, {{"new", 2}}).ok());
  EXPECT_TRUE(Postings(*store_, "t", "old").empty()) << "a rewrite drops the old write's terms";
  EXPECT_EQ(Postings(*store_, "t", "new"), (std::vector<P>{{"d", 0, 2, 2}}));
  const Chunk c1 = MakeChunk(8, 1);
  ASSERT_TRUE(store_->PutChunk("t", "d", 1, c1.tokens, c1.nodes, {{"new", 1}, {"one", 1}}).ok());
  DocumentMeta restart = Meta("t", "d", 3);
  restart.chunks_done = 1;  // a restarted job keeps chunk 0 only
  ASSERT_TRUE(store_->PutDocument(restart).ok());
  EXPECT_EQ(Postings(*store_, "t", "new"), (std::vector<P>{{"d", 0, 2, 2}}));
  EXPECT_TRUE(Postings(*store_, "t", "one").empty());
  // Bad terms are refused before anything is written.
  EXPECT_EQ(store_->PutChunk("t", "d", 1, c1.tokens, c1.nodes, {{"", 1}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->PutChunk("t", "d", 1, c1.tokens, c1.nodes, {{"x", 0}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->PutChunk("t", "d", 1, c1.tokens, c1.nodes, {{"x", 1}, {"x", 2}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->GetDocument("t", "d")->chunks_done, 1);
  EXPECT_EQ(store_->LoadPostings("t", "", "", "", 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->LoadPostings("t", "x", std::string(2000, 'c'), "", 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(TreeStoreTest, PostingsAreFoundPerCollectionOrPerDocumentAndUpToALimit) {
  using P = std::tuple<std::string, int64_t, int32_t, int32_t>;
  // d1 and d2 in collection "c", d3 in none, d4 in "c2": one term, one posting per chunk.
  const std::vector<std::pair<std::string, std::string>> docs = {
      {"d1", "c"}, {"d2", "c"}, {"d3", ""}, {"d4", "c2"}};
  for (const auto& [doc, collection] : docs) {
    ASSERT_TRUE(store_->PutDocument(Meta("t", doc, 3, collection)).ok());
    for (int64_t c = 0; c < 3; ++c) {
      const Chunk chunk = MakeChunk(5, c);
      ASSERT_TRUE(store_->PutChunk("t", doc, c, chunk.tokens, chunk.nodes, {{"w", 1}}).ok());
    }
    ASSERT_TRUE(store_->MarkReady("t", doc).ok());
  }
  EXPECT_EQ(Postings(*store_, "t", "w", "c"),
            (std::vector<P>{{"d1", 0, 1, 1}, {"d1", 1, 1, 1}, {"d1", 2, 1, 1},
                            {"d2", 0, 1, 1}, {"d2", 1, 1, 1}, {"d2", 2, 1, 1}}));
  EXPECT_EQ(Postings(*store_, "t", "w", ""),
            (std::vector<P>{{"d3", 0, 1, 1}, {"d3", 1, 1, 1}, {"d3", 2, 1, 1}}));
  EXPECT_EQ(Postings(*store_, "t", "w", "c", "d2"),
            (std::vector<P>{{"d2", 0, 1, 1}, {"d2", 1, 1, 1}, {"d2", 2, 1, 1}}));
  EXPECT_TRUE(Postings(*store_, "t", "w", "c", "d4").empty()) << "d4 is filed under c2";
  EXPECT_EQ(Postings(*store_, "t", "w", "c", "", 4).size(), 4u) << "a limit stops the scan";
  EXPECT_EQ(Postings(*store_, "t", "w", "c2", "d4", 2),
            (std::vector<P>{{"d4", 0, 1, 1}, {"d4", 1, 1, 1}}));
  // A document whose metadata no longer decodes still takes its postings along.
  Close();
  {
    RawDb raw(options_.path);
    raw.Put(RocksDbTreeStore::kDocuments, DocumentKey("t", "d4"), "garbage");
  }
  Reopen();
  ASSERT_TRUE(store_->DeleteDocument("t", "d4").ok());
  EXPECT_TRUE(Postings(*store_, "t", "w", "c2").empty());
  EXPECT_EQ(Postings(*store_, "t", "w", "c").size(), 6u) << "other documents keep theirs";
}

TEST_F(TreeStoreTest, LoadVectorsOfChosenChunks) {
  Ingest("t", "d", 21, 5);
  auto all = store_->LoadVectors("t", "d");
  ASSERT_TRUE(all.ok());
  auto some = store_->LoadVectors("t", "d", {1, 4});
  ASSERT_TRUE(some.ok()) << some.status();
  std::vector<NodeRecord> want;
  for (const auto& n : *all) {
    if (n.chunk == 1 || n.chunk == 4) want.push_back(n);
  }
  EXPECT_EQ(*some, want);
  EXPECT_EQ(store_->LoadVectors("t", "d", {5}).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(store_->LoadVectors("t", "d", {3, 2}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(store_->LoadVectors("t", "d", {})->empty());
}

TEST_F(TreeStoreTest, OpenErrors) {
  // A second open of a directory in use fails (RocksDB's LOCK), retryably.
  auto second = RocksDbTreeStore::Open(options_);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
  RocksDbTreeStoreOptions missing = options_;
  missing.path = dir_ / "absent";
  missing.create_if_missing = false;
  EXPECT_FALSE(RocksDbTreeStore::Open(missing).ok());
  missing.path = "";
  EXPECT_EQ(RocksDbTreeStore::Open(missing).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sharedllm

// `sharedllm plan`'s tree-store byte count (store/footprint.h, from the model configuration
// alone) against the bytes a RocksDbTreeStore actually holds after the indexer's writes for a
// document encoded by a tiny random SharedLLM. Tolerance: none. The count is of logical key and
// value bytes per column family, which the formats of key_codec/value_codec fix exactly; RocksDB's
// own file overheads are outside it.
#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <map>
#include <memory>

#include "eval/efficiency.h"
#include "sharedllm/sharedllm.h"
#include "sharedllm/node_records.h"
#include "tests/model_util.h"
#include "store/footprint.h"
#include "store/rocksdb_tree_store.h"

namespace sharedllm {
namespace {

// Logical bytes per column family, read back with a plain RocksDB iterator.
std::map<std::string, treestore::FamilyBytes> ReadBack(const std::string& path) {
  std::vector<std::string> names;
  EXPECT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), path, &names).ok());
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (const auto& n : names) families.emplace_back(n, rocksdb::ColumnFamilyOptions());
  rocksdb::DB* raw = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  const rocksdb::Status s = rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), path, families, &handles, &raw);
  EXPECT_TRUE(s.ok()) << s.ToString();
  std::unique_ptr<rocksdb::DB> db(raw);
  std::map<std::string, treestore::FamilyBytes> out;
  for (size_t i = 0; i < handles.size(); ++i) {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), handles[i]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      out[names[i]].Add(static_cast<int64_t>(it->key().size()), static_cast<int64_t>(it->value().size()));
    }
    EXPECT_TRUE(it->status().ok());
  }
  for (auto* h : handles) EXPECT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
  return out;
}

void ExpectSame(const char* family, const treestore::FamilyBytes& predicted,
                const treestore::FamilyBytes& measured) {
  SCOPED_TRACE(family);
  EXPECT_EQ(predicted.records, measured.records);
  EXPECT_EQ(predicted.key_bytes, measured.key_bytes);
  EXPECT_EQ(predicted.value_bytes, measured.value_bytes);
}

TEST(PlanStoreTest, PredictedTreeStoreBytesEqualTheBytesWritten) {
  const ModelConfig c = test::TinyConfig();
  CausalLM lm = test::TinyModel(c);
  SharedLLMConfig sc;
  sc.num_injection_layers = 2;
  sc.chunk_size = 32;
  sc.alphas = {4, 2, 1};
  SharedLLM shared(lm, sc);
  const int64_t length = 150;  // 4 chunks of 32 + a 22-token chunk
  const auto tokens = SyntheticTokens(length, c.vocab_size, 7);

  // The prediction: configuration and length only.
  treestore::DocumentShape d;
  d.tenant = "acme";
  d.document_id = "report-7";
  d.collection_id = "books";
  d.name = "report.txt";
  d.size_bytes = 612;
  d.num_tokens = length;
  const TreeShape shape = StaticTreeShape(sc, length);
  for (size_t ci = 0; ci < shape.spans.size(); ++ci) {
    d.chunk_tokens.push_back(shape.spans[ci].second - shape.spans[ci].first);
    d.node_kept.push_back(StoredPositions(sc, shape.nodes[ci]));
  }
  d.hidden = c.hidden_size;
  d.kv_heads = c.num_key_value_heads;
  d.head_dim = c.head_dim;
  d.layers = sc.num_injection_layers;
  d.kv_element_bytes = 4;
  const treestore::StoreFootprint predicted = treestore::CountFootprint(d);

  // The measurement: the indexer's sequence (service/indexer.cpp) — metadata, then per chunk the
  // static tree encoded by the model (Engine::EncodeChunk) and PutChunk, then MarkReady.
  test::TempDir dir;
  {
    RocksDbTreeStoreOptions options;
    options.path = dir / "trees";
    options.sync_writes = false;
    auto store = RocksDbTreeStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    DocumentMeta meta;
    meta.tenant = d.tenant;
    meta.document_id = d.document_id;
    meta.collection_id = d.collection_id;
    meta.name = d.name;
    meta.sha256 = std::string(64, 'a');
    meta.size_bytes = d.size_bytes;
    meta.model_fingerprint = std::string(64, 'f');
    meta.created_unix_ms = 1764000000000;
    ASSERT_TRUE((*store)->PutDocument(meta).ok());
    const auto spans = shared.Chunks(length);
    meta.num_tokens = length;
    meta.num_chunks = static_cast<int64_t>(spans.size());
    ASSERT_TRUE((*store)->PutDocument(meta).ok());
    c10::InferenceMode guard;
    for (size_t ci = 0; ci < spans.size(); ++ci) {
      const std::vector<int64_t> chunk(tokens.begin() + spans[ci].first, tokens.begin() + spans[ci].second);
      const ChunkTree tree = ChunkTree::Build(static_cast<int64_t>(chunk.size()), sc.tree_depth);
      const std::vector<NodeRecord> records = ChunkRecords(
          shared, shared.EncodeNodes(chunk, static_cast<int64_t>(ci), tree.AllNodes()), KvFormat::kFloat32);
      ASSERT_TRUE((*store)->PutChunk(d.tenant, d.document_id, static_cast<int64_t>(ci), chunk, records, {}).ok());
    }
    ASSERT_TRUE((*store)->MarkReady(d.tenant, d.document_id).ok());
  }
  auto measured = ReadBack(dir / "trees");
  ExpectSame("documents", predicted.documents, measured["documents"]);
  ExpectSame("tokens", predicted.tokens, measured["tokens"]);
  ExpectSame("vectors", predicted.vectors, measured["vectors"]);
  ExpectSame("kv", predicted.kv, measured["kv"]);
  EXPECT_EQ(predicted.tree_bytes(),
            measured["tokens"].total() + measured["vectors"].total() + measured["kv"].total());
  // 5 chunks x 14 nodes; K/V per node and lower layer.
  EXPECT_EQ(measured["vectors"].records, 5 * 14);
  EXPECT_EQ(measured["kv"].records, 5 * 14 * 2);
}

}  // namespace
}  // namespace sharedllm

// Bytes the tree store holds for one document, counted from the formats of key_codec.h and
// value_codec.h (docs/design/tree_store.md "Keys", "Values") without opening a database: what
// `sharedllm plan` predicts. Header-only and free of RocksDB, abseil and libtorch, so the model-only
// `sharedllm` tool can include it. tests/eval/efficiency_test.cpp checks the count against the
// key and value bytes a RocksDbTreeStore actually holds after the indexer's sequence of writes.
//
// Counted: logical key + value bytes per column family (RocksDB adds its own per-record and per-file
// overheads, block compression of SST families, the WAL and blob-file headers on top).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sharedllm::treestore {

// u16 length + bytes (KeyBuilder::Str).
inline int64_t KeyStringBytes(int64_t bytes) { return 2 + bytes; }
// DocumentKey / JobKey: tenant | document (or job).
inline int64_t DocumentKeyBytes(int64_t tenant, int64_t document) {
  return KeyStringBytes(tenant) + KeyStringBytes(document);
}
// ChunkKey = DocumentKey | u32 chunk; NodeKey = ChunkKey | u16 node; LayerKey = NodeKey | u16 layer.
inline int64_t ChunkKeyBytes(int64_t tenant, int64_t document) { return DocumentKeyBytes(tenant, document) + 4; }
inline int64_t NodeKeyBytes(int64_t tenant, int64_t document) { return ChunkKeyBytes(tenant, document) + 2; }
inline int64_t LayerKeyBytes(int64_t tenant, int64_t document) { return NodeKeyBytes(tenant, document) + 2; }

// Seal(): u8 format version | body | u32 CRC32C.
inline int64_t SealedBytes(int64_t body) { return 1 + body + 4; }
// tensor = u8 dtype | u8 rank | rank x i64 dim | u64 byte count | bytes.
inline int64_t TensorBytes(int64_t rank, int64_t data_bytes) { return 1 + 1 + 8 * rank + 8 + data_bytes; }

// Value sizes of the three tree families.
inline int64_t TokensValueBytes(int64_t tokens) { return SealedBytes(TensorBytes(1, 8 * tokens)); }
// i64 begin | i64 end | u16 layer count | search vector [hidden].
inline int64_t VectorValueBytes(int64_t hidden, int64_t vector_element_bytes) {
  return SealedBytes(8 + 8 + 2 + TensorBytes(1, hidden * vector_element_bytes));
}
// K | V, each [kv_heads, kept, head_dim].
inline int64_t LayerKvValueBytes(int64_t kv_heads, int64_t kept, int64_t head_dim, int64_t element_bytes) {
  return SealedBytes(2 * TensorBytes(3, kv_heads * kept * head_dim * element_bytes));
}

// What the indexer writes for a READY document (service/indexer.cpp: PutDocument, PutChunk per
// chunk, MarkReady, and the job record PutJob(tenant, document_id, ...)).
struct DocumentShape {
  std::string tenant = "default", document_id = "doc", collection_id, name;
  int64_t size_bytes = 0;  // uploaded bytes
  int64_t num_tokens = 0;
  std::vector<int64_t> chunk_tokens;              // tokens per chunk
  std::vector<std::vector<int64_t>> node_kept;    // per chunk: kept positions of every node
  int64_t hidden = 0, kv_heads = 0, head_dim = 0, layers = 0;  // layers = lower-model layers (M)
  int64_t kv_element_bytes = 4;                   // the model's dtype (K/V are stored as computed)
  int64_t vector_element_bytes = 4;               // search vectors: float32 beside float32 K/V, else bf16
  int64_t fingerprint_bytes = 64;                 // hex SHA-256 (service/engine.cpp)
  int64_t unix_ms = 1700000000000;                // 13 digits, like every timestamp until 2286
};

struct FamilyBytes {
  int64_t records = 0, key_bytes = 0, value_bytes = 0;
  int64_t total() const { return key_bytes + value_bytes; }
  void Add(int64_t key, int64_t value) {
    ++records;
    key_bytes += key;
    value_bytes += value;
  }
};

struct StoreFootprint {
  FamilyBytes documents, tokens, vectors, kv, jobs;
  int64_t tree_bytes() const { return tokens.total() + vectors.total() + kv.total(); }
  int64_t total() const { return documents.total() + tree_bytes() + jobs.total(); }
};

// The DocumentMeta JSON of value_codec.cpp EncodeDocumentMeta, READY, as nlohmann dumps it.
inline int64_t DocumentMetaJsonBytes(const DocumentShape& d) {
  const nlohmann::json j = {
      {"tenant", d.tenant}, {"document_id", d.document_id}, {"collection_id", d.collection_id},
      {"name", d.name}, {"sha256", std::string(64, '0')}, {"size_bytes", d.size_bytes},
      {"num_tokens", d.num_tokens}, {"num_chunks", static_cast<int64_t>(d.chunk_tokens.size())},
      {"state", "READY"}, {"model_fingerprint", std::string(d.fingerprint_bytes, '0')},
      {"created_unix_ms", d.unix_ms}, {"updated_unix_ms", d.unix_ms},
      {"chunks_done", static_cast<int64_t>(d.chunk_tokens.size())}, {"error", ""}};
  return static_cast<int64_t>(j.dump().size());
}

// The job JSON of service/indexer.cpp ToJson(JobSnapshot), READY, without an error.
inline int64_t JobJsonBytes(const DocumentShape& d) {
  const int64_t chunks = static_cast<int64_t>(d.chunk_tokens.size());
  const nlohmann::json j = {{"document_id", d.document_id}, {"state", "READY"},
                            {"chunks_done", chunks}, {"chunks_total", chunks},
                            {"num_tokens", d.num_tokens}, {"error_code", ""},
                            {"error_message", ""}, {"created_unix_ms", d.unix_ms},
                            {"updated_unix_ms", d.unix_ms}};
  return static_cast<int64_t>(j.dump().size());
}

inline StoreFootprint CountFootprint(const DocumentShape& d) {
  const int64_t t = static_cast<int64_t>(d.tenant.size());
  const int64_t doc = static_cast<int64_t>(d.document_id.size());
  StoreFootprint f;
  f.documents.Add(DocumentKeyBytes(t, doc), SealedBytes(DocumentMetaJsonBytes(d)));
  f.jobs.Add(DocumentKeyBytes(t, doc), SealedBytes(JobJsonBytes(d)));
  for (size_t c = 0; c < d.chunk_tokens.size(); ++c) {
    f.tokens.Add(ChunkKeyBytes(t, doc), TokensValueBytes(d.chunk_tokens[c]));
    for (int64_t kept : d.node_kept[c]) {
      f.vectors.Add(NodeKeyBytes(t, doc), VectorValueBytes(d.hidden, d.vector_element_bytes));
      for (int64_t l = 0; l < d.layers; ++l) {
        f.kv.Add(LayerKeyBytes(t, doc), LayerKvValueBytes(d.kv_heads, kept, d.head_dim, d.kv_element_bytes));
      }
    }
  }
  return f;
}

}  // namespace sharedllm::treestore

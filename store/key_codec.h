// Binary keys of the tree store (docs/design/tree_store.md "Keys"):
//
//   tenant | document | chunk | node | layer
//   u16 BE length + bytes | u16 BE length + bytes | u32 BE | u16 BE | u16 BE
//
// Strings are length-prefixed so that no key of id "doc" is a prefix of a key of id "doc1" (nor
// tenant "a" of tenant "ab"); integers are big-endian so that bytewise key order is numeric order
// (chunk 2 sorts before chunk 10). Every key of a tenant starts with TenantPrefix(tenant), every
// key of a document with DocumentKey(tenant, document).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sharedllm::treestore {

// Longest tenant/document/job id the store accepts, bytes (the key format allows 65535; ids of
// this size keep keys small). The service validates ids more strictly before they get here.
inline constexpr size_t kMaxIdBytes = 1024;
// Deepest tree level whose flat node index fits the u16 node field: (1<<15)-2 + (1<<15)-1.
inline constexpr int64_t kMaxLevel = 15;
inline constexpr int64_t kMaxChunks = int64_t{1} << 32;  // u32 chunk field
inline constexpr int64_t kMaxLayers = int64_t{1} << 16;  // u16 layer field

// INVALID_ARGUMENT unless `id` is non-empty and at most kMaxIdBytes; `what` names it ("tenant").
absl::Status ValidateId(absl::string_view what, const std::string& id);

// Builds a key field by field. Callers validate ranges first (ValidateId, FlatNodeIndex).
class KeyBuilder {
 public:
  KeyBuilder& Str(absl::string_view s);  // u16 BE length + bytes
  KeyBuilder& U32(uint32_t v);
  KeyBuilder& U16(uint16_t v);
  std::string Build() { return std::move(key_); }  // once: leaves the builder empty
  const std::string& key() const { return key_; }

 private:
  std::string key_;
};

// Reads a key field by field; a read past the end or a malformed length sets !ok().
class KeyReader {
 public:
  explicit KeyReader(absl::string_view key) : rest_(key) {}
  absl::string_view Str();
  uint32_t U32();
  uint16_t U16();
  bool ok() const { return ok_; }
  bool done() const { return ok_ && rest_.empty(); }
  size_t remaining() const { return rest_.size(); }

 private:
  absl::string_view rest_;
  bool ok_ = true;
};

std::string TenantPrefix(absl::string_view tenant);
std::string DocumentKey(absl::string_view tenant, absl::string_view document);
std::string JobKey(absl::string_view tenant, absl::string_view job);
std::string ChunkKey(absl::string_view tenant, absl::string_view document, uint32_t chunk);
std::string NodeKey(absl::string_view tenant, absl::string_view document, uint32_t chunk,
                    uint16_t node);
std::string LayerKey(absl::string_view tenant, absl::string_view document, uint32_t chunk,
                     uint16_t node, uint16_t layer);
// The retrieval index's postings: tenant | term | collection | document | chunk, so that one
// prefix scan finds a term in a whole collection (TermPrefix) or in one document
// (TermDocumentPrefix) without reading the postings of the tenant's other documents. Documents
// uploaded without a collection have collection "".
std::string TermPrefix(absl::string_view tenant, absl::string_view term, absl::string_view collection);
std::string TermDocumentPrefix(absl::string_view tenant, absl::string_view term,
                               absl::string_view collection, absl::string_view document);
// Every collection's postings of a term (for a document whose collection is unknown).
std::string TermPrefix(absl::string_view tenant, absl::string_view term);
std::string PostingKey(absl::string_view tenant, absl::string_view term, absl::string_view collection,
                       absl::string_view document, uint32_t chunk);

// The flat node index (1<<level) - 2 + index (level 1 first, left to right: the position in
// ChunkTree::AllNodes()); INVALID_ARGUMENT unless 1 <= level <= kMaxLevel, 0 <= index < 2^level.
absl::StatusOr<uint16_t> FlatNodeIndex(int64_t level, int64_t index);
// Inverse of FlatNodeIndex.
void LevelAndIndex(uint16_t flat, int64_t* level, int64_t* index);

// The smallest key greater than every key that starts with `prefix`: the exclusive upper bound of
// a prefix scan or DeleteRange. Empty if there is none (prefix all 0xff).
std::string PrefixSuccessor(absl::string_view prefix);

// A readable rendering of any store key for error messages, e.g.
// `kv key tenant "a" document "d" chunk 3 node 5 (level 2, index 3) layer 1 [0x0001610001...]`.
std::string DescribeKey(absl::string_view column_family, absl::string_view key);

// Opaque page tokens of ListDocuments: the last document id returned, hex-encoded.
std::string EncodePageToken(absl::string_view last_document_id);
// INVALID_ARGUMENT for a token that EncodePageToken did not make.
absl::StatusOr<std::string> DecodePageToken(const std::string& token);

}  // namespace sharedllm::treestore

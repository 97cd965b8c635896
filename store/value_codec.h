// Values of the tree store (docs/design/tree_store.md "Values"). Every value, in every column family, is
//
//   payload | u32 LE CRC32C(payload)        payload = u8 format version (1) | body
//
// and the bodies are:
//   documents  DocumentMeta as JSON
//   jobs       the job's JSON, verbatim
//   tokens     tensor (i64 [n])
//   vectors    i64 LE begin | i64 LE end | u16 LE layer count | tensor (search vector)
//   kv         tensor (K) | tensor (V)
//   terms      u32 LE count | count x (u16 LE length | term bytes | u16 LE occurrences)
//   postings   u16 LE occurrences | u32 LE chunk length in words
//   tensor  =  u8 dtype | u8 rank | rank x i64 LE dim | u64 LE byte count | bytes
//
// Decoders verify the checksum first and the structure second; either failure is DATA_LOSS whose
// message the caller prefixes with DescribeKey(...) so that it names the key.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "store/records.h"
#include "store/tree_store.h"

namespace sharedllm::treestore {

inline constexpr uint8_t kFormatVersion = 1;
inline constexpr size_t kMaxRank = 8;

// INVALID_ARGUMENT unless dtype is known, rank <= kMaxRank, dims >= 0 and data holds exactly
// numel * ElementSize bytes. `what` names the tensor in the message.
absl::Status ValidateTensor(absl::string_view what, const TensorBlob& tensor);

// Checks a node that PutChunk is given for chunk `chunk_index` of `num_tokens` tokens: its chunk,
// level/index, span, K/V layer counts and every tensor. Returns its flat node index, or
// INVALID_ARGUMENT naming the node and what is wrong.
absl::StatusOr<uint16_t> ValidateNodeRecord(const NodeRecord& node, int64_t chunk_index,
                                            size_t num_tokens);

// One layer's K and V: the same dtype, floating point or int8; int8 ones with per-channel scales
// [heads, 1, head_dim] (floating point), floating-point ones without (empty blobs).
absl::Status ValidateLayerKv(absl::string_view what, const TensorBlob& k, const TensorBlob& v,
                             const TensorBlob& k_scale, const TensorBlob& v_scale);

// Appends `payload`'s CRC32C: the stored form of a value.
std::string Seal(std::string payload);
// Checks the CRC32C and the format version; returns the body (a view into `value`).
absl::StatusOr<absl::string_view> Unseal(absl::string_view value);

std::string EncodeTokens(const std::vector<int64_t>& tokens);
absl::StatusOr<std::vector<int64_t>> DecodeTokens(absl::string_view value);

// The value of a node in the `vectors` column family.
struct NodeVectorValue {
  int64_t begin = 0, end = 0;  // token span in the chunk
  uint16_t num_layers = 0;     // K/V layers stored for the node in `kv`, so a lost one is noticed
  TensorBlob search;
};
std::string EncodeNodeVector(const NodeVectorValue& node);
absl::StatusOr<NodeVectorValue> DecodeNodeVector(absl::string_view value);

// K | V, and for int8 K and V their scales after them (K scale | V scale). Scales are null for
// floating-point K and V; DecodeLayerKv leaves them empty then.
std::string EncodeLayerKv(const TensorBlob& k, const TensorBlob& v, const TensorBlob* k_scale,
                          const TensorBlob* v_scale);
absl::Status DecodeLayerKv(absl::string_view value, TensorBlob* k, TensorBlob* v, TensorBlob* k_scale,
                           TensorBlob* v_scale);

// A chunk's terms (the `terms` family: what its postings are, so that they can be deleted).
std::string EncodeChunkTerms(const ChunkTerms& terms);
absl::StatusOr<ChunkTerms> DecodeChunkTerms(absl::string_view value);
// INVALID_ARGUMENT unless every term is 1..255 bytes, given once, with a count in 1..65535.
absl::Status ValidateChunkTerms(const ChunkTerms& terms);

// A posting's value: how often the term occurs in the chunk and the chunk's length in words.
struct PostingValue {
  uint16_t count = 0;
  uint32_t length = 0;
};
std::string EncodePosting(const PostingValue& posting);
absl::StatusOr<PostingValue> DecodePosting(absl::string_view value);

std::string EncodeDocumentMeta(const DocumentMeta& meta);
absl::StatusOr<DocumentMeta> DecodeDocumentMeta(absl::string_view value);

std::string EncodeJob(const std::string& json);
absl::StatusOr<std::string> DecodeJob(absl::string_view value);

}  // namespace sharedllm::treestore

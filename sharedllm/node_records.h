// Conversion between the model's encoded tree nodes (tensors) and the plain records the tree
// store persists (store/records.h: dtype + shape + bytes). The only bridge between the two.
#pragma once

#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "store/records.h"
#include "sharedllm/sharedllm.h"

namespace sharedllm {

TensorBlob ToBlob(const at::Tensor& t);
// A CPU tensor owning a copy of the blob's bytes; throws ModelError on a malformed blob.
at::Tensor FromBlob(const TensorBlob& blob);

// The element type keys and values are stored in (the server's --kv-dtype): float32, bfloat16,
// or int8 with per-channel scales: per node, layer, head and channel, over the node's stored
// rows, scale = 2^e, the least power of two with max |x| / scale <= 127, held as e in one signed
// byte; q = round(x / scale) in [-127, 127] (docs/design/tree_store.md "Values").
enum class KvFormat : int { kFloat32, kBFloat16, kInt8 };
// "float32" | "bfloat16" | "int8"; throws ModelError naming the choices otherwise.
KvFormat ParseKvFormat(const std::string& name);
const char* KvFormatName(KvFormat format);

// The node's keys and values in `format`, its search vector in float32 (format float32) or
// bfloat16 (the others).
NodeRecord ToRecord(const EncodedNode& node, KvFormat format = KvFormat::kFloat32);
// `device`/`dtype`: where and as what the model will read the keys/values (int8 ones are
// scaled back first).
EncodedNode FromRecord(const NodeRecord& record, const at::Device& device, at::ScalarType dtype);
// The node as a reader gets it back after it was stored in `format` (on its own device and in
// its own dtype): what the evaluations measure a storage format's cost with.
EncodedNode RoundTrip(const EncodedNode& node, KvFormat format);

// A node and its left child are encoded alone from the same first token, so the parent's leading
// kept rows inside the child are the child's own rows (SharedLLM::SharedRows); the store keeps
// them once, with the child. `nodes`: one chunk's tree as encoded (every node); each parent loses
// those leading rows of its keys and values.
void DropSharedRows(const SharedLLM& s, std::vector<EncodedNode>& nodes);
// One chunk's tree (every node, as encoded, with the heads to store) as the records the store
// keeps: DropSharedRows, then ToRecord in `format`.
std::vector<NodeRecord> ChunkRecords(const SharedLLM& s, std::vector<EncodedNode> nodes, KvFormat format);
// A parent read back from the store with the rows it left to `left` (its left child, itself
// already complete) put back first. A parent stored with all its kept rows (by a build before
// this one) comes back as it is; any other row count throws ModelError.
EncodedNode WithSharedRows(const SharedLLM& s, EncodedNode parent, const EncodedNode& left);
// One chunk's tree (every node, as encoded) as a reader gets it back after the service stored it
// in `format`: shared rows dropped, each node through ToRecord and FromRecord, the parents
// completed from their children. What the evaluations measure a storage format with.
std::vector<EncodedNode> RoundTripChunk(const SharedLLM& s, const std::vector<EncodedNode>& nodes,
                                        KvFormat format);

}  // namespace sharedllm

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
// or int8 with per-channel scales: per node, layer, head and channel, over the node's kept
// positions, scale = max |x| / 127 held in bfloat16, q = round(x / scale) in [-127, 127]
// (docs/design/tree_store.md "Values").
enum class KvFormat : int { kFloat32, kBFloat16, kInt8 };
// "float32" | "bfloat16" | "int8"; throws ModelError naming the choices otherwise.
KvFormat ParseKvFormat(const std::string& name);
const char* KvFormatName(KvFormat format);

// The node's search vector as computed; its keys and values in `format`.
NodeRecord ToRecord(const EncodedNode& node, KvFormat format = KvFormat::kFloat32);
// `device`/`dtype`: where and as what the model will read the keys/values (int8 ones are
// scaled back first).
EncodedNode FromRecord(const NodeRecord& record, const at::Device& device, at::ScalarType dtype);
// The node as a reader gets it back after it was stored in `format` (on its own device and in
// its own dtype): what the evaluations measure a storage format's cost with.
EncodedNode RoundTrip(const EncodedNode& node, KvFormat format);

}  // namespace sharedllm

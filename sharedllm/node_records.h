// Conversion between the model's encoded tree nodes (tensors) and the plain records the tree
// store persists (store/records.h: dtype + shape + bytes). The only bridge between the two.
#pragma once

#include <vector>

#include <ATen/core/Tensor.h>

#include "store/records.h"
#include "sharedllm/sharedllm.h"

namespace sharedllm {

TensorBlob ToBlob(const at::Tensor& t);
// A CPU tensor owning a copy of the blob's bytes; throws ModelError on a malformed blob.
at::Tensor FromBlob(const TensorBlob& blob);

NodeRecord ToRecord(const EncodedNode& node);
// `device`/`dtype`: where and as what the model will read the keys/values.
EncodedNode FromRecord(const NodeRecord& record, const at::Device& device, at::ScalarType dtype);

}  // namespace sharedllm

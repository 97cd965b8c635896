#include "sharedllm/node_records.h"

#include <cstring>

#include <ATen/ATen.h>

#include "llm/errors.h"

namespace sharedllm {
namespace {

DType ToDType(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DType::kF32;
    case at::kHalf: return DType::kF16;
    case at::kBFloat16: return DType::kBF16;
    case at::kLong: return DType::kI64;
    default: throw ModelError(std::string("cannot store dtype ") + c10::toString(t));
  }
}

at::ScalarType FromDType(DType t) {
  switch (t) {
    case DType::kF32: return at::kFloat;
    case DType::kF16: return at::kHalf;
    case DType::kBF16: return at::kBFloat16;
    case DType::kI64: return at::kLong;
  }
  throw ModelError("stored tensor has an unknown dtype code " + std::to_string(int(t)));
}

}  // namespace

TensorBlob ToBlob(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kCPU).contiguous();
  TensorBlob b;
  b.dtype = ToDType(c.scalar_type());
  b.shape = c.sizes().vec();
  b.data.assign(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
  return b;
}

at::Tensor FromBlob(const TensorBlob& blob) {
  const int64_t numel = blob.numel();
  Check(numel >= 0 && static_cast<size_t>(numel) * ElementSize(blob.dtype) == blob.data.size(),
        "stored tensor: shape and byte count disagree");
  at::Tensor t = at::empty(blob.shape, at::TensorOptions().dtype(FromDType(blob.dtype)));
  if (!blob.data.empty()) std::memcpy(t.data_ptr(), blob.data.data(), blob.data.size());
  return t;
}

NodeRecord ToRecord(const EncodedNode& node) {
  NodeRecord r;
  r.chunk = node.chunk;
  r.level = node.node.level;
  r.index = node.node.index;
  r.begin = node.node.begin;
  r.end = node.node.end;
  r.search = ToBlob(node.search);
  for (const auto& k : node.k) r.k.push_back(ToBlob(k));
  for (const auto& v : node.v) r.v.push_back(ToBlob(v));
  return r;
}

EncodedNode FromRecord(const NodeRecord& r, const at::Device& device, at::ScalarType dtype) {
  EncodedNode e;
  e.chunk = r.chunk;
  e.node = TreeNode{r.level, r.index, r.begin, r.end};
  if (!r.search.data.empty()) e.search = FromBlob(r.search).to(at::kFloat);
  Check(r.k.size() == r.v.size(), "stored node: key and value layer counts differ");
  for (size_t j = 0; j < r.k.size(); ++j) {
    e.k.push_back(FromBlob(r.k[j]).to(device, dtype));
    e.v.push_back(FromBlob(r.v[j]).to(device, dtype));
  }
  return e;
}

}  // namespace sharedllm

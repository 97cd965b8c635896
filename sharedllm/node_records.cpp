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
    case at::kChar: return DType::kI8;
    default: throw ModelError(std::string("cannot store dtype ") + c10::toString(t));
  }
}

at::ScalarType FromDType(DType t) {
  switch (t) {
    case DType::kF32: return at::kFloat;
    case DType::kF16: return at::kHalf;
    case DType::kBF16: return at::kBFloat16;
    case DType::kI64: return at::kLong;
    case DType::kI8: return at::kChar;
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

KvFormat ParseKvFormat(const std::string& name) {
  if (name == "float32") return KvFormat::kFloat32;
  if (name == "bfloat16") return KvFormat::kBFloat16;
  if (name == "int8") return KvFormat::kInt8;
  throw ModelError("kv dtype must be float32, bfloat16 or int8, not '" + name.substr(0, 40) + "'");
}

const char* KvFormatName(KvFormat format) {
  switch (format) {
    case KvFormat::kFloat32: return "float32";
    case KvFormat::kBFloat16: return "bfloat16";
    case KvFormat::kInt8: return "int8";
  }
  return "?";
}

namespace {

// Symmetric int8 with one scale per (head, channel) of a [heads, kept, head_dim] tensor.
std::pair<at::Tensor, at::Tensor> QuantizeInt8(const at::Tensor& x) {
  const at::Tensor f = x.to(at::kFloat);
  const at::Tensor scale = (f.abs().amax({1}, /*keepdim=*/true) / 127.0).to(at::kBFloat16);
  const at::Tensor s = scale.to(at::kFloat);
  const at::Tensor safe = at::where(s > 0, s, at::ones_like(s));
  const at::Tensor q = (f / safe).round().clamp(-127, 127).to(at::kChar);
  return {q, scale};
}

at::Tensor ToFormat(const at::Tensor& x, KvFormat format) {
  return x.to(format == KvFormat::kBFloat16 ? at::kBFloat16 : at::kFloat);
}

}  // namespace

NodeRecord ToRecord(const EncodedNode& node, KvFormat format) {
  NodeRecord r;
  r.chunk = node.chunk;
  r.level = node.node.level;
  r.index = node.node.index;
  r.begin = node.node.begin;
  r.end = node.node.end;
  r.search = ToBlob(node.search);
  Check(node.k.size() == node.v.size(), "node: key and value layer counts differ");
  for (size_t j = 0; j < node.k.size(); ++j) {
    if (format != KvFormat::kInt8) {
      r.k.push_back(ToBlob(ToFormat(node.k[j], format)));
      r.v.push_back(ToBlob(ToFormat(node.v[j], format)));
      continue;
    }
    Check(node.k[j].dim() == 3 && node.v[j].dim() == 3, "int8 keys/values: [heads, kept, head_dim]");
    auto [kq, ks] = QuantizeInt8(node.k[j]);
    auto [vq, vs] = QuantizeInt8(node.v[j]);
    r.k.push_back(ToBlob(kq));
    r.v.push_back(ToBlob(vq));
    r.k_scale.push_back(ToBlob(ks));
    r.v_scale.push_back(ToBlob(vs));
  }
  return r;
}

EncodedNode FromRecord(const NodeRecord& r, const at::Device& device, at::ScalarType dtype) {
  EncodedNode e;
  e.chunk = r.chunk;
  e.node = TreeNode{r.level, r.index, r.begin, r.end};
  if (!r.search.data.empty()) e.search = FromBlob(r.search).to(at::kFloat);
  Check(r.k.size() == r.v.size(), "stored node: key and value layer counts differ");
  auto read = [&](const TensorBlob& t, const std::vector<TensorBlob>& scales, size_t j) {
    if (t.dtype != DType::kI8) return FromBlob(t).to(device, dtype);
    Check(j < scales.size(), "stored node: int8 keys/values without scales");
    return (FromBlob(t).to(device, at::kFloat) * FromBlob(scales[j]).to(device, at::kFloat)).to(dtype);
  };
  for (size_t j = 0; j < r.k.size(); ++j) {
    e.k.push_back(read(r.k[j], r.k_scale, j));
    e.v.push_back(read(r.v[j], r.v_scale, j));
  }
  return e;
}

EncodedNode RoundTrip(const EncodedNode& node, KvFormat format) {
  Check(!node.k.empty(), "node without keys/values");
  EncodedNode back = FromRecord(ToRecord(node, format), node.k[0].device(), node.k[0].scalar_type());
  back.search = node.search;  // no batch: the context is gathered from the stored values
  return back;
}

}  // namespace sharedllm

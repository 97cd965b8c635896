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

// Symmetric int8 with one scale per (head, channel) of a [heads, kept, head_dim] tensor. The
// scale is a power of two, 2^e with e the least integer for which max |x| / 2^e <= 127, stored as
// e in one signed byte (the shared scale of the OCP microscaling formats).
std::pair<at::Tensor, at::Tensor> QuantizeInt8(const at::Tensor& x) {
  const at::Tensor f = x.to(at::kFloat);
  const at::Tensor amax = f.abs().amax({1}, /*keepdim=*/true);
  at::Tensor e = at::where(amax > 0, at::ceil(at::log2(amax / 127.0)), at::full_like(amax, -127));
  e = at::where(amax > 127.0 * at::exp2(e), e + 1, e).clamp(-127, 127);  // log2 rounding
  const at::Tensor q = (f / at::exp2(e)).round().clamp(-127, 127).to(at::kChar);
  return {q, e.to(at::kChar)};
}

// A stored scale as float: an exponent byte (int8 records since this build) or a floating point
// scale (bfloat16, written by earlier builds).
at::Tensor Scale(const TensorBlob& scale, const at::Device& device) {
  const at::Tensor s = FromBlob(scale).to(device, at::kFloat);
  return scale.dtype == DType::kI8 ? at::exp2(s) : s;
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
  if (node.search.defined()) {
    r.search = ToBlob(format == KvFormat::kFloat32 ? node.search : node.search.to(at::kBFloat16));
  }
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
    return (FromBlob(t).to(device, at::kFloat) * Scale(scales[j], device)).to(dtype);
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
  if (back.search.defined()) back.search = back.search.to(node.search.device());
  return back;  // no batch: the context is gathered from the stored values
}

namespace {

// Index in `nodes` of the node (level, index), or -1.
int64_t Find(const std::vector<EncodedNode>& nodes, int64_t level, int64_t index) {
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (nodes[i].node.level == level && nodes[i].node.index == index) return static_cast<int64_t>(i);
  }
  return -1;
}

}  // namespace

void DropSharedRows(const SharedLLM& s, std::vector<EncodedNode>& nodes) {
  std::vector<TreeNode> tree;
  for (const auto& n : nodes) tree.push_back(n.node);
  const std::vector<int64_t> drop = SharedRowCounts(s.config(), tree);
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (drop[i] == 0) continue;
    for (size_t j = 0; j < nodes[i].k.size(); ++j) {
      Check(drop[i] < nodes[i].k[j].size(1), "a parent shares all its rows with its left child");
      nodes[i].k[j] = nodes[i].k[j].slice(1, drop[i]);
      nodes[i].v[j] = nodes[i].v[j].slice(1, drop[i]);
    }
    nodes[i].batch.reset();  // the node no longer is the batch's rows
  }
}

std::vector<NodeRecord> ChunkRecords(const SharedLLM& s, std::vector<EncodedNode> nodes, KvFormat format) {
  DropSharedRows(s, nodes);
  std::vector<NodeRecord> out;
  for (const auto& n : nodes) out.push_back(ToRecord(n, format));
  return out;
}

EncodedNode WithSharedRows(const SharedLLM& s, EncodedNode parent, const EncodedNode& left) {
  const std::vector<int64_t> rows = s.SharedRows(parent.node, left.node);
  if (rows.empty() || parent.k.empty()) return parent;
  const int64_t full = KeptLength(parent.node.end - parent.node.begin,
                                  s.config().alphas[parent.node.level - 1]);
  const int64_t stored = parent.k[0].size(1);
  if (stored == full) return parent;  // stored whole
  Check(stored + static_cast<int64_t>(rows.size()) == full && left.k.size() == parent.k.size(),
        "stored node (" + std::to_string(parent.node.level) + ", " + std::to_string(parent.node.index) +
            ") has " + std::to_string(stored) + " kept positions; expected " + std::to_string(full) +
            " or " + std::to_string(full - static_cast<int64_t>(rows.size())));
  const at::Tensor index = at::tensor(rows, at::TensorOptions().dtype(at::kLong)).to(parent.k[0].device());
  for (size_t j = 0; j < parent.k.size(); ++j) {
    parent.k[j] = at::cat({left.k[j].index_select(1, index).to(parent.k[j].scalar_type()), parent.k[j]}, 1);
    parent.v[j] = at::cat({left.v[j].index_select(1, index).to(parent.v[j].scalar_type()), parent.v[j]}, 1);
  }
  parent.batch.reset();
  return parent;
}

std::vector<EncodedNode> RoundTripChunk(const SharedLLM& s, const std::vector<EncodedNode>& nodes,
                                        KvFormat format) {
  std::vector<EncodedNode> back = nodes;
  DropSharedRows(s, back);
  for (auto& n : back) n = RoundTrip(n, format);
  // Deepest parents first: a parent's rows may come from rows its child left to its own child.
  for (int64_t level = s.config().tree_depth - 1; level >= 1; --level) {
    for (auto& n : back) {
      if (n.node.level != level) continue;
      const int64_t left = Find(back, level + 1, 2 * n.node.index);
      if (left >= 0) n = WithSharedRows(s, std::move(n), back[left]);
    }
  }
  return back;
}

}  // namespace sharedllm

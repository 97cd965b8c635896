// Plain data shared by model/ (which produces encoded context trees) and store/ (which
// persists them). Header-only and free of libtorch, so store/ knows no tensor library: a
// tensor crosses this boundary as dtype + shape + raw bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sharedllm {

// Element types of stored tensors. The numeric values are part of the on-disk format
// (docs/design/tree_store.md): never renumber them.
enum class DType : uint8_t { kF32 = 1, kF16 = 2, kBF16 = 3, kI64 = 4, kI8 = 5 };

// Bytes per element; 0 for a value outside the enum (e.g. read from a corrupt record).
inline size_t ElementSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kI64:
      return 8;
    case DType::kI8:
      return 1;
  }
  return 0;
}

inline const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kF16:
      return "f16";
    case DType::kBF16:
      return "bf16";
    case DType::kI64:
      return "i64";
    case DType::kI8:
      return "i8";
  }
  return "invalid";
}

// A dense tensor: raw little-endian bytes in row-major order, data.size() == numel * ElementSize.
struct TensorBlob {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::string data;

  // Product of the dims (1 for a scalar); -1 if a dim is negative.
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) {
      if (d < 0) return -1;
      n *= d;
    }
    return n;
  }
  bool operator==(const TensorBlob& o) const {
    return dtype == o.dtype && shape == o.shape && data == o.data;
  }
  bool operator!=(const TensorBlob& o) const { return !(*this == o); }
};

// One encoded node of a chunk's context tree (docs/design/method.md).
struct NodeRecord {
  int64_t chunk = 0;  // chunk index within the document, 0-based
  int64_t level = 0;  // 1..h (the root, level 0, is never encoded)
  int64_t index = 0;  // 0..2^level-1, left to right within the level
  int64_t begin = 0;  // token span [begin, end) within the chunk
  int64_t end = 0;
  TensorBlob search;             // search vector: [hidden]
  std::vector<TensorBlob> k, v;  // per lower-model layer: [kv_heads, kept, head_dim]
  // Where some layer's k and v are int8 (DType::kI8), one per layer: that layer's per-channel
  // scales, [kv_heads, 1, head_dim] floating point, so that a value is q * scale (an empty blob
  // for a floating-point layer). Empty vectors when no layer is int8.
  std::vector<TensorBlob> k_scale, v_scale;

  bool operator==(const NodeRecord& o) const {
    return chunk == o.chunk && level == o.level && index == o.index && begin == o.begin &&
           end == o.end && search == o.search && k == o.k && v == o.v && k_scale == o.k_scale &&
           v_scale == o.v_scale;
  }
  bool operator!=(const NodeRecord& o) const { return !(*this == o); }
};

}  // namespace sharedllm

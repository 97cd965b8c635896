// Per-request key/value cache of the self-attention layers. Keys are stored after rotary, as in
// Hugging Face. Grows by doubling; one cache serves one batch of equally long sequences.
#pragma once

#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace sharedllm {

class KVCache {
 public:
  explicit KVCache(int64_t num_layers) : k_(num_layers), v_(num_layers) {}

  // Positions already cached (the start position of the next forward).
  int64_t length() const { return length_; }
  int64_t num_layers() const { return static_cast<int64_t>(k_.size()); }

  // k, v: [B, KVH, T, D], written at positions [length, length + T) of `layer`.
  // Returns that layer's keys and values [B, KVH, length + T, D] (views into the cache).
  std::pair<at::Tensor, at::Tensor> Update(int64_t layer, const at::Tensor& k, const at::Tensor& v);
  // The cached positions of `layer`: keys and values [B, KVH, length, D] (views into the cache).
  std::pair<at::Tensor, at::Tensor> Layer(int64_t layer) const;
  // Called once every layer has written T new positions.
  void Advance(int64_t t) { length_ += t; }
  // Forgets positions >= len (e.g. to reuse a shared prefix).
  void Truncate(int64_t len);
  void Clear() { Truncate(0); }
  // Bytes held by the cache buffers.
  int64_t CapacityBytes() const;

 private:
  std::vector<at::Tensor> k_, v_;  // [B, KVH, capacity, D]
  int64_t length_ = 0;
};

}  // namespace sharedllm

#include "llm/kv_cache.h"

#include <ATen/ATen.h>

#include "llm/errors.h"

namespace sharedllm {

std::pair<at::Tensor, at::Tensor> KVCache::Update(int64_t layer, const at::Tensor& k,
                                                 const at::Tensor& v) {
  Check(layer >= 0 && layer < num_layers(), "KVCache: layer out of range");
  const int64_t t = k.size(2);
  const int64_t needed = length_ + t;
  at::Tensor& kc = k_[layer];
  at::Tensor& vc = v_[layer];
  if (!kc.defined() || kc.size(2) < needed) {
    int64_t capacity = kc.defined() ? kc.size(2) : 0;
    capacity = std::max<int64_t>({needed, 2 * capacity, 16});
    auto grow = [&](const at::Tensor& old, const at::Tensor& like) {
      auto sizes = like.sizes().vec();
      sizes[2] = capacity;
      at::Tensor fresh = at::empty(sizes, like.options());
      if (old.defined() && length_ > 0) fresh.narrow(2, 0, length_).copy_(old.narrow(2, 0, length_));
      return fresh;
    };
    kc = grow(kc, k);
    vc = grow(vc, v);
  }
  kc.narrow(2, length_, t).copy_(k);
  vc.narrow(2, length_, t).copy_(v);
  return {kc.narrow(2, 0, needed), vc.narrow(2, 0, needed)};
}

std::pair<at::Tensor, at::Tensor> KVCache::Layer(int64_t layer) const {
  Check(layer >= 0 && layer < num_layers(), "KVCache: layer out of range");
  Check(k_[layer].defined(), "KVCache: layer " + std::to_string(layer) + " holds nothing");
  return {k_[layer].narrow(2, 0, length_), v_[layer].narrow(2, 0, length_)};
}

void KVCache::Truncate(int64_t len) {
  Check(len >= 0 && len <= length_, "KVCache: cannot truncate to a longer length");
  length_ = len;
}

int64_t KVCache::CapacityBytes() const {
  int64_t bytes = 0;
  for (const auto* list : {&k_, &v_}) {
    for (const auto& t : *list) {
      if (t.defined()) bytes += t.numel() * t.element_size();
    }
  }
  return bytes;
}

}  // namespace sharedllm

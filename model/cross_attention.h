// Self-injection: the cross-attention SharedLLM adds to the upper model's injection layers
// (DESIGN.md §2). It wraps nothing of the base layer's weights: the keys/values come from the
// lower model's same-depth layer, so only a norm, q_proj and o_proj are new.
#pragma once

#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "model/layers.h"

namespace sharedllm {

// Context the upper model reads in one forward: per decoder layer index, the keys and values of
// the selected tree nodes, concatenated over chunks in chunk order. Keys are already rotated by
// their chunk index (when chunk positions are on); queries are rotated by `query_cos/sin`.
struct InjectionContext {
  std::vector<at::Tensor> k, v;  // [num_layers]; defined where injected: [B, KVH, S, D]
  at::Tensor key_mask;           // additive float32 [B, 1, 1, S] for padded contexts, or undefined
  at::Tensor query_cos, query_sin;  // float32 [1, D] at position n (number of chunks), or undefined
  int64_t num_chunks = 0;
};

class CrossAttentionImpl : public torch::nn::Module {
 public:
  CrossAttentionImpl(int64_t hidden, int64_t heads, int64_t kv_heads, int64_t head_dim,
                     bool q_bias, double eps, const at::TensorOptions& options);
  // h: [B, T, hidden], k/v: [B, KVH, S, D] -> the residual update [B, T, hidden]:
  // o_proj(Attn(rope_n(q_proj(norm(h))), K_ctx, V_ctx)), each head's attention output scaled by
  // sigmoid(gate_proj(norm(h))) when the gate is on; with the sink, each head can attend to
  // nothing.
  at::Tensor forward(const at::Tensor& h, const at::Tensor& k, const at::Tensor& v,
                     const InjectionContext& context);
  // Adds gate_proj with zero weights and bias `open_bias` (every head passes sigmoid(open_bias))
  // and divides o_proj by that, so the layer computes exactly what it did before. No-op if gated.
  void AddGate(double open_bias);
  // Adds the attention sink: per head a zero-value key of logit `logit` (Attention's `sink`).
  // No-op if present.
  void AddSink(double logit);

  RMSNorm norm{nullptr};
  Linear q_proj{nullptr}, o_proj{nullptr};
  Linear gate_proj{nullptr};  // [heads] logits, only with the gate
  at::Tensor sink;            // [heads] logits, only with the sink
  // > 0: the sink's logit is raised by sink_keys_slope * log(n / sink_keys_ref), n the query's
  // unmasked context keys (SharedLLMConfig::sink_keys_ref, sink_keys_slope).
  double sink_keys_ref = 0;
  double sink_keys_slope = 1;
  // With sink_keys_ref: count the row's effective keys (Attention's effective_ref) instead of n.
  bool sink_keys_effective = false;
  // > 0: each query reads only its context_top_k highest-scoring keys (SharedLLMConfig).
  int64_t context_top_k = 0;
  int64_t heads, kv_heads, head_dim;
};
TORCH_MODULE(CrossAttention);

}  // namespace sharedllm

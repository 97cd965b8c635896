// Self-injection: the cross-attention SharedLLM adds to the upper model's injection layers
// (docs/design/method.md). It reuses nothing of the base layer's weights at run time: the
// keys/values come from the lower model's same-depth layer, so only a norm, q_proj and o_proj
// (and optionally a gate and a sink) are new. It is registered on the base decoder layer as
// `cross_attn`, so its parameters are `model.layers.<i>.cross_attn.*`.
#pragma once

#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "llm/config.h"
#include "llm/layers.h"
#include "llm/llama.h"

namespace sharedllm {

struct InjectionContext;

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
  int64_t heads, kv_heads, head_dim;
};
TORCH_MODULE(CrossAttention);

// Context the upper model reads in one forward: per decoder layer index, the keys and values of
// the selected tree nodes, concatenated over chunks in chunk order, and the cross-attention that
// reads them. Keys are already rotated by their chunk index (when chunk positions are on);
// queries are rotated by `query_cos/sin`. As a LayerInjection it is what the LLaMA core's
// forward takes: layer i adds readers[i](h, k[i], v[i]) where both are defined.
struct InjectionContext : LayerInjection {
  std::vector<at::Tensor> k, v;  // [num_layers]; defined where injected: [B, KVH, S, D]
  std::vector<CrossAttention> readers;  // [num_layers]; the injection layers' cross-attention
  at::Tensor key_mask;           // additive float32 [B, 1, 1, S] for padded contexts, or undefined
  at::Tensor query_cos, query_sin;  // float32 [1, D] at position n (number of chunks), or undefined
  int64_t num_chunks = 0;

  // h: [B, T, hidden] -> layer `layer`'s cross-attention update, or undefined where it reads none.
  at::Tensor Update(int64_t layer, const at::Tensor& h) const override;
};

// The cross-attention of a decoder layer (its `cross_attn` child), or null when it has none.
CrossAttention FindCrossAttention(LlamaDecoderLayerImpl& layer);
// Registers `cross_attn` on `layer` (norm and q_proj copied from its input_layernorm and
// self_attn.q_proj, o_proj zero), so the layer still computes exactly what it did before; or,
// with `inherit_o_scale` s > 0, o_proj = s x self_attn.o_proj: the layer's own heads, reading the
// context, added at scale s. A layer that already has one keeps it. Returns the layer's.
CrossAttention AttachCrossAttention(LlamaDecoderLayerImpl& layer, const ModelConfig& c,
                                    double inherit_o_scale = 0.0);

}  // namespace sharedllm

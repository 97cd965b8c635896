// SharedLLM (arXiv 2410.19318): a base CausalLM whose bottom M layers double as the lower model
// (compressor) and whose injection layers cross-attend to the compressed context tree.
// Weights are shared with the CausalLM handle: by default the compressor is the base model's own
// bottom layers (no second copy); with compressor "separate" it is a copy registered on the same
// module as `compressor.*`. Per-request state is explicit (DocumentTree, InjectionContext, KVCache).
#pragma once

#include <memory>
#include <random>
#include <vector>

#include "sharedllm/context_tree.h"
#include "sharedllm/cross_attention.h"
#include "llm/llama.h"
#include "sharedllm/config.h"

namespace sharedllm {

// The kept K/V of every node of one lower-model batch, per layer [rows, D] (node after node, head
// after head).
struct EncodedBatch {
  std::vector<at::Tensor> k, v;
};

// One encoded tree node: the lower model's downsampled keys (before rotary) and values per lower
// layer, and its search vector.
struct EncodedNode {
  int64_t chunk = 0;
  TreeNode node;
  std::vector<at::Tensor> k, v;  // [num_injection_layers] of [KVH, kept, D]
  at::Tensor search;             // float32 [hidden]: final-normed layer-0 output at the last token
                                 // (search_vector "mean": averaged over the node)
  // Set by Encode: k/v are rows [first_row, first_row + KVH * kept) of batch->k/v. A context is
  // then gathered from the few batch tensors in one operation, so backpropagation costs one
  // scatter per batch instead of a full-size gradient per node view. Null for a decoded node.
  std::shared_ptr<const EncodedBatch> batch;
  int64_t first_row = 0;
};

// The static tree of a context (what ingestion persists): every node of every level of every
// chunk. nodes[c] is in ChunkTree::AllNodes() order.
struct DocumentTree {
  std::vector<ChunkTree> chunks;
  std::vector<std::vector<EncodedNode>> nodes;
  int64_t num_chunks() const { return static_cast<int64_t>(chunks.size()); }
};

// The rows of `left` (the left child of `parent`, both of one chunk's tree) that equal the
// parent's leading kept rows (SharedLeadingRows at their levels' strides and the configuration's
// selection): what the store keeps once. Empty for a leaf.
std::vector<int64_t> SharedRowsOf(const SharedLLMConfig& c, const TreeNode& parent, const TreeNode& left);
// Per node of one chunk's tree (`nodes`: all of it, any order), the number of its leading kept
// rows its left child holds (SharedRowsOf; 0 for a leaf): what the store does not keep twice.
std::vector<int64_t> SharedRowCounts(const SharedLLMConfig& c, const std::vector<TreeNode>& nodes);

// Throws ModelError unless `s` is a cross-attention start scale: finite and >= 0 (inherit_o_scale;
// 0 starts neutral).
void CheckInheritOScale(double s);

// The const methods (encoding, search, contexts) are what serving uses: a loaded model is
// shared by every request and never changed while it serves (LoadedModel holds it const). The
// non-const ones are model surgery and training set-up.
class SharedLLM {
 public:
  // Adds cross-attention to `lm`'s injection layers (zero o_proj: the model is unchanged until
  // trained), or with `inherit_o_scale` s > 0 each layer's own self-attention heads reading the
  // context, added at scale s (AttachCrossAttention). Throws ModelError when
  // `config` does not fit the base model.
  SharedLLM(CausalLM lm, SharedLLMConfig config, double inherit_o_scale = 0.0);

  const SharedLLMConfig& config() const { return config_; }
  CausalLM& lm() { return lm_; }
  const CausalLM& lm() const { return lm_; }
  int64_t min_chunk_length() const { return int64_t{1} << config_.tree_depth; }

  // Chunk spans of a context of `length` tokens (see ChunkSpans).
  std::vector<std::pair<int64_t, int64_t>> Chunks(int64_t length) const;
  // Encodes `nodes` of one chunk (token ids `chunk_ids`) through the lower model, each node alone
  // at positions 0..l-1, nodes of equal length batched together. Output in the order of `nodes`.
  std::vector<EncodedNode> EncodeNodes(const std::vector<int64_t>& chunk_ids, int64_t chunk,
                                       const std::vector<TreeNode>& nodes) const;
  // A node to encode: its chunk's first token, the chunk index, and the node's span in the chunk.
  struct NodeJob {
    const int64_t* chunk_tokens;
    int64_t chunk;
    TreeNode node;
  };
  // Encodes nodes from any chunks; equal lengths are batched, at most `max_batch_tokens` per
  // lower-model pass. Output in the order of `jobs`.
  std::vector<EncodedNode> Encode(const std::vector<NodeJob>& jobs, int64_t max_batch_tokens = 16384) const;
  // Ingestion: every node of every chunk (no noise).
  DocumentTree BuildStaticTree(const std::vector<int64_t>& context_ids) const;
  // The static tree of the chunks `chunks` only (indices into Chunks(), ascending), numbered by
  // their place in that list: what a question reads when a retrieval stage picked those chunks
  // (a chunk's nodes depend on its own tokens only, so they equal the full tree's).
  DocumentTree BuildStaticTree(const std::vector<int64_t>& context_ids,
                               const std::vector<int64_t>& chunks) const;
  // Query-time search over a static tree: per chunk in order, its h+1 preserved nodes (by
  // position). `query` undefined or search off: the right-child policy.
  std::vector<const EncodedNode*> Select(const DocumentTree& tree, const at::Tensor& query) const;
  // The same selection built directly (what training does): encodes only the nodes the search
  // needs. With `rng`, splits are jittered (training noise, if the config enables it).
  std::vector<EncodedNode> BuildDynamicTree(const std::vector<int64_t>& context_ids,
                                            const at::Tensor& query, std::mt19937_64* rng = nullptr) const;
  // The same for a batch of contexts (what a training step does): their chunks are walked down
  // together, so a level costs one Encode and one search for the whole batch. queries[b] may be
  // undefined; rngs[b] may be null. Equal to BuildDynamicTree per context, up to float rounding.
  std::vector<std::vector<EncodedNode>> BuildDynamicTrees(
      const std::vector<const std::vector<int64_t>*>& contexts, const std::vector<at::Tensor>& queries,
      const std::vector<std::mt19937_64*>& rngs) const;
  // Per injection layer j (reading lower layer j): the key/value heads some cross-attention head
  // reads, ascending. A head whose query heads all have zero o_proj columns (taken out by
  // `sharedllm edit --drop-heads`) adds nothing, so its keys and values need not be stored.
  std::vector<std::vector<int64_t>> ReadKvHeads() const;
  std::vector<int64_t> SharedRows(const TreeNode& parent, const TreeNode& left) const {
    return SharedRowsOf(config_, parent, left);
  }
  // Search vector of a question: float32 [hidden].
  at::Tensor QueryVector(const std::vector<int64_t>& query_ids) const;
  // Cross-attention context of one sequence from selected nodes (chunk order as given).
  InjectionContext MakeContext(const std::vector<const EncodedNode*>& nodes, int64_t num_chunks) const;
  // A batch: sample b reads per_sample[b]; shorter contexts are padded and masked.
  InjectionContext MakeBatchContext(const std::vector<std::vector<const EncodedNode*>>& per_sample,
                                    const std::vector<int64_t>& num_chunks) const;

  // Model surgery (sharedllm/surgery.h applies these to a model being edited, never to one that
  // serves).
  // Gives the lower model its own weights: copies the base model's bottom M layers into
  // `compressor.*` (config compressor = "separate"). Scores do not change; training the copy
  // then leaves the base model alone. No-op when already separate.
  void SeparateCompressor();
  // Gates every cross-attention (config gate = true): zero-weight gate_proj, o_proj rescaled, so
  // scores do not change until it trains. No-op when already gated.
  void AddGate();
  // Adds an attention sink to every cross-attention (config sink = true) at `logit`. Unlike the
  // gate it changes scores from the start (each head's softmax gains one more key, which takes
  // e^logit / (e^logit + sum of e^score) of the attention). No-op when present.
  void AddSink(double logit = 0.0);
  // Sets the tree's depth and the downsampling stride of each level (config tree_depth, alphas:
  // one per level). The tree holds no weights, so a trained model can go on training, or be
  // served, with another. Validates first: on an error nothing changes.
  void SetTree(int64_t depth, const std::vector<int64_t>& alphas);
  // Deepens a trained model's bottom injection to `m` layers (config num_injection_layers, at
  // least the current M): each new injection layer gets a neutral cross-attention (zero o_proj;
  // gated, and with a sink at `sink_logit`, when the model has them), a separate compressor a copy
  // of the base layer. Scores do not change until the new layers train. With `inherit_o_scale`
  // s > 0 the new cross-attentions start as their layers' own self-attention heads instead
  // (AttachCrossAttention), adding s times what those heads read from the
  // context (the gate's half-open start compensated), so the base's copying heads read the context
  // from the first step (a scale where no layer is added is refused). Only for injection "bottom"
  // (the other modes move the existing layers) and per-layer sink settings of one value.
  // With `own_lower` (a separate compressor only) the new layers read the base model's own lower
  // layers instead of copies added to the compressor (config separate_layers), so inherited heads
  // read the keys they were trained on; a compressor already holding fewer than M layers always
  // grows so. Validates first: on an error nothing changes.
  void SetNumInjectionLayers(int64_t m, double sink_logit = 0.0, double inherit_o_scale = 0.0,
                             bool own_lower = false);

  // Marks which parameters train (requires_grad): cross_attn.* always; the layers above the lower
  // model, the final norm and lm_head when `upper_trainable` (the language-modelling default);
  // the lower model when `lower_trainable`: a separate compressor's copy, or else (weights
  // shared) every base-model weight, its bottom layers and embeddings included.
  void SetTrainable(bool lower_trainable, bool upper_trainable = true);

 private:
  // The lower model over ids [B, L]: the compressor's layers (a separate copy's, else the base's
  // own), then with separate_layers < M the base's own above them.
  CausalLMImpl::LowerOutput Lower(const at::Tensor& ids) const;
  // The base model's module. libtorch modules are not const-correct (forward() is non-const though
  // it changes nothing): the const methods above only run forwards through it.
  CausalLMImpl& net() const { return *lm_.ptr(); }

  CausalLM lm_;
  SharedLLMConfig config_;
  std::vector<int64_t> injection_layers_;
  // Per decoder layer: its cross-attention (registered on it as `cross_attn`), null where none.
  std::vector<CrossAttention> readers_;
  torch::nn::ModuleList compressor_{nullptr};  // separate compressor layers, else null
};

// Name filter for the parameters SharedLLM adds (saved in sharedllm.safetensors): cross_attn.*
// and a separate compressor's compressor.*.
bool IsSharedLLMParameter(const std::string& name);
// The cross-attention parameters only (those the trainer's new_params_lr_scale applies to).
bool IsCrossAttentionParameter(const std::string& name);
// The decoder layer of a parameter `model.layers.<i>.…`, or -1 for any other name.
int64_t DecoderLayerOf(const std::string& name);
// The separate compressor's layer of a parameter `compressor.<j>.…`, or -1 for any other name.
int64_t CompressorLayerOf(const std::string& name);

}  // namespace sharedllm

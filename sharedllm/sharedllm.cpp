#include "sharedllm/sharedllm.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <string>

#include <ATen/ATen.h>

#include "llm/errors.h"

namespace sharedllm {

bool IsCrossAttentionParameter(const std::string& name) {
  return name.find(".cross_attn.") != std::string::npos;
}

int64_t DecoderLayerOf(const std::string& name) {
  static const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) != 0) return -1;
  return std::stoll(name.substr(prefix.size()));
}

int64_t CompressorLayerOf(const std::string& name) {
  static const std::string prefix = "compressor.";
  if (name.rfind(prefix, 0) != 0) return -1;
  return std::stoll(name.substr(prefix.size()));
}

bool IsSharedLLMParameter(const std::string& name) {
  return IsCrossAttentionParameter(name) || CompressorLayerOf(name) >= 0;
}

void CheckInheritOScale(double s) {
  Check(std::isfinite(s) && s >= 0,
        "inherit_o_scale must be a number >= 0 (0: cross-attention starts neutral)");
}

namespace {

// A compressor layer: a copy of base layer i's own weights (an injection layer's cross_attn.*
// stays in the upper model), on the model's device and dtype.
LlamaDecoderLayer CopyOfBaseLayer(CausalLM& lm, int64_t i) {
  const auto& weight = lm->model->embed_tokens->weight;
  LlamaDecoderLayer copy(lm->config, i,
                         at::TensorOptions().dtype(weight.scalar_type()).device(weight.device()));
  c10::NoGradGuard no_grad;
  const auto source = lm->model->layer(i).named_parameters();
  for (auto& p : copy->named_parameters()) p.value().copy_(source[p.key()]);
  return copy;
}

}  // namespace

SharedLLM::SharedLLM(CausalLM lm, SharedLLMConfig config, double inherit_o_scale)
    : lm_(std::move(lm)), config_(std::move(config)) {
  config_.Validate(net().config.num_hidden_layers);
  CheckInheritOScale(inherit_o_scale);
  Check(config_.chunk_size <= net().config.max_position_embeddings,
        "chunk_size " + std::to_string(config_.chunk_size) + " exceeds the model's window " +
            std::to_string(net().config.max_position_embeddings));
  injection_layers_ = config_.InjectionLayers(net().config.num_hidden_layers);
  readers_.resize(net().config.num_hidden_layers, CrossAttention(nullptr));
  for (int64_t layer : injection_layers_) {
    readers_[layer] = AttachCrossAttention(net().model->layer(layer), net().config, inherit_o_scale);
  }
  if (config_.compressor == "separate") SeparateCompressor();
  if (config_.gate) AddGate();
  if (config_.sink) AddSink();
}

void SharedLLM::SetTree(int64_t depth, const std::vector<int64_t>& alphas) {
  SharedLLMConfig next = config_;
  next.tree_depth = depth;
  next.alphas = alphas;
  next.Validate(net().config.num_hidden_layers);
  config_ = std::move(next);
}

void SharedLLM::SetNumInjectionLayers(int64_t m, double sink_logit, double inherit_o_scale,
                                      bool own_lower) {
  const int64_t old = config_.num_injection_layers;
  Check(!own_lower || compressor_,
        "own_lower needs a separate compressor (with a shared one every lower layer is already the "
        "base model's own)");
  CheckInheritOScale(inherit_o_scale);
  Check(m != old || inherit_o_scale == 0,
        "inherit_o_scale starts the injection layers num_injection_layers adds; the model already "
        "has " + std::to_string(old));
  if (m == old) return;
  Check(m > old, "num_injection_layers can only grow a trained model (" + std::to_string(old) +
                     " to " + std::to_string(m) + ")");
  Check(config_.injection == "bottom",
        "num_injection_layers can grow only a bottom injection (this model's is '" +
            config_.injection + "')");
  SharedLLMConfig next = config_;
  next.num_injection_layers = m;
  // A copy that already holds fewer than M layers can only grow from the base's own above it.
  const bool own = compressor_ && (own_lower || config_.SplitLower());
  if (own) next.separate_layers = config_.CopiedLayers();
  next.Validate(net().config.num_hidden_layers);
  config_ = std::move(next);
  for (int64_t i = old; i < m; ++i) {
    readers_[i] = AttachCrossAttention(net().model->layer(i), net().config, inherit_o_scale);
    injection_layers_.push_back(i);
    if (compressor_ && !own) compressor_->push_back(CopyOfBaseLayer(lm_, i));
  }
  // Each is a no-op on the layers that already have it.
  if (config_.gate) AddGate();
  if (config_.sink) AddSink(sink_logit);
}

void SharedLLM::AddSink(double logit) {
  for (int64_t layer : injection_layers_) readers_[layer]->AddSink(logit);
  config_.sink = true;
}

void SharedLLM::AddGate() {
  // Half open (logit 0): the gate's gradient is largest there, so a gate added to a trained model
  // learns to close on tokens that the context does not help within a short run.
  constexpr double kOpenBias = 0.0;
  for (int64_t layer : injection_layers_) readers_[layer]->AddGate(kOpenBias);
  config_.gate = true;
}

void SharedLLM::SeparateCompressor() {
  if (compressor_) return;
  // A second SharedLLM over the same CausalLM (an evaluation-time ablation) adopts the trained copy
  // the model already holds instead of registering another one.
  const auto children = net().named_children();  // by value: keep it while `held` points into it
  if (const auto* held = children.find("compressor")) {
    auto list = std::dynamic_pointer_cast<torch::nn::ModuleListImpl>(*held);
    Check(list != nullptr, "the model's 'compressor' submodule is not a layer list");
    compressor_ = torch::nn::ModuleList(list);
    config_.compressor = "separate";
    return;
  }
  torch::nn::ModuleList layers;
  config_.compressor = "separate";
  for (int64_t i = 0; i < config_.CopiedLayers(); ++i) layers->push_back(CopyOfBaseLayer(lm_, i));
  compressor_ = net().register_module("compressor", layers);
}

CausalLMImpl::LowerOutput SharedLLM::Lower(const at::Tensor& ids) const {
  const int64_t m = config_.num_injection_layers;
  if (!config_.SplitLower()) return net().ForwardLower(ids, m, compressor_);
  // The copy's layers, then the base's own above them (a second pass: layer j's keys depend on
  // the base's own layers below j, not on the copy's).
  const int64_t copied = config_.CopiedLayers();
  auto lower = net().ForwardLower(ids, copied, compressor_);
  auto own = net().ForwardLower(ids, m);
  for (int64_t j = copied; j < m; ++j) {
    lower.k.push_back(std::move(own.k[j]));
    lower.v.push_back(std::move(own.v[j]));
  }
  return lower;
}

std::vector<std::pair<int64_t, int64_t>> SharedLLM::Chunks(int64_t length) const {
  return ChunkSpans(length, config_.chunk_size, min_chunk_length());
}

std::vector<EncodedNode> SharedLLM::EncodeNodes(const std::vector<int64_t>& chunk_ids,
                                                int64_t chunk, const std::vector<TreeNode>& nodes) const {
  std::vector<NodeJob> jobs;
  for (const TreeNode& n : nodes) jobs.push_back({chunk_ids.data(), chunk, n});
  return Encode(jobs);
}

namespace {

// Where each kept position of a batch's nodes comes from, for one gather per tensor: rows of the
// lower model's K/V flattened to [n * KVH * width, D], node after node, head after head (so each
// node's [KVH, kept, D] is one contiguous block of the result). "first"/"last" take one row per kept
// position; "mean" takes the rows of its block, padded to the largest stride with weight 0.
struct KeptRows {
  int64_t per_position = 1;     // rows per kept position
  std::vector<int64_t> rows;    // [total kept * per_position]
  std::vector<float> weights;   // "mean" only: 1 for a block's rows, 0 for padding
  std::vector<float> counts;    // "mean" only: the block's size, per kept position
  std::vector<int64_t> offset;  // per node: its first kept position (in units of kept rows)
  std::vector<int64_t> kept;    // per node: kept positions per head
};

KeptRows PlanKeptRows(const std::vector<int64_t>& lengths, const std::vector<int64_t>& strides,
                      int64_t heads, int64_t width, const std::string& mode) {
  Check(mode == "first" || mode == "last" || mode == "mean",
        "unknown downsampling mode '" + mode + "' (first, last, mean)");
  KeptRows p;
  const bool mean = mode == "mean";
  if (mean) p.per_position = *std::max_element(strides.begin(), strides.end());
  int64_t total = 0;
  for (size_t m = 0; m < lengths.size(); ++m) {
    const int64_t l = lengths[m], alpha = strides[m], kept = KeptLength(l, alpha);
    p.offset.push_back(total);
    p.kept.push_back(kept);
    total += heads * kept;
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t base = (static_cast<int64_t>(m) * heads + h) * width;
      for (int64_t i = 0; i < kept; ++i) {
        const int64_t begin = i * alpha, end = std::min(begin + alpha, l);
        if (!mean) {
          p.rows.push_back(base + (mode == "first" ? begin : end - 1));
          continue;
        }
        for (int64_t t = 0; t < p.per_position; ++t) {
          const bool inside = begin + t < end;
          p.rows.push_back(base + (inside ? begin + t : begin));
          p.weights.push_back(inside ? 1.0f : 0.0f);
        }
        p.counts.push_back(static_cast<float>(end - begin));
      }
    }
  }
  return p;
}

// x: [n, KVH, width, D] -> the kept positions of every node, [sum of KVH * kept, D].
at::Tensor GatherKept(const at::Tensor& x, const KeptRows& p, const at::Tensor& rows,
                      const at::Tensor& weights, const at::Tensor& counts) {
  const int64_t d = x.size(-1);
  auto picked = x.reshape({-1, d}).index_select(0, rows);
  if (!weights.defined()) return picked;
  // Block means in float32: a weighted sum over the padded block, then / the block's size. A block
  // of one position is copied exactly (x * 1 + 0).
  auto blocks = picked.to(at::kFloat).view({-1, p.per_position, d}) * weights.unsqueeze(-1);
  return (blocks.sum(1) / counts.unsqueeze(-1)).to(x.scalar_type());
}

// Search vectors of right-padded sequences (`first_layer`: final-normed layer-1 outputs
// [n, width, hidden], sequence m `lengths[m]` tokens long), float32 [n, hidden]: the output at each
// sequence's last token, or with "mean" its average over the sequence. One definition for the
// nodes and the question, so the two stay comparable.
at::Tensor SearchVectors(const at::Tensor& first_layer, const std::vector<int64_t>& lengths,
                         const std::string& mode) {
  const int64_t n = first_layer.size(0), width = first_layer.size(1);
  const auto device = first_layer.device();
  if (mode == "mean") {
    std::vector<float> w(static_cast<size_t>(n * width), 0.0f);  // padding weighs 0
    for (int64_t m = 0; m < n; ++m) {
      std::fill(w.begin() + m * width, w.begin() + m * width + lengths[m], 1.0f / lengths[m]);
    }
    return (first_layer.to(at::kFloat) * at::tensor(w).view({n, width, 1}).to(device)).sum(1);
  }
  std::vector<int64_t> rows;
  for (int64_t m = 0; m < n; ++m) rows.push_back(m * width + lengths[m] - 1);
  return first_layer.reshape({n * width, -1})
      .index_select(0, at::tensor(rows, at::TensorOptions().dtype(at::kLong)).to(device))
      .to(at::kFloat);
}

}  // namespace

std::vector<EncodedNode> SharedLLM::Encode(const std::vector<NodeJob>& jobs,
                                           int64_t max_batch_tokens) const {
  const auto device = net().model->embed_tokens->weight.device();
  const auto longs = at::TensorOptions().dtype(at::kLong);
  std::vector<EncodedNode> out(jobs.size());
  // Nodes of different lengths share a pass, right-padded to the batch's longest (EncodeBatches).
  // The lower model is causal, so padding after a node never reaches the node's positions: each
  // node is encoded as if alone, at positions 0..l-1.
  std::vector<int64_t> node_lengths;
  for (const NodeJob& job : jobs) node_lengths.push_back(job.node.length());
  for (const std::vector<size_t>& members : EncodeBatches(node_lengths, max_batch_tokens)) {
    const int64_t width = node_lengths[members[0]];
    const int64_t n = static_cast<int64_t>(members.size());
    std::vector<int64_t> ids(static_cast<size_t>(n * width), 0);
    std::vector<int64_t> lengths, strides;
    for (int64_t m = 0; m < n; ++m) {
      const NodeJob& job = jobs[members[m]];
      std::copy(job.chunk_tokens + job.node.begin, job.chunk_tokens + job.node.end,
                ids.begin() + m * width);
      lengths.push_back(job.node.length());
      strides.push_back(config_.alphas[job.node.level - 1]);
    }
    auto lower = Lower(at::tensor(ids, longs).view({n, width}).to(device));
    const int64_t heads = lower.k[0].size(1), d = lower.k[0].size(3);
    const KeptRows plan = PlanKeptRows(lengths, strides, heads, width, config_.selection);
    const auto rows = at::tensor(plan.rows, longs).to(device);
    at::Tensor weights, counts;
    if (!plan.weights.empty()) {
      weights = at::tensor(plan.weights).view({-1, plan.per_position}).to(device);
      counts = at::tensor(plan.counts).to(device);
    }
    auto kept_kv = std::make_shared<EncodedBatch>();  // per layer: [sum of KVH * kept, D]
    for (int64_t j = 0; j < config_.num_injection_layers; ++j) {
      kept_kv->k.push_back(GatherKept(lower.k[j], plan, rows, weights, counts));
      kept_kv->v.push_back(GatherKept(lower.v[j], plan, rows, weights, counts));
    }
    const auto& k = kept_kv->k;
    const auto& v = kept_kv->v;
    const at::Tensor search = SearchVectors(lower.first_layer, lengths, config_.search_vector);
    // Each node holds views into its batch's gathered tensors: only kept positions stay alive.
    for (int64_t m = 0; m < n; ++m) {
      EncodedNode& e = out[members[m]];
      e.chunk = jobs[members[m]].chunk;
      e.node = jobs[members[m]].node;
      const int64_t kept = plan.kept[m], off = plan.offset[m];
      for (int64_t j = 0; j < config_.num_injection_layers; ++j) {
        e.k.push_back(k[j].narrow(0, off, heads * kept).view({heads, kept, d}));
        e.v.push_back(v[j].narrow(0, off, heads * kept).view({heads, kept, d}));
      }
      e.search = search[m];
      e.batch = kept_kv;
      e.first_row = off;
    }
  }
  return out;
}

DocumentTree SharedLLM::BuildStaticTree(const std::vector<int64_t>& context_ids) const {
  std::vector<int64_t> all(Chunks(static_cast<int64_t>(context_ids.size())).size());
  std::iota(all.begin(), all.end(), int64_t{0});
  return BuildStaticTree(context_ids, all);
}

DocumentTree SharedLLM::BuildStaticTree(const std::vector<int64_t>& context_ids,
                                        const std::vector<int64_t>& chunks) const {
  DocumentTree tree;
  const auto spans = Chunks(static_cast<int64_t>(context_ids.size()));
  Check(!spans.empty(), "the context has " + std::to_string(context_ids.size()) +
                            " tokens; a tree needs at least " + std::to_string(min_chunk_length()));
  std::vector<NodeJob> jobs;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const int64_t c = chunks[i];
    Check(c >= 0 && c < static_cast<int64_t>(spans.size()) && (i == 0 || c > chunks[i - 1]),
          "chunks to encode must be ascending indices below " + std::to_string(spans.size()));
    tree.chunks.push_back(ChunkTree::Build(spans[c].second - spans[c].first, config_.tree_depth));
    for (const TreeNode& n : tree.chunks.back().AllNodes()) {
      jobs.push_back({context_ids.data() + spans[c].first, static_cast<int64_t>(i), n});
    }
  }
  // One pass over all chunks: nodes of a level have (nearly) equal lengths and batch together.
  std::vector<EncodedNode> encoded = Encode(jobs);
  size_t next = 0;
  for (const ChunkTree& chunk : tree.chunks) {
    const size_t count = chunk.AllNodes().size();
    tree.nodes.emplace_back(std::make_move_iterator(encoded.begin() + next),
                            std::make_move_iterator(encoded.begin() + next + count));
    next += count;
  }
  return tree;
}

std::vector<const EncodedNode*> SharedLLM::Select(const DocumentTree& tree,
                                                  const at::Tensor& query) const {
  const bool use_query = config_.search && query.defined();
  // With a query: the cosine of every node of the tree at once (one batched op).
  std::vector<double> cosine;
  std::vector<size_t> first_of_chunk;
  if (use_query) {
    std::vector<at::Tensor> vectors;
    for (const auto& nodes : tree.nodes) {
      first_of_chunk.push_back(vectors.size());
      for (const EncodedNode& e : nodes) vectors.push_back(e.search);
    }
    cosine = CosineToQuery(vectors, query);
  }
  std::vector<const EncodedNode*> out;
  for (int64_t c = 0; c < tree.num_chunks(); ++c) {
    const auto& nodes = tree.nodes[c];
    ChildChooser chooser = AlwaysRight;
    if (use_query) {
      const double* cos = cosine.data() + first_of_chunk[c];
      chooser = [cos](const TreeNode& l, const TreeNode& r) {
        return cos[ChunkTree::FlatIndex(r.level, r.index)] > cos[ChunkTree::FlatIndex(l.level, l.index)];
      };
    }
    for (const TreeNode& n : PreservedNodes(tree.chunks[c], chooser)) {
      out.push_back(&nodes[ChunkTree::FlatIndex(n.level, n.index)]);
    }
  }
  return out;
}

std::vector<EncodedNode> SharedLLM::BuildDynamicTree(const std::vector<int64_t>& context_ids,
                                                     const at::Tensor& query, std::mt19937_64* rng) const {
  return std::move(BuildDynamicTrees({&context_ids}, {query}, {rng})[0]);
}

std::vector<std::vector<EncodedNode>> SharedLLM::BuildDynamicTrees(
    const std::vector<const std::vector<int64_t>*>& contexts, const std::vector<at::Tensor>& queries,
    const std::vector<std::mt19937_64*>& rngs) const {
  Check(queries.size() == contexts.size() && rngs.size() == contexts.size(), "bad tree batch");
  // Every chunk of every context, walked down together: one Encode (a few lower-model passes) and
  // one search per level for the whole batch. Splits are drawn per context in chunk order, as
  // for a context alone.
  struct Walk {
    size_t sample;
    int64_t chunk;
    const int64_t* tokens;
    ChunkTree tree;
    int64_t parent = 0;
    size_t first_job = 0;
  };
  std::vector<Walk> walks;
  std::vector<at::Tensor> query_list;  // the defined queries of samples that search
  std::vector<int64_t> query_of(contexts.size(), -1);
  for (size_t b = 0; b < contexts.size(); ++b) {
    if (config_.search && queries[b].defined()) {
      query_of[b] = static_cast<int64_t>(query_list.size());
      query_list.push_back(queries[b]);
    }
    const auto spans = Chunks(static_cast<int64_t>(contexts[b]->size()));
    Check(!spans.empty(), "the context is shorter than one tree");
    for (size_t c = 0; c < spans.size(); ++c) {
      walks.push_back({b, static_cast<int64_t>(c), contexts[b]->data() + spans[c].first,
                       ChunkTree::Build(spans[c].second - spans[c].first, config_.tree_depth,
                                        config_.split_noise ? rngs[b] : nullptr, config_.noise_divisor)});
    }
  }
  // With a query both children are encoded (their search vectors decide); without, only the
  // preserved (left) one is, until the last level, where both children are preserved.
  std::vector<std::vector<EncodedNode>> kept(walks.size());
  for (int64_t level = 1; level <= config_.tree_depth; ++level) {
    const bool last = level == config_.tree_depth;
    std::vector<NodeJob> jobs;
    for (Walk& w : walks) {
      w.first_job = jobs.size();
      jobs.push_back({w.tokens, w.chunk, w.tree.node(level, 2 * w.parent)});
      if (last || query_of[w.sample] >= 0) jobs.push_back({w.tokens, w.chunk, w.tree.node(level, 2 * w.parent + 1)});
    }
    std::vector<EncodedNode> encoded = Encode(jobs);
    std::vector<double> cosine(jobs.size(), 0.0);  // of each searched child to its sample's query
    if (!last && !query_list.empty()) {
      std::vector<at::Tensor> vectors;
      std::vector<int64_t> which;
      std::vector<size_t> at;
      for (const Walk& w : walks) {
        if (query_of[w.sample] < 0) continue;
        for (size_t j = w.first_job; j < w.first_job + 2; ++j) {
          vectors.push_back(encoded[j].search);
          which.push_back(query_of[w.sample]);
          at.push_back(j);
        }
      }
      const std::vector<double> cos = CosineToQueries(vectors, query_list, which);
      for (size_t i = 0; i < at.size(); ++i) cosine[at[i]] = cos[i];
    }
    for (size_t i = 0; i < walks.size(); ++i) {
      Walk& w = walks[i];
      EncodedNode& left = encoded[w.first_job];
      if (last) {
        kept[i].push_back(std::move(left));
        kept[i].push_back(std::move(encoded[w.first_job + 1]));
      } else if (query_of[w.sample] < 0) {  // right-child policy: the left child is preserved
        kept[i].push_back(std::move(left));
        w.parent = 2 * w.parent + 1;
      } else {
        EncodedNode& right = encoded[w.first_job + 1];
        const bool right_expands = cosine[w.first_job + 1] > cosine[w.first_job];  // ties go left
        kept[i].push_back(std::move(right_expands ? left : right));
        w.parent = 2 * w.parent + (right_expands ? 1 : 0);
      }
    }
  }
  std::vector<std::vector<EncodedNode>> out(contexts.size());
  for (size_t i = 0; i < walks.size(); ++i) {
    auto& chunk_nodes = kept[i];
    std::sort(chunk_nodes.begin(), chunk_nodes.end(),
              [](const EncodedNode& a, const EncodedNode& b) { return a.node.begin < b.node.begin; });
    for (auto& e : chunk_nodes) out[walks[i].sample].push_back(std::move(e));
  }
  return out;
}

std::vector<int64_t> SharedRowsOf(const SharedLLMConfig& c, const TreeNode& parent, const TreeNode& left) {
  if (parent.level < 1 || parent.level >= c.tree_depth) return {};
  Check(left.level == parent.level + 1 && left.index == 2 * parent.index && left.begin == parent.begin &&
            left.end <= parent.end,
        "not a node's left child");
  return SharedLeadingRows(parent.end - parent.begin, c.alphas[parent.level - 1], left.end - left.begin,
                           c.alphas[parent.level], c.selection);
}

std::vector<int64_t> SharedRowCounts(const SharedLLMConfig& c, const std::vector<TreeNode>& nodes) {
  std::vector<int64_t> counts(nodes.size(), 0);
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (const TreeNode& left : nodes) {
      if (left.level == nodes[i].level + 1 && left.index == 2 * nodes[i].index) {
        counts[i] = static_cast<int64_t>(SharedRowsOf(c, nodes[i], left).size());
      }
    }
  }
  return counts;
}

std::vector<std::vector<int64_t>> SharedLLM::ReadKvHeads() const {
  std::vector<std::vector<int64_t>> out;
  for (int64_t layer : injection_layers_) {
    const CrossAttentionImpl& x = *readers_[layer];
    // o_proj: [hidden, heads * head_dim]; query head h reads kv head h / (heads / kv_heads).
    const at::Tensor o = x.o_proj->weight.detach().to(at::kCPU, at::kFloat);
    const at::Tensor used = o.abs().amax(0).view({x.heads, x.head_dim}).amax(1) > 0;  // [heads]
    const int64_t group = x.heads / x.kv_heads;
    std::vector<int64_t> heads;
    for (int64_t g = 0; g < x.kv_heads; ++g) {
      if (used.narrow(0, g * group, group).any().item<bool>()) heads.push_back(g);
    }
    out.push_back(std::move(heads));
  }
  return out;
}

at::Tensor SharedLLM::QueryVector(const std::vector<int64_t>& query_ids) const {
  Check(!query_ids.empty(), "the query is empty");
  const auto device = net().model->embed_tokens->weight.device();
  auto ids = at::tensor(query_ids, at::TensorOptions().dtype(at::kLong)).view({1, -1}).to(device);
  auto lower = net().ForwardLower(ids, 1);
  return SearchVectors(lower.first_layer, {ids.size(1)}, config_.search_vector)[0];
}

InjectionContext SharedLLM::MakeContext(const std::vector<const EncodedNode*>& nodes,
                                        int64_t num_chunks) const {
  return MakeBatchContext({nodes}, {num_chunks});
}

InjectionContext SharedLLM::MakeBatchContext(
    const std::vector<std::vector<const EncodedNode*>>& per_sample,
    const std::vector<int64_t>& num_chunks) const {
  Check(!per_sample.empty() && per_sample.size() == num_chunks.size(), "bad context batch");
  const ModelConfig& mc = net().config;
  const int64_t batch = static_cast<int64_t>(per_sample.size());
  // All samples share the query position n: the number of chunks (equal within a batch).
  for (int64_t n : num_chunks) Check(n == num_chunks[0], "a batch needs equal chunk counts");
  InjectionContext ctx;
  ctx.readers = readers_;
  ctx.num_chunks = num_chunks[0];
  ctx.k.resize(mc.num_hidden_layers);
  ctx.v.resize(mc.num_hidden_layers);
  std::vector<int64_t> lengths(batch, 0);
  for (int64_t b = 0; b < batch; ++b) {
    Check(!per_sample[b].empty(), "an empty context");
    for (const EncodedNode* e : per_sample[b]) lengths[b] += e->k[0].size(1);
  }
  const int64_t s = *std::max_element(lengths.begin(), lengths.end());
  const auto& like = per_sample[0][0]->k[0];
  const auto device = net().model->embed_tokens->weight.device();
  const auto dtype = net().model->embed_tokens->weight.scalar_type();
  // Chunk index of every kept position (rotary position of its key).
  std::vector<int64_t> chunk_of(static_cast<size_t>(batch * s), 0);
  for (int64_t b = 0; b < batch; ++b) {
    auto at_pos = chunk_of.begin() + b * s;
    for (const EncodedNode* e : per_sample[b]) at_pos = std::fill_n(at_pos, e->k[0].size(1), e->chunk);
  }
  auto positions = at::tensor(chunk_of, at::TensorOptions().dtype(at::kLong)).view({batch, s});
  at::Tensor cos, sin;  // [B, 1, S, D]
  if (config_.chunk_positions) {
    auto cs = net().rope.CosSin(positions.view({-1}), ctx.num_chunks + 1);
    cos = cs.first.view({batch, 1, s, -1}).to(device);
    sin = cs.second.view({batch, 1, s, -1}).to(device);
    auto q = net().rope.CosSin(at::full({1}, ctx.num_chunks, at::TensorOptions().dtype(at::kLong)),
                              ctx.num_chunks + 1);
    ctx.query_cos = q.first.to(device);
    ctx.query_sin = q.second.to(device);
  }
  // Every kept row comes from a source: a node's Encode batch (EncodedNode::batch) or, for a
  // decoded node, its own tensor. Per layer the distinct sources are concatenated (with a zero row
  // for padding) and the context is one index_select: [B, KVH, S, D].
  const int64_t heads = like.size(0), d = like.size(2);
  std::vector<const EncodedNode*> sources;  // first node of each distinct source
  std::map<const void*, size_t> source_of;
  std::vector<int64_t> source_start = {0};   // row of each source in the concatenation
  auto source_index = [&](const EncodedNode* e) {
    const void* key = e->batch ? static_cast<const void*>(e->batch.get()) : static_cast<const void*>(e);
    auto [it, added] = source_of.emplace(key, sources.size());
    if (added) {
      sources.push_back(e);
      source_start.push_back(source_start.back() +
                             (e->batch ? e->batch->k[0].size(0) : heads * e->k[0].size(1)));
    }
    return it->second;
  };
  std::vector<size_t> node_source;  // per node of per_sample, in order
  for (const auto& nodes : per_sample) {
    for (const EncodedNode* e : nodes) node_source.push_back(source_index(e));
  }
  const int64_t zero_row = source_start.back();
  std::vector<int64_t> dest(static_cast<size_t>(batch * heads * s), zero_row);  // padding: zeros
  auto next_source = node_source.begin();
  for (int64_t b = 0; b < batch; ++b) {
    int64_t pos = 0;
    for (const EncodedNode* e : per_sample[b]) {
      const int64_t kept = e->k[0].size(1);
      const int64_t first = source_start[*next_source++] + (e->batch ? e->first_row : 0);
      for (int64_t h = 0; h < heads; ++h) {
        std::iota(dest.begin() + (b * heads + h) * s + pos,
                  dest.begin() + (b * heads + h) * s + pos + kept, first + h * kept);
      }
      pos += kept;
    }
  }
  const auto index = at::tensor(dest, at::TensorOptions().dtype(at::kLong)).to(device);
  auto gather = [&](int64_t j, bool keys) {
    std::vector<at::Tensor> parts;
    for (const EncodedNode* e : sources) {
      if (e->batch) {
        parts.push_back((keys ? e->batch->k : e->batch->v)[j]);
      } else {
        parts.push_back((keys ? e->k : e->v)[j].reshape({-1, d}));
      }
    }
    parts.push_back(at::zeros({1, d}, parts[0].options()));
    return at::cat(parts, 0).to(dtype).index_select(0, index).view({batch, heads, s, d});
  };
  for (int64_t j = 0; j < config_.num_injection_layers; ++j) {
    auto k = gather(j, true);
    if (cos.defined()) k = ApplyRotary(k, cos, sin);
    ctx.k[injection_layers_[j]] = k;
    ctx.v[injection_layers_[j]] = gather(j, false);
  }
  bool padded = false;
  for (int64_t len : lengths) padded |= len != s;
  if (padded) {
    std::vector<float> mask(static_cast<size_t>(batch * s), 0.0f);
    for (int64_t b = 0; b < batch; ++b) {
      std::fill(mask.begin() + b * s + lengths[b], mask.begin() + (b + 1) * s,
                -std::numeric_limits<float>::infinity());
    }
    ctx.key_mask = at::tensor(mask).view({batch, 1, 1, s}).to(device);
  }
  return ctx;
}

void SharedLLM::SetTrainable(bool lower_trainable, bool upper_trainable) {
  const int64_t m = config_.num_injection_layers;
  // With shared weights, training the lower model trains the base model's weights, all of them.
  const bool everything = lower_trainable && !compressor_;
  for (auto& p : net().named_parameters()) {
    const std::string& name = p.key();
    bool train = everything || IsCrossAttentionParameter(name);
    if (CompressorLayerOf(name) >= 0) {
      train = lower_trainable;
    } else if (!train && upper_trainable) {
      train = name == "lm_head.weight" || name == "model.norm.weight";
      if (const int64_t layer = DecoderLayerOf(name); layer >= 0) {
        train = layer >= m;  // above the lower model: the upper's own layers
      }
      // model.embed_tokens.weight stays frozen: the lower model reads it (and, tied, the output).
    }
    p.value().set_requires_grad(train);
  }
}

}  // namespace sharedllm

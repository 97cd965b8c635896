#include "model/sharedllm.h"

#include <algorithm>
#include <map>

#include <ATen/ATen.h>

#include "model/errors.h"

namespace sharedllm {

bool IsSharedLLMParameter(const std::string& name) {
  return name.find(".cross_attn.") != std::string::npos;
}

SharedLLM::SharedLLM(CausalLM lm, SharedLLMConfig config)
    : lm_(std::move(lm)), config_(std::move(config)) {
  config_.Validate(lm_->config.num_hidden_layers);
  Check(config_.chunk_size <= lm_->config.max_position_embeddings,
        "chunk_size " + std::to_string(config_.chunk_size) + " exceeds the model's window " +
            std::to_string(lm_->config.max_position_embeddings));
  injection_layers_ = config_.InjectionLayers(lm_->config.num_hidden_layers);
  for (int64_t layer : injection_layers_) lm_->model->layer(layer).AddCrossAttention(lm_->config);
}

std::vector<std::pair<int64_t, int64_t>> SharedLLM::Chunks(int64_t length) const {
  return ChunkSpans(length, config_.chunk_size, min_chunk_length());
}

std::vector<EncodedNode> SharedLLM::EncodeNodes(const std::vector<int64_t>& chunk_ids,
                                                int64_t chunk, const std::vector<TreeNode>& nodes) {
  std::vector<NodeJob> jobs;
  for (const TreeNode& n : nodes) jobs.push_back({chunk_ids.data(), chunk, n});
  return Encode(jobs);
}

std::vector<EncodedNode> SharedLLM::Encode(const std::vector<NodeJob>& jobs,
                                           int64_t max_batch_tokens) {
  const auto device = lm_->model->embed_tokens->weight.device();
  std::vector<EncodedNode> out(jobs.size());
  std::map<int64_t, std::vector<size_t>> by_length;  // equal lengths share one batch
  for (size_t i = 0; i < jobs.size(); ++i) by_length[jobs[i].node.length()].push_back(i);
  for (const auto& [length, all] : by_length) {
    const size_t per_batch = static_cast<size_t>(std::max<int64_t>(1, max_batch_tokens / length));
    for (size_t first = 0; first < all.size(); first += per_batch) {
      const std::vector<size_t> members(all.begin() + first,
                                        all.begin() + std::min(all.size(), first + per_batch));
      std::vector<int64_t> ids;
      ids.reserve(members.size() * length);
      for (size_t i : members) {
        const int64_t* t = jobs[i].chunk_tokens;
        ids.insert(ids.end(), t + jobs[i].node.begin, t + jobs[i].node.end);
      }
      auto batch = at::tensor(ids, at::TensorOptions().dtype(at::kLong))
                       .view({static_cast<int64_t>(members.size()), length})
                       .to(device);
      auto lower = lm_->ForwardLower(batch, config_.num_injection_layers);
      for (size_t m = 0; m < members.size(); ++m) {
        EncodedNode& e = out[members[m]];
        e.chunk = jobs[members[m]].chunk;
        e.node = jobs[members[m]].node;
        const int64_t alpha = config_.alphas[e.node.level - 1];
        for (int64_t j = 0; j < config_.num_injection_layers; ++j) {
          // clone(): a node must not keep its whole batch alive through a view.
          e.k.push_back(Downsample(lower.k[j][m], alpha, config_.selection).clone());  // [KVH, kept, D]
          e.v.push_back(Downsample(lower.v[j][m], alpha, config_.selection).clone());
        }
        e.search = lower.first_layer[m][length - 1].to(at::kFloat).clone();
      }
    }
  }
  return out;
}

DocumentTree SharedLLM::BuildStaticTree(const std::vector<int64_t>& context_ids) {
  DocumentTree tree;
  const auto spans = Chunks(static_cast<int64_t>(context_ids.size()));
  Check(!spans.empty(), "the context has " + std::to_string(context_ids.size()) +
                            " tokens; a tree needs at least " + std::to_string(min_chunk_length()));
  std::vector<NodeJob> jobs;
  for (size_t c = 0; c < spans.size(); ++c) {
    tree.chunks.push_back(ChunkTree::Build(spans[c].second - spans[c].first, config_.tree_depth));
    for (const TreeNode& n : tree.chunks.back().AllNodes()) {
      jobs.push_back({context_ids.data() + spans[c].first, static_cast<int64_t>(c), n});
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
  std::vector<const EncodedNode*> out;
  for (int64_t c = 0; c < tree.num_chunks(); ++c) {
    const auto& nodes = tree.nodes[c];
    auto vector_of = [&](const TreeNode& n) -> const at::Tensor& {
      return nodes[ChunkTree::FlatIndex(n.level, n.index)].search;
    };
    ChildChooser chooser = AlwaysRight;
    if (use_query) {
      chooser = [&](const TreeNode& l, const TreeNode& r) {
        return CosineExpandsRight(vector_of(l), vector_of(r), query);
      };
    }
    for (const TreeNode& n : PreservedNodes(tree.chunks[c], chooser)) {
      out.push_back(&nodes[ChunkTree::FlatIndex(n.level, n.index)]);
    }
  }
  return out;
}

std::vector<EncodedNode> SharedLLM::BuildDynamicTree(const std::vector<int64_t>& context_ids,
                                                     const at::Tensor& query, std::mt19937_64* rng) {
  const bool use_query = config_.search && query.defined();
  const auto spans = Chunks(static_cast<int64_t>(context_ids.size()));
  Check(!spans.empty(), "the context is shorter than one tree");
  std::vector<ChunkTree> trees;
  for (const auto& [begin, end] : spans) {
    trees.push_back(ChunkTree::Build(end - begin, config_.tree_depth,
                                     config_.split_noise ? rng : nullptr, config_.noise_divisor));
  }
  // Walk all chunks down together, one lower-model pass per level. With a query both children
  // are encoded (their search vectors decide); without, only the preserved (left) one is, until
  // the last level, where both children are preserved.
  std::vector<std::vector<EncodedNode>> kept(trees.size());
  std::vector<int64_t> parent(trees.size(), 0);
  for (int64_t level = 1; level <= config_.tree_depth; ++level) {
    const bool last = level == config_.tree_depth;
    const bool both = use_query || last;
    std::vector<NodeJob> jobs;
    for (size_t c = 0; c < trees.size(); ++c) {
      const int64_t* tokens = context_ids.data() + spans[c].first;
      jobs.push_back({tokens, static_cast<int64_t>(c), trees[c].node(level, 2 * parent[c])});
      if (both) jobs.push_back({tokens, static_cast<int64_t>(c), trees[c].node(level, 2 * parent[c] + 1)});
    }
    std::vector<EncodedNode> encoded = Encode(jobs);
    for (size_t c = 0; c < trees.size(); ++c) {
      if (!both) {  // right-child policy: the left child is preserved, the right one expanded
        kept[c].push_back(std::move(encoded[c]));
        parent[c] = 2 * parent[c] + 1;
        continue;
      }
      EncodedNode& left = encoded[2 * c];
      EncodedNode& right = encoded[2 * c + 1];
      if (last) {
        kept[c].push_back(std::move(left));
        kept[c].push_back(std::move(right));
        continue;
      }
      const bool right_expands = CosineExpandsRight(left.search, right.search, query);
      kept[c].push_back(std::move(right_expands ? left : right));
      parent[c] = 2 * parent[c] + (right_expands ? 1 : 0);
    }
  }
  std::vector<EncodedNode> out;
  for (auto& chunk_nodes : kept) {
    std::sort(chunk_nodes.begin(), chunk_nodes.end(),
              [](const EncodedNode& a, const EncodedNode& b) { return a.node.begin < b.node.begin; });
    for (auto& e : chunk_nodes) out.push_back(std::move(e));
  }
  return out;
}

at::Tensor SharedLLM::QueryVector(const std::vector<int64_t>& query_ids) {
  Check(!query_ids.empty(), "the query is empty");
  const auto device = lm_->model->embed_tokens->weight.device();
  auto ids = at::tensor(query_ids, at::TensorOptions().dtype(at::kLong)).view({1, -1}).to(device);
  auto lower = lm_->ForwardLower(ids, 1);
  return lower.first_layer[0][ids.size(1) - 1].to(at::kFloat);
}

InjectionContext SharedLLM::MakeContext(const std::vector<const EncodedNode*>& nodes,
                                        int64_t num_chunks) const {
  return MakeBatchContext({nodes}, {num_chunks});
}

InjectionContext SharedLLM::MakeBatchContext(
    const std::vector<std::vector<const EncodedNode*>>& per_sample,
    const std::vector<int64_t>& num_chunks) const {
  Check(!per_sample.empty() && per_sample.size() == num_chunks.size(), "bad context batch");
  const ModelConfig& mc = lm_->config;
  const int64_t batch = static_cast<int64_t>(per_sample.size());
  // All samples share the query position n: the number of chunks (equal within a batch).
  for (int64_t n : num_chunks) Check(n == num_chunks[0], "a batch needs equal chunk counts");
  InjectionContext ctx;
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
  const auto device = lm_->model->embed_tokens->weight.device();
  const auto dtype = lm_->model->embed_tokens->weight.scalar_type();
  // Chunk index of every kept position (rotary position of its key).
  auto positions = at::zeros({batch, s}, at::TensorOptions().dtype(at::kLong));
  for (int64_t b = 0; b < batch; ++b) {
    int64_t at_pos = 0;
    for (const EncodedNode* e : per_sample[b]) {
      const int64_t kept = e->k[0].size(1);
      positions[b].narrow(0, at_pos, kept).fill_(e->chunk);
      at_pos += kept;
    }
  }
  at::Tensor cos, sin;  // [B, 1, S, D]
  if (config_.chunk_positions) {
    auto cs = lm_->rope.CosSin(positions.view({-1}), ctx.num_chunks + 1);
    cos = cs.first.view({batch, 1, s, -1}).to(device);
    sin = cs.second.view({batch, 1, s, -1}).to(device);
    auto q = lm_->rope.CosSin(at::full({1}, ctx.num_chunks, at::TensorOptions().dtype(at::kLong)),
                              ctx.num_chunks + 1);
    ctx.query_cos = q.first.to(device);
    ctx.query_sin = q.second.to(device);
  }
  for (int64_t j = 0; j < config_.num_injection_layers; ++j) {
    auto k = at::zeros({batch, like.size(0), s, like.size(2)}, at::TensorOptions().dtype(dtype).device(device));
    auto v = at::zeros_like(k);
    for (int64_t b = 0; b < batch; ++b) {
      std::vector<at::Tensor> ks, vs;
      for (const EncodedNode* e : per_sample[b]) {
        ks.push_back(e->k[j]);
        vs.push_back(e->v[j]);
      }
      k[b].narrow(1, 0, lengths[b]).copy_(at::cat(ks, 1));
      v[b].narrow(1, 0, lengths[b]).copy_(at::cat(vs, 1));
    }
    if (cos.defined()) k = ApplyRotary(k, cos, sin);
    ctx.k[injection_layers_[j]] = k;
    ctx.v[injection_layers_[j]] = v;
  }
  bool padded = false;
  for (int64_t len : lengths) padded |= len != s;
  if (padded) {
    auto mask = at::zeros({batch, 1, 1, s}, at::TensorOptions().dtype(at::kFloat));
    for (int64_t b = 0; b < batch; ++b) {
      mask[b].narrow(-1, lengths[b], s - lengths[b]).fill_(-std::numeric_limits<float>::infinity());
    }
    ctx.key_mask = mask.to(device);
  }
  return ctx;
}

void SharedLLM::SetTrainable(bool lower_trainable) {
  const int64_t m = config_.num_injection_layers;
  for (auto& p : lm_->named_parameters()) {
    const std::string& name = p.key();
    bool train = lower_trainable || IsSharedLLMParameter(name) || name == "lm_head.weight" ||
                 name == "model.norm.weight";
    if (!train && name.rfind("model.layers.", 0) == 0) {
      const int64_t layer = std::stoll(name.substr(13));
      train = layer >= m;  // above the lower model: the upper model's own layers
    }
    if (name == "model.embed_tokens.weight" && !lower_trainable) {
      // Shared by the lower model; with tied embeddings also the output layer.
      train = false;
    }
    p.value().set_requires_grad(train);
  }
}

}  // namespace sharedllm

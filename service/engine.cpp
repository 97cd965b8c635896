#include "service/engine.h"

#include "service/encoding.h"

#include <chrono>
#include <filesystem>
#include <fstream>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "llm/decoder.h"
#include "llm/errors.h"
#include "sharedllm/loaded_model.h"
#include "sharedllm/node_records.h"
#include "sharedllm/reading.h"

namespace sharedllm::service {
namespace {

// Runs `fn`, turning the model's exceptions into a status (exceptions stay inside the model layers).
template <typename F>
auto Guard(F&& fn) -> absl::StatusOr<decltype(fn())> {
  try {
    return fn();
  } catch (const ModelError& e) {
    return absl::InvalidArgumentError(e.what());
  } catch (const std::exception& e) {
    return absl::InternalError(std::string("model: ") + e.what());
  }
}


// SHA-256 over the files that define the compressor and the cross-attention: configs, tokenizer,
// sharedllm weights in full, and the base weights' headers, sizes and sampled blocks (a 7B
// checkpoint is not hashed whole at every start).
std::string Fingerprint(const std::string& dir) {
  namespace fs = std::filesystem;
  Sha256Hasher hasher;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir)) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const auto& p : files) {
    const std::string name = p.filename().string();
    const bool whole = name == "config.json" || name == "sharedllm.json" ||
                       name == "tokenizer.model" || name == "sharedllm.safetensors";
    const bool weights = name.size() > 12 && name.substr(name.size() - 12) == ".safetensors";
    if (!whole && !weights) continue;
    hasher.Update(name.data(), name.size());
    std::ifstream in(p, std::ios::binary);
    const uint64_t size = fs::file_size(p);
    hasher.Update(&size, sizeof(size));
    std::vector<char> buf(1 << 20);
    auto hash_block = [&](uint64_t offset) {
      in.clear();
      in.seekg(static_cast<std::streamoff>(offset));
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      hasher.Update(buf.data(), static_cast<size_t>(in.gcount()));
    };
    if (whole || size <= 8 * buf.size()) {
      for (uint64_t off = 0; off < size; off += buf.size()) hash_block(off);
    } else {
      for (uint64_t off : {uint64_t{0}, size / 4, size / 2, 3 * size / 4, size - buf.size()}) hash_block(off);
    }
  }
  return hasher.HexDigest();
}

// `read_heads` (per layer, the key/value heads read) as index tensors on `device`; undefined
// where all `kv_heads` are read. Made once per EncodeChunk/Answer call, not per node.
std::vector<at::Tensor> HeadIndex(const std::vector<std::vector<int64_t>>& read_heads,
                                  int64_t kv_heads, const at::Device& device) {
  std::vector<at::Tensor> out;
  for (const auto& heads : read_heads) {
    out.push_back(static_cast<int64_t>(heads.size()) == kv_heads
                      ? at::Tensor()
                      : at::tensor(heads, at::TensorOptions().dtype(at::kLong)).to(device));
  }
  return out;
}

}  // namespace

Engine::~Engine() = default;

absl::StatusOr<std::unique_ptr<Engine>> Engine::Load(const EngineOptions& options) {
  std::unique_ptr<Engine> engine(new Engine());
  auto format = Guard([&] { return ParseKvFormat(options.kv_dtype); });
  if (!format.ok()) return absl::InvalidArgumentError(format.status().message());
  engine->kv_format_ = *format;
  auto loaded = Guard([&] {
    RuntimeOptions runtime;
    runtime.threads = options.threads;
    runtime.dtype = options.dtype;
    runtime.device = options.device;
    return LoadModel(options.model_dir, runtime);
  });
  if (!loaded.ok()) return absl::FailedPreconditionError(loaded.status().message());
  engine->model_ = *loaded;
  if (!engine->model_->shared) {
    return absl::FailedPreconditionError(options.model_dir +
                                         " is not a SharedLLM model (no sharedllm.json)");
  }
  if (!engine->model_->tokenizer) {
    return absl::FailedPreconditionError(options.model_dir + " has no tokenizer.model");
  }
  engine->read_heads_ = engine->model_->shared->ReadKvHeads();
  engine->fingerprint_ = Fingerprint(options.model_dir);
  engine->model_name_ = ModelName(options.model_dir);
  return engine;
}

std::string Engine::ModelName(const std::string& model_dir) {
  std::string name = std::filesystem::path(model_dir).filename().string();
  if (name.empty()) name = std::filesystem::path(model_dir).parent_path().filename().string();
  return name;
}

int64_t Engine::window() const { return model_->config.max_position_embeddings; }

int64_t Engine::chunk_size() const { return model_->shared->config().chunk_size; }

std::vector<std::pair<int64_t, int64_t>> Engine::LeftChain(int64_t level, int64_t index) const {
  std::vector<std::pair<int64_t, int64_t>> chain;
  for (int64_t l = level + 1; l <= model_->shared->config().tree_depth; ++l) {
    index *= 2;
    chain.emplace_back(l, index);
  }
  return chain;
}

int64_t Engine::KeptPositions(int64_t level, int64_t length) const {
  return KeptLength(length, model_->shared->config().alphas.at(level - 1));
}

absl::StatusOr<std::vector<int64_t>> Engine::Tokenize(const std::string& text) const {
  return Guard([&] { return model_->tokenizer->Encode(text); });
}

std::vector<std::pair<int64_t, int64_t>> Engine::ChunkSpans(int64_t num_tokens) const {
  return model_->shared->Chunks(num_tokens);
}

absl::StatusOr<std::vector<NodeRecord>> Engine::EncodeChunk(const std::vector<int64_t>& tokens,
                                                            int64_t chunk_index) {
  return Guard([&] {
    c10::InferenceMode guard;
    const SharedLLM& s = *model_->shared;
    const ChunkTree tree = ChunkTree::Build(static_cast<int64_t>(tokens.size()), s.config().tree_depth);
    const std::vector<at::Tensor> index =
        HeadIndex(read_heads_, model_->config.num_key_value_heads,
                  model_->lm->model->embed_tokens->weight.device());
    std::vector<EncodedNode> nodes = s.EncodeNodes(tokens, chunk_index, tree.AllNodes());
    for (auto& node : nodes) {
      for (size_t j = 0; j < node.k.size(); ++j) {
        // Only the heads some cross-attention head reads, in the stored element type.
        if (index[j].defined()) {
          node.k[j] = node.k[j].index_select(0, index[j]);
          node.v[j] = node.v[j].index_select(0, index[j]);
        }
      }
    }
    return ChunkRecords(s, std::move(nodes), kv_format_);
  });
}

sharedllm::ChunkTerms Engine::TermsOf(const std::vector<int64_t>& tokens) const {
  return TermsOfChunk(*model_->tokenizer, tokens.data(), tokens.data() + tokens.size());
}

absl::StatusOr<int64_t> Engine::ReadBudget(int64_t requested) const {
  return Guard([&] { return sharedllm::ReadBudget(model_->shared->config(), requested); });
}

absl::StatusOr<std::vector<int64_t>> Engine::PromptIds(const std::string& question) const {
  return Guard([&] {
    std::vector<int64_t> ids;
    if (model_->tokenizer->bos_id() >= 0) ids.push_back(model_->tokenizer->bos_id());
    for (int64_t id : model_->tokenizer->Encode(question)) ids.push_back(id);
    return ids;
  });
}

absl::StatusOr<std::vector<SelectedRef>> Engine::Select(const std::vector<int64_t>& prompt_ids,
                                                        const std::vector<DocumentVectors>& docs) {
  return Guard([&] {
    c10::InferenceMode guard;
    const SharedLLM& s = *model_->shared;
    const at::Tensor query = s.QueryVector(prompt_ids);
    std::vector<SelectedRef> out;
    for (size_t d = 0; d < docs.size(); ++d) {
      // Rebuild the static tree of the chunks read from their stored vectors (no K/V needed to
      // search); tree chunk i is the document's chunk docs[d].chunks[i].
      const auto& read = docs[d].chunks;
      if (read.empty()) continue;
      DocumentTree tree;
      tree.chunks.resize(read.size());
      tree.nodes.resize(read.size());
      for (const NodeRecord& r : docs[d].nodes) {
        auto it = std::lower_bound(read.begin(), read.end(), r.chunk);
        Check(it != read.end() && *it == r.chunk, "stored node outside the chunks read");
        EncodedNode e = FromRecord(r, at::kCPU, at::kFloat);
        e.chunk = it - read.begin();
        tree.nodes[e.chunk].push_back(std::move(e));
      }
      for (size_t c = 0; c < read.size(); ++c) {
        auto& nodes = tree.nodes[c];
        Check(!nodes.empty(), "stored tree lacks chunk " + std::to_string(read[c]));
        std::sort(nodes.begin(), nodes.end(), [](const EncodedNode& a, const EncodedNode& b) {
          return ChunkTree::FlatIndex(a.node.level, a.node.index) <
                 ChunkTree::FlatIndex(b.node.level, b.node.index);
        });
        int64_t length = 0;
        for (const auto& n : nodes) length = std::max(length, n.node.end);
        tree.chunks[c] = ChunkTree::Build(length, s.config().tree_depth);
        for (const auto& n : nodes) {
          Check(tree.chunks[c].node(n.node.level, n.node.index) == n.node,
                "stored tree of chunk " + std::to_string(read[c]) + " does not match this model's split");
        }
      }
      for (const EncodedNode* n : s.Select(tree, query)) {
        out.push_back({d, read[n->chunk], n->node.level, n->node.index, n->node.begin, n->node.end});
      }
    }
    return out;
  });
}

absl::StatusOr<AnswerResult> Engine::Answer(const std::vector<int64_t>& prompt_ids,
                                            const std::vector<ReadNode>& read, int64_t read_chunks,
                                            const AnswerOptions& options,
                                            const std::function<bool(const std::string&)>& on_delta) {
  return Guard([&] {
    c10::InferenceMode guard;
    const SharedLLM& s = *model_->shared;
    const auto& weight = model_->lm->model->embed_tokens->weight;
    std::vector<EncodedNode> nodes;
    const int64_t kv_heads = model_->config.num_key_value_heads;
    const std::vector<at::Tensor> index = HeadIndex(read_heads_, kv_heads, weight.device());
    auto load = [&](const NodeRecord& r) { return FromRecord(r, weight.device(), weight.scalar_type()); };
    for (const ReadNode& r : read) {
      EncodedNode node = load(r.record);
      if (!r.left.empty()) {  // complete the parent from its left chain, deepest first
        EncodedNode below = load(r.left.back());
        for (size_t c = r.left.size() - 1; c-- > 0;) below = WithSharedRows(s, load(r.left[c]), below);
        node = WithSharedRows(s, std::move(node), below);
      }
      node.chunk = r.chunk_position;  // positions run across documents
      Check(node.k.size() == read_heads_.size(), "stored node has " + std::to_string(node.k.size()) +
                                                     " layers, the model reads " +
                                                     std::to_string(read_heads_.size()));
      for (size_t j = 0; j < node.k.size(); ++j) {
        const int64_t stored = node.k[j].size(0);
        if (stored == kv_heads) continue;  // every head stored
        Check(stored == static_cast<int64_t>(read_heads_[j].size()),
              "stored node has " + std::to_string(stored) + " key/value heads in layer " +
                  std::to_string(j) + "; the model reads " + std::to_string(read_heads_[j].size()));
        // The heads nobody reads come back as zeros (their query heads' outputs are dropped).
        auto full_k = at::zeros({kv_heads, node.k[j].size(1), node.k[j].size(2)}, node.k[j].options());
        auto full_v = at::zeros_like(full_k);
        node.k[j] = full_k.index_copy_(0, index[j], node.k[j]);
        node.v[j] = full_v.index_copy_(0, index[j], node.v[j]);
      }
      nodes.push_back(std::move(node));
    }
    std::vector<const EncodedNode*> ptrs;
    AnswerResult result;
    for (const auto& n : nodes) {
      ptrs.push_back(&n);
      result.context_positions += n.k[0].size(1);
    }
    InjectionContext context = s.MakeContext(ptrs, read_chunks);
    SamplingOptions sampling;
    sampling.max_tokens = options.max_tokens;
    sampling.temperature = options.temperature;
    sampling.top_k = options.top_k;
    sampling.top_p = options.top_p;
    sampling.seed = options.seed;
    sampling.stop = options.stop;
    Decoder decoder(model_->lm, &context);
    GenerationResult g = decoder.Generate(prompt_ids, sampling, model_->tokenizer.get(), on_delta);
    result.finish_reason = FinishReasonName(g.finish);
    result.prompt_tokens = g.prompt_tokens;
    result.completion_tokens = static_cast<int64_t>(g.tokens.size());
    result.time_to_first_token_seconds = g.prefill_seconds;
    result.decode_seconds = g.decode_seconds;
    return result;
  });
}

}  // namespace sharedllm::service

#include "eval/efficiency.h"

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <random>
#include <sstream>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#if defined(SHAREDLLM_WITH_CUDA)
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "llm/decoder.h"
#include "llm/errors.h"
#include "llm/layers.h"
#include "llm/llama.h"
#include "llm/rope.h"
#include "sharedllm/loaded_model.h"
#include "llm/safetensors.h"

namespace sharedllm {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Waits for queued device work (a no-op on the CPU): reading one element synchronises CUDA.
void Sync(const at::Tensor& t) {
  if (t.defined() && t.numel() > 0 && !t.device().is_cpu()) t.reshape({-1})[0].item<float>();
}

int64_t Greedy(const at::Tensor& logits) { return logits.argmax(-1).item<int64_t>(); }

std::string NodeName(const char* kind, size_t chunk, size_t node) {
  return std::string(kind) + "." + std::to_string(chunk) + "." + std::to_string(node);
}

template <typename F>
double MedianSeconds(int repeats, F&& fn) {
  fn();  // warm-up
  std::vector<double> t;
  for (int i = 0; i < std::max(1, repeats); ++i) {
    const auto t0 = Clock::now();
    fn();
    t.push_back(Since(t0));
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Decodes `steps` tokens after `first` (greedy, EOS ignored); returns seconds.
double DecodeSteps(Decoder& decoder, KVCache& cache, int64_t first, int64_t steps) {
  const auto t0 = Clock::now();
  int64_t next = first;
  for (int64_t i = 0; i < steps; ++i) next = Greedy(decoder.DecodeOneToken(next, cache));
  return Since(t0);
}

}  // namespace

// ---- FLOP counting ----------------------------------------------------------------------------

double LayerMatmulFlopsPerToken(const ModelConfig& c) {
  const double q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  const double h = c.hidden_size;
  return 2.0 * (h * q + 2 * h * kv + q * h + 3 * h * c.intermediate_size);
}

double SelfAttentionFlops(const ModelConfig& c, int64_t tokens, int64_t past) {
  const double t = tokens;
  const double keys = t * past + t * (t + 1) / 2;  // token i of the new ones sees past + i + 1 keys
  return 4.0 * c.num_attention_heads * c.head_dim * keys;
}

double CrossAttentionFlops(const ModelConfig& c, int64_t tokens, int64_t context) {
  const double q = c.num_attention_heads * c.head_dim;
  return 2.0 * tokens * (2 * c.hidden_size * q) + 4.0 * q * tokens * context;
}

double LmHeadFlops(const ModelConfig& c, int64_t rows) {
  return 2.0 * rows * c.hidden_size * c.vocab_size;
}

double LowerModelFlops(const ModelConfig& c, int64_t layers, const std::vector<int64_t>& lengths) {
  // ForwardLower runs the layers below the top one in full; the top one only projects its keys and
  // values (its output feeds nothing), unless it is the only one (its output is the search vector).
  const int64_t full = layers > 1 ? layers - 1 : layers;
  const double top_kv = layers > 1 ? 2.0 * 2 * c.hidden_size * c.num_key_value_heads * c.head_dim : 0;
  double f = 0;
  for (int64_t l : lengths) f += full * (LayerMatmulFlopsPerToken(c) * l + SelfAttentionFlops(c, l, 0)) + top_kv * l;
  return f;
}

double EncodeFlops(const ModelConfig& c, const SharedLLMConfig& s, const std::vector<int64_t>& lengths) {
  const int64_t m = s.num_injection_layers;
  if (!s.SplitLower()) return LowerModelFlops(c, m, lengths);
  return LowerModelFlops(c, s.CopiedLayers(), lengths) + LowerModelFlops(c, m, lengths);
}

double UpperForwardFlops(const ModelConfig& c, int64_t injection_layers, int64_t tokens,
                         int64_t past, int64_t context) {
  double f = c.num_hidden_layers * (LayerMatmulFlopsPerToken(c) * tokens + SelfAttentionFlops(c, tokens, past));
  if (context > 0) f += injection_layers * CrossAttentionFlops(c, tokens, context);
  return f + LmHeadFlops(c, 1);
}

double DecodeFlops(const ModelConfig& c, int64_t injection_layers, int64_t past, int64_t steps,
                   int64_t context) {
  double f = 0;
  for (int64_t i = 0; i < steps; ++i) f += UpperForwardFlops(c, injection_layers, 1, past + i, context);
  return f;
}

// ---- Tree shapes ------------------------------------------------------------------------------

std::vector<int64_t> TreeShape::NodeLengths() const {
  std::vector<int64_t> out;
  for (const auto& chunk : nodes) {
    for (const auto& n : chunk) out.push_back(n.length());
  }
  return out;
}

TreeShape StaticTreeShape(const SharedLLMConfig& s, int64_t length) {
  TreeShape shape;
  shape.spans = ChunkSpans(length, s.chunk_size, int64_t{1} << s.tree_depth);
  for (const auto& [b, e] : shape.spans) shape.nodes.push_back(ChunkTree::Build(e - b, s.tree_depth).AllNodes());
  return shape;
}

int64_t KeptPositions(const SharedLLMConfig& s, const TreeNode& node) {
  return KeptLength(node.length(), s.alphas[node.level - 1]);
}

std::vector<int64_t> StoredPositions(const SharedLLMConfig& s, const std::vector<TreeNode>& nodes) {
  std::vector<int64_t> out = SharedRowCounts(s, nodes);
  for (size_t i = 0; i < nodes.size(); ++i) out[i] = KeptPositions(s, nodes[i]) - out[i];
  return out;
}

int64_t PreservedContextPositions(const SharedLLMConfig& s, const TreeShape& shape) {
  int64_t total = 0;
  for (size_t c = 0; c < shape.nodes.size(); ++c) {
    const ChunkTree tree = ChunkTree::Build(shape.spans[c].second - shape.spans[c].first, s.tree_depth);
    for (const TreeNode& n : PreservedNodes(tree, AlwaysRight)) total += KeptPositions(s, n);
  }
  return total;
}

std::vector<int64_t> DynamicTreeLengths(const SharedLLMConfig& s, const TreeShape& shape) {
  std::vector<int64_t> out;
  for (size_t c = 0; c < shape.nodes.size(); ++c) {
    const ChunkTree tree = ChunkTree::Build(shape.spans[c].second - shape.spans[c].first, s.tree_depth);
    int64_t parent = 0;
    for (int64_t level = 1; level <= s.tree_depth; ++level) {
      out.push_back(tree.node(level, 2 * parent).length());
      out.push_back(tree.node(level, 2 * parent + 1).length());
      parent = 2 * parent + 1;
    }
  }
  return out;
}

// ---- Process memory -----------------------------------------------------------------------------

ProcessMemory ReadProcessMemory() {
  ProcessMemory m;
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key;
    int64_t kb = 0;
    fields >> key >> kb;
    if (key == "VmRSS:") m.rss_bytes = kb * 1024;
    if (key == "VmHWM:") m.peak_bytes = kb * 1024;
  }
  return m;
}

bool ResetPeakMemory() {
  malloc_trim(0);
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.close();
  return static_cast<bool>(out);
}

int64_t DeviceAllocatorPeakBytes(const std::string& device) {
  const at::Device d(device);
  if (!d.is_cuda()) return -1;
#if defined(SHAREDLLM_WITH_CUDA)
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(d.has_index() ? d.index() : 0);
  // Index 0 is StatType::AGGREGATE, whose namespace moved between libtorch 1.13 and 2.x.
  return stats.allocated_bytes[0].peak;
#else
  return -1;
#endif
}

void ResetDeviceAllocatorPeak(const std::string& device) {
  const at::Device d(device);
  if (!d.is_cuda()) return;
#if defined(SHAREDLLM_WITH_CUDA)
  c10::cuda::CUDACachingAllocator::resetPeakStats(d.has_index() ? d.index() : 0);
#endif
}

// ---- Phases -----------------------------------------------------------------------------------

const char* PhaseName(EfficiencyPhase p) {
  switch (p) {
    case EfficiencyPhase::kIngest: return "ingest";
    case EfficiencyPhase::kAsk: return "ask";
    case EfficiencyPhase::kRebuild: return "rebuild";
    case EfficiencyPhase::kFullAttention: return "full";
    case EfficiencyPhase::kStoredCache: return "cached";
  }
  return "?";
}

EfficiencyPhase PhaseFromName(const std::string& name) {
  for (auto p : {EfficiencyPhase::kIngest, EfficiencyPhase::kAsk, EfficiencyPhase::kRebuild,
                 EfficiencyPhase::kFullAttention, EfficiencyPhase::kStoredCache}) {
    if (name == PhaseName(p)) return p;
  }
  throw ModelError("unknown efficiency phase '" + name + "' (ingest, ask, rebuild, full)");
}

std::vector<int64_t> SyntheticTokens(int64_t length, int64_t vocab, uint64_t seed) {
  Check(vocab > 3, "vocabulary too small for synthetic tokens");
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> id(3, vocab - 1);
  std::vector<int64_t> out(length);
  for (auto& t : out) t = id(rng);
  return out;
}

PhaseResult RunPhase(LoadedModel& m, EfficiencyPhase phase, const PhaseInput& in) {
  Check(m.shared != nullptr, "the efficiency evaluation needs a SharedLLM model");
  Check(!in.question.empty(), "the question is empty");
  c10::InferenceMode guard;
  const SharedLLM& s = *m.shared;
  const ModelConfig& c = m.config;
  const int64_t layers_m = s.config().num_injection_layers;
  const int64_t length = static_cast<int64_t>(in.document.size());
  const int64_t q = static_cast<int64_t>(in.question.size());
  const auto device = m.lm->model->embed_tokens->weight.device();
  const auto dtype = m.lm->model->embed_tokens->weight.scalar_type();
  PhaseResult r;
  r.decode_tokens = in.decode_tokens;

  if (phase == EfficiencyPhase::kIngest) {
    const auto t0 = Clock::now();
    DocumentTree tree = s.BuildStaticTree(in.document);
    Sync(tree.nodes.back().back().search);
    r.seconds = Since(t0);
    r.peak_bytes = ReadProcessMemory().peak_bytes;
    r.device_peak_bytes = DeviceAllocatorPeakBytes(device.str());
    const TreeShape shape = StaticTreeShape(s.config(), length);
    const auto lengths = shape.NodeLengths();
    r.flops = EncodeFlops(c, s.config(), lengths);
    for (int64_t l : lengths) r.encoded_tokens += l;
    if (!in.tree_file.empty()) {
      // What the store would hold: vectors first (the search reads them all), then K/V.
      NamedTensors vectors, kv;
      for (size_t ci = 0; ci < tree.nodes.size(); ++ci) {
        for (size_t ni = 0; ni < tree.nodes[ci].size(); ++ni) {
          const EncodedNode& e = tree.nodes[ci][ni];
          vectors.emplace_back(NodeName("a", ci, ni), e.search);
          r.tree_record_bytes += e.search.numel() * e.search.element_size();
          for (size_t j = 0; j < e.k.size(); ++j) {
            kv.emplace_back(NodeName("k", ci, ni) + "." + std::to_string(j), e.k[j]);
            kv.emplace_back(NodeName("v", ci, ni) + "." + std::to_string(j), e.v[j]);
            r.tree_record_bytes += 2 * e.k[j].numel() * e.k[j].element_size();
          }
        }
      }
      for (auto& t : kv) vectors.push_back(std::move(t));
      WriteSafetensors(in.tree_file, vectors);
    }
    return r;
  }

  KVCache cache = m.lm->NewCache();
  if (phase == EfficiencyPhase::kFullAttention || phase == EfficiencyPhase::kStoredCache) {
    // Beyond the window the base model reads with linearly interpolated positions (PI); the
    // stored cache was written under the same scaling (the same total length).
    const RotaryEmbedding saved = m.lm->rope;
    const int64_t w = c.max_position_embeddings;
    const int64_t total = length + q + in.decode_tokens;
    if (total > w) {
      ModelConfig scaled = c;
      scaled.rope_scaling = RopeScaling();
      scaled.rope_scaling.type = RopeType::kLinear;
      scaled.rope_scaling.factor = static_cast<double>(total) / w;
      scaled.rope_scaling.original_max_position_embeddings = w;
      m.lm->rope = RotaryEmbedding(scaled);
    }
    try {
      Decoder decoder(m.lm);
      if (phase == EfficiencyPhase::kFullAttention) {
        std::vector<int64_t> all = in.document;
        all.insert(all.end(), in.question.begin(), in.question.end());
        const auto t0 = Clock::now();
        const int64_t first = Greedy(decoder.Prefill(all, cache));
        r.seconds = Since(t0);
        r.first_token = first;
        r.decode_seconds = DecodeSteps(decoder, cache, first, in.decode_tokens);
      } else {
        Check(!in.cache_file.empty(), "the cached phase reads the cache written by the full phase");
        const auto t0 = Clock::now();
        SafetensorsFile file(in.cache_file);
        for (int64_t l = 0; l < cache.num_layers(); ++l) {
          const at::Tensor k = file.tensor("k." + std::to_string(l)).to(device, dtype);
          const at::Tensor v = file.tensor("v." + std::to_string(l)).to(device, dtype);
          Check(k.size(2) == length, "the stored cache is of another document length");
          r.read_bytes += 2 * k.numel() * k.element_size();
          cache.Update(l, k, v);
        }
        cache.Advance(length);
        const int64_t first = Greedy(decoder.Prefill(in.question, cache));
        r.seconds = Since(t0);
        r.first_token = first;
        r.decode_seconds = DecodeSteps(decoder, cache, first, in.decode_tokens);
      }
    } catch (...) {
      m.lm->rope = saved;
      throw;
    }
    m.lm->rope = saved;
    r.peak_bytes = ReadProcessMemory().peak_bytes;
    r.device_peak_bytes = DeviceAllocatorPeakBytes(device.str());
    if (phase == EfficiencyPhase::kStoredCache) {
      r.context_positions = length + q;
      r.flops = UpperForwardFlops(c, 0, q, length, 0);
      r.decode_flops = DecodeFlops(c, 0, length + q, in.decode_tokens, 0);
      return r;
    }
    r.context_positions = length + q;
    r.flops = UpperForwardFlops(c, 0, length + q, 0, 0);
    r.decode_flops = DecodeFlops(c, 0, length + q, in.decode_tokens, 0);
    if (!in.cache_file.empty()) {
      // What prefix caching keeps of the document: every layer's keys and values, as computed.
      NamedTensors tensors;
      for (int64_t l = 0; l < cache.num_layers(); ++l) {
        auto [k, v] = cache.Layer(l);
        tensors.emplace_back("k." + std::to_string(l), k.narrow(2, 0, length).contiguous());
        tensors.emplace_back("v." + std::to_string(l), v.narrow(2, 0, length).contiguous());
        r.cache_bytes += 2 * tensors.back().second.numel() * tensors.back().second.element_size();
      }
      WriteSafetensors(in.cache_file, tensors);
    }
    return r;
  }

  const auto t0 = Clock::now();
  InjectionContext context;
  int64_t num_chunks = 0;
  std::vector<int64_t> encoded_lengths;
  if (phase == EfficiencyPhase::kAsk) {
    Check(!in.tree_file.empty(), "the ask phase reads the tree written by the ingest phase");
    SafetensorsFile file(in.tree_file);
    DocumentTree tree;
    const auto spans = s.Chunks(length);
    for (size_t ci = 0; ci < spans.size(); ++ci) {
      tree.chunks.push_back(ChunkTree::Build(spans[ci].second - spans[ci].first, s.config().tree_depth));
      tree.nodes.emplace_back();
      const auto all = tree.chunks.back().AllNodes();
      for (size_t ni = 0; ni < all.size(); ++ni) {
        EncodedNode e;
        e.chunk = static_cast<int64_t>(ci);
        e.node = all[ni];
        e.search = file.tensor(NodeName("a", ci, ni)).to(device, at::kFloat);
        r.read_bytes += e.search.numel() * e.search.element_size();
        tree.nodes.back().push_back(std::move(e));
      }
    }
    const at::Tensor query = s.QueryVector(in.question);
    auto selected = s.Select(tree, query);
    for (const EncodedNode* p : selected) {
      EncodedNode& e = tree.nodes[p->chunk][ChunkTree::FlatIndex(p->node.level, p->node.index)];
      const std::string base = NodeName("k", p->chunk, ChunkTree::FlatIndex(p->node.level, p->node.index));
      const std::string vbase = NodeName("v", p->chunk, ChunkTree::FlatIndex(p->node.level, p->node.index));
      for (int64_t j = 0; j < layers_m; ++j) {
        e.k.push_back(file.tensor(base + "." + std::to_string(j)).to(device, dtype));
        e.v.push_back(file.tensor(vbase + "." + std::to_string(j)).to(device, dtype));
        r.read_bytes += 2 * e.k.back().numel() * e.k.back().element_size();
      }
    }
    num_chunks = tree.num_chunks();
    context = s.MakeContext(selected, num_chunks);
  } else {
    const at::Tensor query = s.QueryVector(in.question);
    std::vector<EncodedNode> nodes = s.BuildDynamicTree(in.document, query);
    std::vector<const EncodedNode*> selected;
    const auto spans = s.Chunks(length);
    num_chunks = static_cast<int64_t>(spans.size());
    for (const EncodedNode& e : nodes) {
      selected.push_back(&e);
      encoded_lengths.push_back(e.node.length());
      if (e.node.level < s.config().tree_depth) {  // its sibling was encoded too, then expanded
        const auto& span = spans[e.chunk];
        const ChunkTree tree = ChunkTree::Build(span.second - span.first, s.config().tree_depth);
        encoded_lengths.push_back(tree.node(e.node.level, e.node.index ^ 1).length());
      }
    }
    context = s.MakeContext(selected, num_chunks);
  }
  Decoder decoder(m.lm, &context);
  const int64_t first = Greedy(decoder.Prefill(in.question, cache));
  r.seconds = Since(t0);
  r.first_token = first;
  r.decode_seconds = DecodeSteps(decoder, cache, first, in.decode_tokens);
  r.peak_bytes = ReadProcessMemory().peak_bytes;
  r.device_peak_bytes = DeviceAllocatorPeakBytes(device.str());
  r.context_positions = context.k[s.config().InjectionLayers(c.num_hidden_layers)[0]].size(2);
  for (int64_t l : encoded_lengths) r.encoded_tokens += l;
  r.flops = LowerModelFlops(c, 1, {q}) +
            EncodeFlops(c, s.config(), encoded_lengths) +
            UpperForwardFlops(c, layers_m, q, 0, r.context_positions);
  r.decode_flops = DecodeFlops(c, layers_m, q, in.decode_tokens, r.context_positions);
  return r;
}

// ---- Cost model -------------------------------------------------------------------------------

double MeasureMatmulPeak(int64_t n, const std::string& dtype_name, const std::string& device,
                         int repeats) {
  c10::InferenceMode guard;
  ModelConfig dummy;
  const auto dtype = ParseDtype(dtype_name, dummy);
  const auto opts = at::TensorOptions().dtype(dtype).device(at::Device(device));
  auto a = at::randn({n, n}, at::TensorOptions().dtype(at::kFloat)).to(opts);
  auto b = at::randn({n, n}, at::TensorOptions().dtype(at::kFloat)).to(opts);
  const double s = MedianSeconds(repeats, [&] { Sync(at::mm(a, b)); });
  return 2.0 * n * n * n / s;
}

double MeasureMemoryBandwidth(const std::string& device, int repeats) {
  c10::InferenceMode guard;
  const int64_t n = int64_t{16} << 20;  // 64 MiB of float32 per operand
  const auto opts = at::TensorOptions().dtype(at::kFloat).device(at::Device(device));
  auto a = at::ones({n}, opts), b = at::ones({n}, opts), out = at::empty({n}, opts);
  const double s = MedianSeconds(repeats, [&] { Sync(at::add_out(out, a, b)); });
  return 3.0 * 4 * n / s;  // two reads, one write
}

double MeasureModelMatmulRate(const ModelConfig& c, const std::string& dtype_name,
                              const std::string& device, int64_t tokens, int repeats) {
  c10::InferenceMode guard;
  const auto opts = at::TensorOptions().dtype(ParseDtype(dtype_name, c)).device(at::Device(device));
  auto x = at::randn({tokens, c.hidden_size}).to(opts);
  auto w = at::randn({c.intermediate_size, c.hidden_size}).to(opts);
  const double s = MedianSeconds(repeats, [&] { Sync(at::linear(x, w)); });
  return 2.0 * tokens * c.hidden_size * c.intermediate_size / s;
}

double MeasureAttentionElementSeconds(const ModelConfig& c, const std::string& dtype_name,
                                      const std::string& device, int64_t tokens, int repeats) {
  c10::InferenceMode guard;
  const auto opts = at::TensorOptions().dtype(ParseDtype(dtype_name, c)).device(at::Device(device));
  auto q = at::randn({1, c.num_attention_heads, tokens, c.head_dim}).to(opts);
  auto k = at::randn({1, c.num_key_value_heads, tokens, c.head_dim}).to(opts);
  auto v = at::randn({1, c.num_key_value_heads, tokens, c.head_dim}).to(opts);
  const double s = MedianSeconds(repeats, [&] {
    Sync(Attention(q, k, v, CausalMask(0, tokens, 0, at::Device(device))));
  });
  return s / (static_cast<double>(c.num_attention_heads) * tokens * tokens);
}

double MeasureNodeSeconds(const ModelConfig& c, const SharedLLMConfig& s, const std::string& device,
                          int repeats) {
  c10::InferenceMode guard;
  // What Encode does per node and layer once a batch is gathered: a view of its K and V rows.
  const int64_t kept = std::max<int64_t>(1, s.chunk_size / 2 / s.alphas[0]);
  const int64_t n = 256, rows = c.num_key_value_heads * kept;
  auto k = at::randn({n * rows, c.head_dim}).to(at::Device(device));
  auto v = at::randn({n * rows, c.head_dim}).to(at::Device(device));
  std::vector<at::Tensor> out(2 * n);
  const double sec = MedianSeconds(repeats, [&] {
    for (int64_t i = 0; i < n; ++i) {
      out[2 * i] = k.narrow(0, i * rows, rows).view({c.num_key_value_heads, kept, c.head_dim});
      out[2 * i + 1] = v.narrow(0, i * rows, rows).view({c.num_key_value_heads, kept, c.head_dim});
    }
  });
  return sec / n;
}

double MeasureLayerOverhead(const std::string& device, int steps) {
  c10::InferenceMode guard;
  auto per_step = [&](int64_t layers) {
    ModelConfig c;
    c.vocab_size = 32;
    c.hidden_size = 16;
    c.intermediate_size = 16;
    c.num_hidden_layers = layers;
    c.num_attention_heads = 2;
    c.num_key_value_heads = 1;
    c.head_dim = 8;
    c.max_position_embeddings = 4096;
    CausalLM lm(c, at::TensorOptions().dtype(at::kFloat));
    lm->InitRandom(1, 0.02);
    lm->to(at::Device(device));
    lm->eval();
    Decoder decoder(lm);
    return MedianSeconds(3, [&] {
      KVCache cache = lm->NewCache();
      int64_t next = Greedy(decoder.Prefill({3}, cache));
      for (int i = 0; i < steps; ++i) next = Greedy(decoder.DecodeOneToken(next % 32, cache));
    }) / (steps + 1);
  };
  return std::max(0.0, (per_step(3) - per_step(1)) / 2);
}

PlanPrediction PredictPlan(const ModelConfig& c, const SharedLLMConfig& s, int64_t e,
                           int64_t length, int64_t question_tokens, int64_t decode_tokens,
                           const MachineRates& rates) {
  PlanPrediction p;
  const TreeShape shape = StaticTreeShape(s, length);
  Check(!shape.spans.empty(), "the document is shorter than one context tree");
  const int64_t m = s.num_injection_layers, n = c.num_hidden_layers;
  const int64_t hid = c.hidden_size, heads = c.num_attention_heads, kvh = c.num_key_value_heads;
  const int64_t d = c.head_dim, inter = c.intermediate_size, qd = heads * d;
  const int64_t qt = question_tokens;
  p.length = length;
  p.chunks = static_cast<int64_t>(shape.spans.size());
  p.context_positions = PreservedContextPositions(s, shape);
  // Base model + per injection layer the cross-attention's norm, q_proj, o_proj (+ the gate, the
  // sink), + a separate compressor's copy of its bottom layers.
  p.weight_bytes = (c.NumParameters() + m * (hid + 2 * hid * qd) +
                    (s.gate ? m * (hid + 1) * heads : 0) + (s.sink ? m * heads : 0) +
                    s.CopiedLayers() * c.LayerParameters()) * e;
  const int64_t lower_passes = s.LowerLayerPasses();
  const double peak = rates.matmul_flops_per_second, layer = rates.layer_overhead_seconds;
  auto time = [&](double flops, double layer_passes) { return flops / peak + layer_passes * layer; };
  // Activations of one forward of `tokens` tokens (B x T) attending to `keys` keys per sequence of
  // `t` tokens: hidden states, q/k/v, the MLP's three [tokens, I] tensors, and the attention's two
  // live [B, H, T, S] float32 score tensors, the [T, S] causal mask and its repeat over groups.
  auto activations = [&](int64_t tokens, int64_t t, int64_t keys) {
    const int64_t b = std::max<int64_t>(1, tokens / std::max<int64_t>(1, t));
    const int64_t scores = b * heads * t * keys * 4 * 2 + t * keys * 4 * (1 + c.kv_groups());
    return tokens * (4 * hid + 3 * inter + qd + 2 * kvh * d) * e + scores;
  };
  auto cache_bytes = [&](int64_t positions) { return 2 * n * kvh * d * positions * e; };

  // Ingestion: every node of every chunk, batched as Encode batches them (up to 16K tokens per
  // pass, right-padded to the batch's longest node).
  const auto lengths = shape.NodeLengths();
  int64_t stored = 0, working = 0;
  for (size_t ci = 0; ci < shape.nodes.size(); ++ci) {
    for (const TreeNode& node : shape.nodes[ci]) stored += 2 * m * kvh * KeptPositions(s, node) * d * e + hid * 4;
  }
  const auto batches = EncodeBatches(lengths, 16384);
  const int64_t passes = static_cast<int64_t>(batches.size());
  std::vector<int64_t> padded;  // what the lower model runs: every node at its batch's width
  for (const auto& batch : batches) {
    const int64_t l = lengths[batch[0]];
    const int64_t batch_tokens = static_cast<int64_t>(batch.size()) * l;
    padded.insert(padded.end(), batch.size(), l);
    // + the captured K/V of every lower layer and the final-normed first layer of the batch.
    working = std::max(working, activations(batch_tokens, l, l) + batch_tokens * (2 * m * kvh * d + hid) * e);
  }
  p.ingest.flops = EncodeFlops(c, s, padded);
  p.ingest.seconds = time(p.ingest.flops, static_cast<double>(passes * lower_passes)) +
                     static_cast<double>(lengths.size() * lower_passes) * rates.node_seconds;
  p.ingest.memory_bytes = p.weight_bytes + stored + working + length * 8;

  // A question over the built tree: all vectors, the selected nodes' K/V (stored, gathered and
  // rotated: three copies), the question's forward, the cache.
  const int64_t ctx = p.context_positions;
  const int64_t vectors = static_cast<int64_t>(lengths.size()) * hid * 4;
  const int64_t context_bytes = 3 * 2 * m * kvh * ctx * d * e;
  p.ask_ttft.flops = LowerModelFlops(c, 1, {qt}) + UpperForwardFlops(c, m, qt, 0, ctx);
  p.ask_ttft.seconds = time(p.ask_ttft.flops, 1 + n + m) +
                       static_cast<double>(vectors + context_bytes) / rates.memory_bytes_per_second;
  p.ask_ttft.memory_bytes = p.weight_bytes + vectors + context_bytes +
                            activations(qt, qt, qt + ctx) +
                            cache_bytes(2 * (qt + decode_tokens));
  p.ask_decode.flops = DecodeFlops(c, m, qt, decode_tokens, ctx);
  p.ask_decode.seconds = time(p.ask_decode.flops, static_cast<double>(decode_tokens * (n + m)));
  p.ask_tokens_per_second = decode_tokens / p.ask_decode.seconds;

  // Rebuilding the tree for the question: the dynamic tree's nodes through the lower model.
  const auto dynamic = DynamicTreeLengths(s, shape);
  p.rebuild_ttft.flops = p.ask_ttft.flops + EncodeFlops(c, s, dynamic);
  p.rebuild_ttft.seconds =
      time(p.rebuild_ttft.flops, 1 + n + m + static_cast<double>(s.tree_depth * lower_passes));
  int64_t dynamic_tokens = 0;
  for (int64_t l : dynamic) dynamic_tokens += l;
  p.rebuild_ttft.memory_bytes = p.ask_ttft.memory_bytes - vectors +
                                activations(std::min<int64_t>(dynamic_tokens, 16384), dynamic.front(), dynamic.front()) +
                                dynamic_tokens / 4 * 2 * m * kvh * d * e;

  // Full attention over document + question: one prefill of T = L + Q tokens.
  const int64_t t = length + qt;
  p.full_ttft.flops = UpperForwardFlops(c, 0, t, 0, 0);
  // The dense [H, T, T] score matrices cost per element (mask, scores, softmax, weighted sum),
  // measured; the rest is matmul work.
  const double attention_flops = n * SelfAttentionFlops(c, t, 0);
  p.full_ttft.seconds = time(p.full_ttft.flops - attention_flops, n) +
                        n * static_cast<double>(heads) * t * t * rates.attention_element_seconds;
  p.full_ttft.memory_bytes = p.weight_bytes + activations(t, t, t) + cache_bytes(t) + t * 8;
  p.full_decode.flops = DecodeFlops(c, 0, t, decode_tokens, 0);
  p.full_decode.seconds = time(p.full_decode.flops, static_cast<double>(decode_tokens * n)) +
                          static_cast<double>(decode_tokens) * cache_bytes(t) / rates.memory_bytes_per_second;
  p.full_tokens_per_second = decode_tokens / p.full_decode.seconds;
  // Decoding grows the cache past T once: old and doubled buffers live together while copying.
  p.full_decode.memory_bytes = p.weight_bytes + cache_bytes(3 * t);
  p.ask_decode.memory_bytes = p.ask_ttft.memory_bytes;
  return p;
}

}  // namespace sharedllm

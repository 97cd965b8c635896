// The LLaMA forward pass on tiny random seeded models: cached decoding against the full forward,
// sliding windows, batching, GQA, save/load, dtypes, scoring, strict weight loading, and RoPE.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "llm/decoder.h"
#include "llm/errors.h"
#include "llm/llama.h"
#include "llm/rope.h"
#include "sharedllm/loaded_model.h"
#include "llm/safetensors.h"
#include "llm/scoring.h"
#include "llm/weights.h"
#include "tests/model_error.h"
#include "tests/model_util.h"

namespace sharedllm {
namespace {

using test::ErrorOf;
using test::FullLogits;
using test::Ids;
using test::MaxAbsDiff;
using test::SeededIds;
using test::TempDir;
using test::TinyConfig;
using test::TinyModel;

constexpr double kTol = 1e-5;

RuntimeOptions OneThread(const std::string& dtype = "float32") {
  RuntimeOptions o;
  o.threads = 1;
  o.dtype = dtype;
  return o;
}

ModelConfig MistralConfig(int64_t window) {
  ModelConfig c = TinyConfig();
  c.architecture = "MistralForCausalLM";
  c.model_type = "mistral";
  c.sliding_window = window;
  return c;
}

// Prefills `ids` in the given chunk sizes, then decodes the rest one token at a time, checking
// each step's last-position logits against the full forward.
void ExpectCachedMatchesFull(CausalLM lm, const std::vector<int64_t>& ids,
                             const std::vector<int64_t>& chunks) {
  const at::Tensor full = FullLogits(lm, ids);  // [T, V]
  ASSERT_GT(full.std().item<double>(), 0.1) << "logits too flat for the check to mean anything";
  Decoder decoder(lm);
  KVCache cache = lm->NewCache();
  int64_t pos = 0;
  for (int64_t n : chunks) {
    std::vector<int64_t> chunk(ids.begin() + pos, ids.begin() + pos + n);
    const at::Tensor logits = decoder.Prefill(chunk, cache);
    pos += n;
    EXPECT_EQ(cache.length(), pos);
    EXPECT_LT(MaxAbsDiff(logits, full[pos - 1]), kTol) << "after a prefill chunk ending at " << pos;
  }
  for (; pos < static_cast<int64_t>(ids.size()); ++pos) {
    const at::Tensor logits = decoder.DecodeOneToken(ids[pos], cache);
    EXPECT_EQ(cache.length(), pos + 1);
    EXPECT_LT(MaxAbsDiff(logits, full[pos]), kTol) << "decode step at position " << pos;
  }
}

// ---- forward pass and KV cache -----------------------------------------------------------------

// Inputs for the tests of Attention against its definition: 2 samples, 4 query heads reading 2
// key/value heads (grouped), 3 queries, `keys` keys of dimension 8, sample 1's last key masked out,
// a sink logit per query head.
struct AttentionInputs {
  AttentionInputs(uint64_t seed, int64_t keys, double query_scale = 1.0) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    q = at::randn({2, 4, 3, 8}, gen) * query_scale;
    k = at::randn({2, 2, keys, 8}, gen);
    v = at::randn({2, 2, keys, 8}, gen);
    mask = at::zeros({2, 1, 1, keys});
    mask.index_put_({1, 0, 0, keys - 1}, -std::numeric_limits<float>::infinity());
  }
  // Query head h's scaled, masked scores in sample b: [3, keys].
  at::Tensor Scores(int64_t b, int64_t h) const {
    return at::matmul(q[b][h], k[b][h / 2].t()) / std::sqrt(8.0) + mask[b][0];
  }
  at::Tensor q, k, v, mask;
  at::Tensor sink = at::tensor({-1.0f, 0.5f, 2.0f, 8.0f});
};

// Attention's sink against the definition: per query head, softmax over its scores and its own sink
// logit, the sink's value zero. Grouped heads (4 query heads read 2 key/value heads), a key mask.
TEST(ModelTest, AttentionSinkIsAZeroValueKeyPerQueryHead) {
  const AttentionInputs in(5, 5);
  const auto &q = in.q, &k = in.k, &v = in.v, &sink = in.sink, &mask = in.mask;
  const auto out = Attention(q, k, v, mask, sink);
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t h = 0; h < 4; ++h) {
      const auto scores = in.Scores(b, h);
      const auto all = at::cat({scores, at::full({3, 1}, sink[h].item<float>())}, 1);
      const auto p = at::softmax(all, -1).narrow(1, 0, 5);
      EXPECT_TRUE(at::allclose(out[b][h], at::matmul(p, v[b][h / 2]), 1e-5, 1e-6)) << b << " " << h;
    }
  }
  // No sink: the plain softmax.
  EXPECT_FALSE(at::allclose(Attention(q, k, v, mask), out, 1e-3, 1e-3));
}

TEST(ModelTest, LogitsShapeDtypeAndDeterminism) {
  CausalLM lm = TinyModel();
  const auto ids = SeededIds(7, 61, 1);
  const at::Tensor a = FullLogits(lm, ids);
  EXPECT_EQ(a.sizes().vec(), std::vector<int64_t>({7, 61}));
  EXPECT_EQ(a.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::isfinite(a).all().item<bool>());
  EXPECT_TRUE(at::equal(a, FullLogits(lm, ids)));
  // Same seed, same weights; another seed, other weights.
  CausalLM same = TinyModel(TinyConfig(), 1234), other = TinyModel(TinyConfig(), 99);
  EXPECT_TRUE(at::equal(a, FullLogits(same, ids)));
  EXPECT_GT(MaxAbsDiff(a, FullLogits(other, ids)), 1e-2);
}

TEST(ModelTest, CachedDecodingEqualsFullForward) {
  ExpectCachedMatchesFull(TinyModel(), SeededIds(12, 61, 2), {5});
}

TEST(ModelTest, ChunkedPrefillEqualsFullForward) {
  ExpectCachedMatchesFull(TinyModel(), SeededIds(12, 61, 3), {3, 4, 1, 2});
}

TEST(ModelTest, CacheGrowsBeyondInitialCapacity) {
  // 40 positions: the cache starts at 16 and must double twice without losing entries.
  ExpectCachedMatchesFull(TinyModel(), SeededIds(40, 61, 4), {10, 10});
}

TEST(ModelTest, TruncatedCacheReusesPrefix) {
  CausalLM lm = TinyModel();
  auto a = SeededIds(10, 61, 5);
  auto b = a;
  for (size_t i = 6; i < b.size(); ++i) b[i] = (b[i] + 7) % 61;
  Decoder decoder(lm);
  KVCache cache = lm->NewCache();
  decoder.Prefill(a, cache);
  const int64_t bytes = cache.CapacityBytes();
  EXPECT_GT(bytes, 0);
  cache.Truncate(6);
  EXPECT_EQ(cache.length(), 6);
  EXPECT_EQ(cache.CapacityBytes(), bytes);  // keeps its buffers
  const at::Tensor full_b = FullLogits(lm, b);
  const at::Tensor logits = decoder.Prefill({b.begin() + 6, b.end()}, cache);
  EXPECT_LT(MaxAbsDiff(logits, full_b[9]), kTol);
  EXPECT_THROW(cache.Truncate(11), ModelError);
  cache.Clear();
  EXPECT_EQ(cache.length(), 0);
  EXPECT_LT(MaxAbsDiff(decoder.Prefill(b, cache), full_b[9]), kTol);
}

TEST(ModelTest, SlidingWindowCachedEqualsFull) {
  // Window 4 over 14 tokens: the mask's band hides keys from position 4 on.
  ExpectCachedMatchesFull(TinyModel(MistralConfig(4)), SeededIds(14, 61, 6), {3});
  ExpectCachedMatchesFull(TinyModel(MistralConfig(4)), SeededIds(14, 61, 7), {2, 5, 6});
}

TEST(ModelTest, SlidingWindowChangesLogitsOnlyBeyondTheWindow) {
  const int64_t window = 4;
  CausalLM windowed = TinyModel(MistralConfig(window));
  CausalLM unlimited = TinyModel(MistralConfig(0));  // same seed: same weights
  const auto ids = SeededIds(12, 61, 8);
  const at::Tensor a = FullLogits(windowed, ids), b = FullLogits(unlimited, ids);
  for (int64_t t = 0; t < 12; ++t) {
    const double diff = MaxAbsDiff(a[t], b[t]);
    if (t < window) EXPECT_LT(diff, 1e-6) << "position " << t << " sees no more than the window";
    else EXPECT_GT(diff, 1e-4) << "position " << t << " must lose its oldest keys";
  }
}

TEST(ModelTest, CausalMask) {
  const float inf = std::numeric_limits<float>::infinity();
  const at::Device cpu(at::kCPU);
  // Queries at 2, 3, 4 over keys 0..4.
  const at::Tensor m = CausalMask(2, 3, 0, cpu);
  ASSERT_EQ(m.sizes().vec(), std::vector<int64_t>({3, 5}));
  const at::Tensor expected = at::tensor(std::vector<float>{0, 0, 0, -inf, -inf,  //
                                                            0, 0, 0, 0, -inf,     //
                                                            0, 0, 0, 0, 0})
                                  .view({3, 5});
  EXPECT_TRUE(at::equal(m, expected)) << m;
  // Window 2: a query sees itself and one key before it.
  const at::Tensor w = CausalMask(2, 3, 2, cpu);
  const at::Tensor banded = at::tensor(std::vector<float>{-inf, 0, 0, -inf, -inf,  //
                                                          -inf, -inf, 0, 0, -inf,  //
                                                          -inf, -inf, -inf, 0, 0})
                                .view({3, 5});
  EXPECT_TRUE(at::equal(w, banded)) << w;
  // One query that may see everything needs no mask; past the window it does.
  EXPECT_FALSE(CausalMask(5, 1, 0, cpu).defined());
  EXPECT_FALSE(CausalMask(2, 1, 3, cpu).defined());
  const at::Tensor late = CausalMask(5, 1, 3, cpu);
  ASSERT_TRUE(late.defined());
  EXPECT_TRUE(at::equal(late, at::tensor(std::vector<float>{-inf, -inf, -inf, 0, 0, 0}).view({1, 6})));
}

TEST(ModelTest, BatchOfTwoEqualsEachRowAlone) {
  CausalLM lm = TinyModel();
  const auto a = SeededIds(9, 61, 9), b = SeededIds(9, 61, 10);
  c10::NoGradGuard no_grad;
  const at::Tensor both = lm->forward(at::cat({Ids(a), Ids(b)}, 0));  // [2, 9, V]
  EXPECT_LT(MaxAbsDiff(both[0], FullLogits(lm, a)), kTol);
  EXPECT_LT(MaxAbsDiff(both[1], FullLogits(lm, b)), kTol);
  EXPECT_GT(MaxAbsDiff(both[0], both[1]), 1e-2);
  // Batched cached decoding too.
  KVCache cache = lm->NewCache();
  const at::Tensor batch = at::cat({Ids(a), Ids(b)}, 0);
  lm->forward(batch.narrow(1, 0, 6), &cache);
  for (int64_t t = 6; t < 9; ++t) {
    const at::Tensor step = lm->forward(batch.narrow(1, t, 1), &cache);  // [2, 1, V]
    EXPECT_LT(MaxAbsDiff(step.select(1, 0), both.select(1, t)), kTol) << t;
  }
}

TEST(ModelTest, GroupedQueryHeadsShareKvHeadsLikeRepeatKv) {
  // A GQA model (4 query heads, 2 kv heads) equals the MHA model whose k/v projections repeat each
  // kv head for its group of consecutive query heads (HF repeat_kv: query head h reads h / 2).
  ModelConfig gqa_config = TinyConfig();
  ModelConfig mha_config = gqa_config;
  mha_config.num_key_value_heads = 4;
  CausalLM gqa = TinyModel(gqa_config);
  CausalLM mha(mha_config, at::TensorOptions().dtype(at::kFloat));
  c10::NoGradGuard no_grad;
  auto src = gqa->named_parameters();
  for (auto& p : mha->named_parameters()) {
    at::Tensor w = src[p.key()];
    if (p.key().find("k_proj") != std::string::npos || p.key().find("v_proj") != std::string::npos) {
      w = w.view({2, 8, -1}).repeat_interleave(2, 0).reshape(p.value().sizes());
    }
    p.value().copy_(w);
  }
  const auto ids = SeededIds(10, 61, 11);
  EXPECT_LT(MaxAbsDiff(FullLogits(gqa, ids), FullLogits(mha, ids)), kTol);
}

TEST(ModelTest, BiasesTakePartAndCacheStillMatches) {
  ModelConfig c = TinyConfig();
  c.architecture = "Qwen2ForCausalLM";
  c.model_type = "qwen2";
  c.qkv_bias = true;
  CausalLM lm = TinyModel(c);
  const auto ids = SeededIds(10, 61, 12);
  const at::Tensor before = FullLogits(lm, ids);
  {
    c10::NoGradGuard no_grad;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
    for (auto& p : lm->named_parameters()) {
      if (p.key().size() > 5 && p.key().substr(p.key().size() - 5) == ".bias") {
        EXPECT_EQ(p.value().abs().sum().item<double>(), 0.0) << "InitRandom zeroes biases";
        p.value().copy_(at::normal(0.0, 0.5, p.value().sizes(), gen));
      }
    }
  }
  EXPECT_GT(MaxAbsDiff(FullLogits(lm, ids), before), 1e-3);
  ExpectCachedMatchesFull(lm, ids, {4});
}

TEST(ModelTest, TiedModelUsesEmbeddingsAsLmHead) {
  ModelConfig c = TinyConfig();
  c.tie_word_embeddings = true;
  CausalLM lm = TinyModel(c);
  EXPECT_TRUE(lm->lm_head.is_empty());
  for (const auto& p : lm->named_parameters()) EXPECT_EQ(p.key().find("lm_head"), std::string::npos);
  c10::NoGradGuard no_grad;
  const at::Tensor hidden = lm->ForwardHidden(Ids(SeededIds(5, 61, 13)));
  EXPECT_LT(MaxAbsDiff(lm->Logits(hidden), at::matmul(hidden, lm->model->embed_tokens->weight.t())),
            1e-6);
}

TEST(ModelTest, ConstructorValidatesConfig) {
  ModelConfig c = TinyConfig();
  c.num_key_value_heads = 3;
  const std::string msg = ErrorOf([&] { CausalLM lm(c, at::TensorOptions()); });
  EXPECT_NE(msg.find("must divide"), std::string::npos) << msg;
}

// ---- scoring -----------------------------------------------------------------------------------

TEST(ScoringTest, TokenNllEqualsLogSoftmaxGather) {
  CausalLM lm = TinyModel();
  const auto ids = SeededIds(11, 61, 14);
  const std::vector<double> nll = TokenNll(lm, ids);
  ASSERT_EQ(nll.size(), ids.size() - 1);
  const at::Tensor logp = at::log_softmax(FullLogits(lm, ids).to(at::kDouble), -1);
  for (size_t i = 0; i + 1 < ids.size(); ++i) {
    const double expected = -logp[i][ids[i + 1]].item<double>();
    EXPECT_NEAR(nll[i], expected, 1e-9) << i;
    EXPECT_GT(nll[i], 0.0);
  }
  // Not uniform: the model is not trivially ln(vocab).
  double spread = 0;
  for (double x : nll) spread = std::max(spread, std::abs(x - std::log(61.0)));
  EXPECT_GT(spread, 0.05);
}

TEST(ScoringTest, RejectsBadInput) {
  CausalLM lm = TinyModel();
  EXPECT_NE(ErrorOf([&] { TokenNll(lm, {5}); }).find("at least two tokens"), std::string::npos);
  EXPECT_NE(ErrorOf([&] { TokenNll(lm, {5, 61}); }).find("token id 61 is outside the vocabulary [0, 61)"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { TokenNll(lm, {-1, 3}); }).find("token id -1"), std::string::npos);
}

// ---- saving, loading, dtypes -------------------------------------------------------------------

TEST(SaveLoadTest, RoundTripGivesIdenticalLogits) {
  TempDir dir;
  CausalLM lm = TinyModel();
  SaveModel(lm, dir.path());
  EXPECT_TRUE(test::Exists(dir / "config.json"));
  EXPECT_TRUE(test::Exists(dir / "model.safetensors"));
  auto loaded = LoadModel(dir.path(), OneThread());
  EXPECT_EQ(loaded->dir, dir.path());
  EXPECT_EQ(loaded->config.ToJsonText(), lm->config.ToJsonText());
  EXPECT_EQ(loaded->tokenizer, nullptr);
  for (const auto& p : loaded->lm->parameters()) EXPECT_FALSE(p.requires_grad());
  const auto ids = SeededIds(9, 61, 15);
  EXPECT_TRUE(at::equal(FullLogits(loaded->lm, ids), FullLogits(lm, ids)));
}

TEST(SaveLoadTest, ShardedCheckpointLoads) {
  TempDir dir;
  CausalLM lm = TinyModel();
  SaveModel(lm, dir.path());
  ::remove((dir / "model.safetensors").c_str());
  WriteCheckpoint(dir.path(), CollectParameters(*lm), /*max_shard_bytes=*/8 << 10);
  ASSERT_TRUE(test::Exists(dir / "model.safetensors.index.json"));
  std::set<std::string> shards;
  const auto index = nlohmann::json::parse(test::ReadFile(dir / "model.safetensors.index.json"));
  for (const auto& [name, shard] : index["weight_map"].items()) shards.insert(shard.get<std::string>());
  ASSERT_GE(shards.size(), 3u) << "expected several shards";
  auto loaded = LoadModel(dir.path(), OneThread());
  const auto ids = SeededIds(9, 61, 16);
  EXPECT_TRUE(at::equal(FullLogits(loaded->lm, ids), FullLogits(lm, ids)));
}

TEST(SaveLoadTest, Bfloat16RuntimeIsCloseToFloat32) {
  TempDir dir;
  CausalLM lm = TinyModel();
  SaveModel(lm, dir.path());
  auto bf16 = LoadModel(dir.path(), OneThread("bfloat16"));
  for (const auto& p : bf16->lm->parameters()) ASSERT_EQ(p.scalar_type(), at::kBFloat16);
  const auto ids = SeededIds(12, 61, 17);
  const at::Tensor ref = FullLogits(lm, ids);
  const at::Tensor got = FullLogits(bf16->lm, ids);
  EXPECT_EQ(got.scalar_type(), at::kFloat);  // logits are float32 whatever the weights
  const double diff = MaxAbsDiff(got, ref);
  EXPECT_GT(diff, 0.0) << "bf16 weights should not give bit-identical logits";
  EXPECT_LT(diff, 0.1 * ref.abs().max().item<double>()) << "bf16 logits too far from float32";
  // The ranking mostly survives.
  const double agree = (got.argmax(-1) == ref.argmax(-1)).to(at::kDouble).mean().item<double>();
  EXPECT_GE(agree, 0.75);
}

// runtime.h offers float16 (and `auto` picks it for float16 checkpoints such as Llama-2's). On the
// CPU it must either run, close to float32, or be refused at load time with a ModelError, not load
// and then fail in the first matmul.
TEST(SaveLoadTest, Float16RuntimeRunsOrIsRefusedAtLoad) {
  TempDir dir;
  CausalLM lm = TinyModel();
  SaveModel(lm, dir.path(), at::kHalf);
  const auto ids = SeededIds(12, 61, 19);
  const at::Tensor ref = FullLogits(lm, ids);
  for (const char* dtype : {"float16", "auto"}) {
    SCOPED_TRACE(dtype);
    std::shared_ptr<LoadedModel> f16;
    try {
      f16 = LoadModel(dir.path(), OneThread(dtype));
    } catch (const ModelError& e) {
      EXPECT_NE(std::string(e.what()).find("float16"), std::string::npos) << e.what();
      continue;
    }
    try {
      const at::Tensor got = FullLogits(f16->lm, ids);
      EXPECT_LT(MaxAbsDiff(got, ref), 0.1 * ref.abs().max().item<double>());
    } catch (const std::exception& e) {
      ADD_FAILURE() << "loaded as float16 but the forward pass fails: " << e.what();
    }
  }
}

TEST(SaveLoadTest, SavedDtypeAndAuto) {
  TempDir dir;
  CausalLM lm = TinyModel();
  SaveModel(lm, dir.path(), at::kBFloat16);
  EXPECT_NE(test::ReadFile(dir / "config.json").find("\"torch_dtype\": \"bfloat16\""), std::string::npos);
  SafetensorsFile f(dir / "model.safetensors");
  EXPECT_EQ(f.tensor("model.embed_tokens.weight").scalar_type(), at::kBFloat16);
  auto automatic = LoadModel(dir.path(), OneThread("auto"));
  EXPECT_EQ(automatic->lm->model->embed_tokens->weight.scalar_type(), at::kBFloat16);
  auto f32 = LoadModel(dir.path(), OneThread("float32"));
  EXPECT_EQ(f32->lm->model->embed_tokens->weight.scalar_type(), at::kFloat);
  // float32 weights read from bf16 are the bf16-rounded values exactly.
  EXPECT_TRUE(at::equal(f32->lm->model->embed_tokens->weight,
                        lm->model->embed_tokens->weight.to(at::kBFloat16).to(at::kFloat)));
  EXPECT_NE(ErrorOf([&] { LoadModel(dir.path(), OneThread("int8")); }).find("unknown dtype 'int8'"),
            std::string::npos);
}

TEST(SaveLoadTest, TiedModelIgnoresLmHeadInFile) {
  TempDir dir;
  ModelConfig c = TinyConfig();
  c.tie_word_embeddings = true;
  CausalLM lm = TinyModel(c);
  SaveModel(lm, dir.path());
  NamedTensors tensors = CollectParameters(*lm);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(8);
  tensors.emplace_back("lm_head.weight", at::normal(0.0, 1.0, {61, 32}, gen));  // not the embeddings
  WriteSafetensors(dir / "model.safetensors", tensors);
  auto loaded = LoadModel(dir.path(), OneThread());
  const auto ids = SeededIds(8, 61, 18);
  EXPECT_TRUE(at::equal(FullLogits(loaded->lm, ids), FullLogits(lm, ids)));
}

TEST(SaveLoadTest, UntiedModelWithoutLmHeadFails) {
  TempDir dir;
  ModelConfig tied = TinyConfig();
  tied.tie_word_embeddings = true;
  CausalLM lm = TinyModel(tied);
  SaveModel(lm, dir.path());
  test::WriteFile(dir / "config.json", TinyConfig().ToJsonText());  // claims an lm_head
  const std::string msg = ErrorOf([&] { LoadModel(dir.path(), OneThread()); });
  EXPECT_NE(msg.find("missing:    lm_head.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find(dir.path()), std::string::npos) << msg;
}

TEST(SaveLoadTokenizerTest, TokenizerLargerThanVocabIsRejected) {
  TempDir dir;
  std::string why;
  const std::string spm = test::TrainTokenizer(dir, &why);
  if (spm.empty()) GTEST_SKIP() << why;
  CausalLM lm = TinyModel();  // vocab 61 < the tokenizer's 320 pieces
  const std::string model_dir = dir.Mkdir("m");
  SaveModel(lm, model_dir);
  test::WriteFile(model_dir + "/tokenizer.model", test::ReadFile(spm));
  const std::string msg = ErrorOf([&] { LoadModel(model_dir, OneThread()); });
  EXPECT_NE(msg.find("pieces but the model only 61"), std::string::npos) << msg;
}

// ---- strict weight loading ---------------------------------------------------------------------

TEST(LoadParametersTest, ReportsMissingUnexpectedAndMisshapedTogether) {
  TempDir dir;
  CausalLM lm = TinyModel();
  NamedTensors tensors;
  for (auto& [name, t] : CollectParameters(*lm)) {
    if (name == "model.layers.1.mlp.up_proj.weight") continue;              // missing
    if (name == "model.norm.weight") t = at::ones({31});                     // mis-shaped
    tensors.emplace_back(name, t);
  }
  tensors.emplace_back("model.layers.0.extra.weight", at::ones({2}));       // unexpected
  tensors.emplace_back("model.layers.0.self_attn.rotary_emb.inv_freq", at::ones({4}));  // ignorable
  WriteSafetensors(dir / "model.safetensors", tensors);

  CausalLM fresh = TinyModel(TinyConfig(), 77);
  const at::Tensor before = fresh->model->embed_tokens->weight.clone();
  const std::string msg = ErrorOf([&] {
    LoadParameters(*fresh, CheckpointReader(dir.path()), "CKPT");
  });
  EXPECT_NE(msg.find("CKPT does not match the model (1 missing, 1 unexpected, 1 mis-shaped)"),
            std::string::npos) << msg;
  EXPECT_NE(msg.find("missing:    model.layers.1.mlp.up_proj.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unexpected: model.layers.0.extra.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("mis-shaped: model.norm.weight: checkpoint [31], model [32]"), std::string::npos)
      << msg;
  EXPECT_EQ(msg.find("inv_freq"), std::string::npos) << msg;
  EXPECT_NE(msg.find("hint"), std::string::npos) << msg;
  // Nothing was half-loaded.
  EXPECT_TRUE(at::equal(fresh->model->embed_tokens->weight, before));
}

TEST(LoadParametersTest, LoadsAndConvertsIgnoringInvFreq) {
  TempDir dir;
  CausalLM lm = TinyModel();
  NamedTensors tensors = CollectParameters(*lm, nullptr, at::kHalf);
  for (int layer = 0; layer < 2; ++layer) {
    tensors.emplace_back("model.layers." + std::to_string(layer) + ".self_attn.rotary_emb.inv_freq",
                         at::ones({4}));
  }
  WriteSafetensors(dir / "model.safetensors", tensors);
  CausalLM fresh = TinyModel(TinyConfig(), 77);
  LoadParameters(*fresh, CheckpointReader(dir.path()), "CKPT");
  auto want = lm->named_parameters();
  for (const auto& p : fresh->named_parameters()) {
    EXPECT_EQ(p.value().scalar_type(), at::kFloat);
    EXPECT_TRUE(at::equal(p.value(), want[p.key()].to(at::kHalf).to(at::kFloat))) << p.key();
  }
}

TEST(LoadParametersTest, FilterAndIgnore) {
  TempDir dir;
  CausalLM lm = TinyModel();
  NamedTensors tensors = CollectParameters(*lm, [](const std::string& n) {
    return n.rfind("model.embed_tokens", 0) == 0;
  });
  ASSERT_EQ(tensors.size(), 1u);
  tensors.emplace_back("vision_tower.weight", at::ones({3}));
  WriteSafetensors(dir / "model.safetensors", tensors);
  CausalLM fresh = TinyModel(TinyConfig(), 77);
  const at::Tensor head_before = fresh->lm_head->weight.clone();
  const auto only_embed = [](const std::string& n) { return n.rfind("model.embed_tokens", 0) == 0; };
  EXPECT_NE(ErrorOf([&] { LoadParameters(*fresh, CheckpointReader(dir.path()), "C", only_embed); })
                .find("unexpected: vision_tower.weight"),
            std::string::npos);
  LoadParameters(*fresh, CheckpointReader(dir.path()), "C", only_embed,
                 [](const std::string& n) { return n == "vision_tower.weight"; });
  EXPECT_TRUE(at::equal(fresh->model->embed_tokens->weight, lm->model->embed_tokens->weight));
  EXPECT_TRUE(at::equal(fresh->lm_head->weight, head_before));  // filtered out: untouched
}

// ---- rotary embeddings -------------------------------------------------------------------------

ModelConfig RopeConfig(RopeType type, double factor) {
  ModelConfig c = TinyConfig();
  c.head_dim = 16;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 2;
  c.rope_scaling.type = type;
  c.rope_scaling.factor = factor;
  return c;
}

at::Tensor Positions(std::vector<int64_t> p) { return at::tensor(p, at::TensorOptions().dtype(at::kLong)); }

// q at position m, k at position n, both rotated: their dot product.
double RotatedDot(const RotaryEmbedding& rope, const at::Tensor& q, const at::Tensor& k, int64_t m,
                  int64_t n) {
  auto [cm, sm] = rope.CosSin(Positions({m}), m + 1);
  auto [cn, sn] = rope.CosSin(Positions({n}), n + 1);
  return (ApplyRotary(q, cm, sm) * ApplyRotary(k, cn, sn)).sum().item<double>();
}

TEST(RopeTest, DefaultInverseFrequencies) {
  RotaryEmbedding rope(RopeConfig(RopeType::kDefault, 1.0));
  const at::Tensor inv = rope.InverseFrequencies(10);
  ASSERT_EQ(inv.numel(), 8);
  EXPECT_EQ(inv.scalar_type(), at::kDouble);
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(inv[i].item<double>(), std::pow(10000.0, -2.0 * i / 16), 1e-15);
  auto [cos, sin] = rope.CosSin(Positions({0, 3}), 4);
  EXPECT_EQ(cos.sizes().vec(), std::vector<int64_t>({2, 16}));
  EXPECT_EQ(cos.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(cos[0], at::ones({16})));
  EXPECT_TRUE(at::equal(sin[0], at::zeros({16})));
  EXPECT_NEAR(cos[1][1].item<double>(), std::cos(3 * std::pow(10000.0, -2.0 / 16)), 1e-7);
  EXPECT_TRUE(at::equal(cos.narrow(1, 0, 8), cos.narrow(1, 8, 8)));  // rotate-half layout
  EXPECT_DOUBLE_EQ(rope.attention_scale(), 1.0);
}

TEST(RopeTest, ApplyRotaryPreservesPairNorms) {
  RotaryEmbedding rope(RopeConfig(RopeType::kDefault, 1.0));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(21);
  const at::Tensor x = at::randn({2, 3, 5, 16}, gen);
  auto [cos, sin] = rope.CosSin(Positions({0, 1, 7, 100, 1000}), 1001);
  const at::Tensor y = ApplyRotary(x, cos, sin);
  ASSERT_EQ(y.sizes(), x.sizes());
  auto pair_norm = [](const at::Tensor& t) {
    return (t.narrow(-1, 0, 8).pow(2) + t.narrow(-1, 8, 8).pow(2)).sqrt();
  };
  EXPECT_LT(MaxAbsDiff(pair_norm(y), pair_norm(x)), 1e-5);
  EXPECT_LT(MaxAbsDiff(y.select(2, 0), x.select(2, 0)), 1e-7);  // position 0: identity
  EXPECT_GT(MaxAbsDiff(y.select(2, 2), x.select(2, 2)), 1e-2);   // others rotate
  // Pairs are (i, i + d/2): a vector living in dims 0 and 8 stays there.
  at::Tensor e = at::zeros({1, 1, 1, 16});
  e[0][0][0][0].fill_(1.0);
  auto [c7, s7] = rope.CosSin(Positions({7}), 8);
  const at::Tensor r = ApplyRotary(e, c7, s7).view({16});
  EXPECT_NEAR(r[0].item<double>(), std::cos(7.0), 1e-6);
  EXPECT_NEAR(r[8].item<double>(), std::sin(7.0), 1e-6);
  EXPECT_EQ(r.narrow(0, 1, 7).abs().max().item<double>(), 0.0);
  EXPECT_EQ(r.narrow(0, 9, 7).abs().max().item<double>(), 0.0);
}

TEST(RopeTest, DotProductDependsOnlyOnRelativePosition) {
  RotaryEmbedding rope(RopeConfig(RopeType::kDefault, 1.0));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(22);
  const at::Tensor q = at::randn({1, 1, 1, 16}, gen), k = at::randn({1, 1, 1, 16}, gen);
  const double d3 = RotatedDot(rope, q, k, 5, 2);
  EXPECT_NEAR(RotatedDot(rope, q, k, 13, 10), d3, 1e-4);
  EXPECT_NEAR(RotatedDot(rope, q, k, 103, 100), d3, 1e-4);
  EXPECT_NEAR(RotatedDot(rope, q, k, 3, 0), d3, 1e-4);
  EXPECT_NEAR(RotatedDot(rope, q, k, 40, 40), (q * k).sum().item<double>(), 1e-4);
  EXPECT_GT(std::abs(RotatedDot(rope, q, k, 5, 3) - d3), 1e-3);  // another offset, another value
}

TEST(RopeTest, LinearScalingStretchesPositions) {
  RotaryEmbedding base(RopeConfig(RopeType::kDefault, 1.0));
  RotaryEmbedding linear(RopeConfig(RopeType::kLinear, 2.0));
  std::vector<int64_t> p, p2;
  for (int64_t i = 0; i < 50; i += 3) {
    p.push_back(i);
    p2.push_back(2 * i);
  }
  auto [c1, s1] = base.CosSin(Positions(p), 100);
  auto [c2, s2] = linear.CosSin(Positions(p2), 100);
  EXPECT_LT(MaxAbsDiff(c1, c2), 1e-7);
  EXPECT_LT(MaxAbsDiff(s1, s2), 1e-7);
  auto [c3, s3] = linear.CosSin(Positions(p), 100);
  EXPECT_GT(MaxAbsDiff(c1, c3), 1e-2);
}

TEST(RopeTest, YarnAttentionFactorScalesCosSin) {
  ModelConfig c = RopeConfig(RopeType::kYarn, 4.0);
  c.rope_scaling.attention_factor = 1.5;
  RotaryEmbedding explicit_factor(c);
  EXPECT_DOUBLE_EQ(explicit_factor.attention_scale(), 1.5);
  auto [cos, sin] = explicit_factor.CosSin(Positions({0, 1, 17, 300}), 301);
  EXPECT_LT(MaxAbsDiff(cos.pow(2) + sin.pow(2), at::full({4, 16}, 2.25)), 1e-5);
  EXPECT_LT(MaxAbsDiff(cos[0], at::full({16}, 1.5)), 1e-6);

  c.rope_scaling.attention_factor.reset();
  RotaryEmbedding default_factor(c);
  const double expected = 0.1 * std::log(4.0) + 1.0;
  EXPECT_NEAR(default_factor.attention_scale(), expected, 1e-12);
  auto [cos2, sin2] = default_factor.CosSin(Positions({9}), 10);
  EXPECT_LT(MaxAbsDiff(cos2.pow(2) + sin2.pow(2), at::full({1, 16}, expected * expected)), 1e-5);
  // Scaling of cos/sin scales every q.k product by attention_scale^2.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(23);
  const at::Tensor q = at::randn({1, 1, 1, 16}, gen);
  ModelConfig plain_yarn = c;
  plain_yarn.rope_scaling.attention_factor = 1.0;
  RotaryEmbedding unit(plain_yarn);
  EXPECT_NEAR(RotatedDot(default_factor, q, q, 6, 2), expected * expected * RotatedDot(unit, q, q, 6, 2),
              1e-4);
}

TEST(RopeTest, YarnInterpolatesLowFrequenciesOnly) {
  // head_dim 16, theta 1e4, original context 4096: ramp boundaries low=2, high=6.
  ModelConfig c = RopeConfig(RopeType::kYarn, 4.0);
  c.rope_scaling.original_max_position_embeddings = 4096;
  const at::Tensor inv = RotaryEmbedding(c).InverseFrequencies(1);
  const at::Tensor base = RotaryEmbedding(RopeConfig(RopeType::kDefault, 1.0)).InverseFrequencies(1);
  const double ramp[8] = {0, 0, 0, 0.25, 0.5, 0.75, 1, 1};
  for (int i = 0; i < 8; ++i) {
    const double b = base[i].item<double>();
    EXPECT_NEAR(inv[i].item<double>(), b * (1 - ramp[i]) + b / 4 * ramp[i], 1e-12 * b) << i;
  }
}

// The scope reads with the scaled tables (as a model configured with them) and gives the
// window's back when it ends.
TEST(RopeTest, ScopedRopeScalingSwapsTheTablesUntilItEnds) {
  CausalLM lm = TinyModel();
  ModelConfig yarn = lm->config;
  yarn.rope_scaling.type = RopeType::kYarn;
  yarn.rope_scaling.factor = 2.0;
  yarn.rope_scaling.original_max_position_embeddings = yarn.max_position_embeddings;
  CausalLM configured = TinyModel(yarn);  // same seed: the same weights
  const at::Tensor ids = test::Ids(SeededIds(40, 61, 4));
  c10::InferenceMode guard;
  const at::Tensor before = lm->forward(ids);
  {
    const ScopedRopeScaling scaled(*lm, RopeType::kYarn, 2.0);
    EXPECT_LT(MaxAbsDiff(lm->forward(ids), configured->forward(ids)), 1e-5);
    EXPECT_GT(MaxAbsDiff(lm->forward(ids), before), 1e-3);
  }
  EXPECT_TRUE(at::equal(lm->forward(ids), before));
}

TEST(RopeTest, Llama3KeepsHighAndDividesLowFrequencies) {
  ModelConfig c = RopeConfig(RopeType::kLlama3, 8.0);
  c.rope_theta = 500000.0;
  c.rope_scaling.original_max_position_embeddings = 64;
  c.rope_scaling.low_freq_factor = 1.0;
  c.rope_scaling.high_freq_factor = 4.0;
  const at::Tensor inv = RotaryEmbedding(c).InverseFrequencies(1);
  ModelConfig d = RopeConfig(RopeType::kDefault, 1.0);
  d.rope_theta = 500000.0;
  const at::Tensor base = RotaryEmbedding(d).InverseFrequencies(1);
  int kept = 0, divided = 0, smoothed = 0;
  for (int i = 0; i < 8; ++i) {
    const double b = base[i].item<double>(), got = inv[i].item<double>();
    const double wavelen = 2 * 3.14159265358979323846 / b;
    if (wavelen < 64.0 / 4) {
      EXPECT_DOUBLE_EQ(got, b) << i;
      ++kept;
    } else if (wavelen > 64.0 / 1) {
      EXPECT_NEAR(got, b / 8, 1e-15) << i;
      ++divided;
    } else {
      const double s = (64.0 / wavelen - 1.0) / (4.0 - 1.0);
      EXPECT_NEAR(got, (1 - s) * b / 8 + s * b, 1e-12 * b) << i;
      ++smoothed;
    }
  }
  EXPECT_EQ(kept, 1);
  EXPECT_EQ(smoothed, 1);
  EXPECT_EQ(divided, 6);
}

TEST(RopeTest, DynamicNtkChangesBaseOnlyBeyondTheWindow) {
  ModelConfig c = RopeConfig(RopeType::kDynamic, 2.0);
  c.max_position_embeddings = 16;
  RotaryEmbedding dynamic(c);
  const at::Tensor base = RotaryEmbedding(RopeConfig(RopeType::kDefault, 1.0)).InverseFrequencies(1);
  EXPECT_TRUE(at::equal(dynamic.InverseFrequencies(1), base));
  EXPECT_TRUE(at::equal(dynamic.InverseFrequencies(16), base));
  // seq_len 32 = 2 * window: base' = theta * (2 * 32 / 16 - 1)^(16 / 14).
  const double theta = 10000.0 * std::pow(3.0, 16.0 / 14.0);
  const at::Tensor inv = dynamic.InverseFrequencies(32);
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(inv[i].item<double>(), std::pow(theta, -2.0 * i / 16), 1e-15);
  // CosSin uses seq_len: positions 0..11 of a 32-token sequence rotate more slowly.
  auto [c_short, s_short] = dynamic.CosSin(Positions({5}), 12);
  auto [c_long, s_long] = dynamic.CosSin(Positions({5}), 32);
  EXPECT_GT(MaxAbsDiff(s_short, s_long), 1e-3);
}

}  // namespace
}  // namespace sharedllm

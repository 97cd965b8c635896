// eval/efficiency.h: FLOP counting against a worked example, the measured phases on a tiny
// random SharedLLM, the `sharedllm eval efficiency` command as a subprocess (smoke), and the
// `sharedllm plan` cost model against a measurement. The tree-store byte count is checked against
// a real RocksDB in plan_store_test.cpp.
#include "eval/efficiency.h"

#include <gtest/gtest.h>

#include <algorithm>

#include <memory>

#include <nlohmann/json.hpp>

#include "sharedllm/loaded_model.h"
#include "sharedllm/sharedllm.h"
#include "tests/model_util.h"

#ifndef SHAREDLLM_BIN
#error "SHAREDLLM_BIN must name the sharedllm binary"
#endif

namespace sharedllm {
namespace {

// hidden 4, 2 query heads sharing 1 kv head of width 2, MLP 8, vocab 10, 2 layers.
ModelConfig WorkedConfig() {
  ModelConfig c;
  c.vocab_size = 10;
  c.hidden_size = 4;
  c.intermediate_size = 8;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 2;
  c.max_position_embeddings = 64;
  return c;
}

SharedLLMConfig WorkedShared() {
  SharedLLMConfig s;
  s.num_injection_layers = 1;
  s.chunk_size = 16;
  s.tree_depth = 3;
  s.alphas = {16, 8, 4};
  return s;
}

TEST(FlopCountTest, WorkedExample) {
  const ModelConfig c = WorkedConfig();
  // Per token and layer: q 4x4 + k,v 2 x 4x2 + o 4x4 + MLP 3 x 4x8 = 144 multiply-adds.
  EXPECT_DOUBLE_EQ(LayerMatmulFlopsPerToken(c), 288);
  // 3 new tokens after 2 cached ones see 3, 4, 5 keys = 12; x 2 heads x width 2 x (score + sum) x 2.
  EXPECT_DOUBLE_EQ(SelfAttentionFlops(c, 3, 2), 4.0 * 2 * 2 * 12);
  // q_proj + o_proj (2 x 4x4 per token x 3 tokens) + 3 tokens x 5 context positions x 2 heads x 2.
  EXPECT_DOUBLE_EQ(CrossAttentionFlops(c, 3, 5), 2.0 * 3 * 32 + 4.0 * 4 * 3 * 5);
  EXPECT_DOUBLE_EQ(LmHeadFlops(c, 1), 80);
  // Two layers of (288 x 3 + 192), one injection layer of 432, the last position's logits.
  EXPECT_DOUBLE_EQ(UpperForwardFlops(c, 1, 3, 2, 5), 2 * (288.0 * 3 + 192) + 432 + 80);
  EXPECT_DOUBLE_EQ(UpperForwardFlops(c, 1, 3, 2, 0), 2 * (288.0 * 3 + 192) + 80);
  // Decoding 2 tokens after 3: steps at past 3 and 4.
  EXPECT_DOUBLE_EQ(DecodeFlops(c, 0, 3, 2, 0),
                   UpperForwardFlops(c, 0, 1, 3, 0) + UpperForwardFlops(c, 0, 1, 4, 0));
  // A 4-token node through one lower layer: 288 x 4 + 4 x 2 x 2 x (1+2+3+4).
  EXPECT_DOUBLE_EQ(LowerModelFlops(c, 1, {4}), 1152 + 160);
  // Two lower layers: the first in full, the top one only its k and v (2 x 4x2 per token).
  EXPECT_DOUBLE_EQ(LowerModelFlops(c, 2, {4}), 1152 + 160 + 2.0 * 16 * 4);
  // As SharedLLM encodes: shared or all copied, one pass; a copy of 1 of 2 layers, two passes.
  SharedLLMConfig two;
  two.num_injection_layers = 2;
  EXPECT_DOUBLE_EQ(EncodeFlops(c, two, {4}), LowerModelFlops(c, 2, {4}));
  two.compressor = "separate";
  EXPECT_DOUBLE_EQ(EncodeFlops(c, two, {4}), LowerModelFlops(c, 2, {4}));
  EXPECT_EQ(two.CopiedLayers(), 2);
  EXPECT_EQ(two.LowerLayerPasses(), 2);
  EXPECT_FALSE(two.SplitLower());
  two.separate_layers = 1;
  EXPECT_DOUBLE_EQ(EncodeFlops(c, two, {4}), LowerModelFlops(c, 1, {4}) + LowerModelFlops(c, 2, {4}));
  EXPECT_EQ(two.CopiedLayers(), 1);
  EXPECT_EQ(two.LowerLayerPasses(), 3);
  EXPECT_TRUE(two.SplitLower());

  // 40 tokens, chunks of 16: 16 + 16 + 8 (the 8-token tail is a chunk of its own: 2^3 = 8).
  const SharedLLMConfig s = WorkedShared();
  const TreeShape shape = StaticTreeShape(s, 40);
  ASSERT_EQ(shape.spans.size(), 3u);
  int64_t encoded = 0;
  for (int64_t l : shape.NodeLengths()) encoded += l;
  EXPECT_EQ(encoded, 3 * 40);  // every level covers the document once
  EXPECT_EQ(shape.NodeLengths().size(), 3u * 14);
  // Right-child policy keeps (1,0), (2,2), (3,6), (3,7): one position each at these strides.
  EXPECT_EQ(PreservedContextPositions(s, shape), 12);
  // Rebuild: both children per level: 8+8+4+4+2+2 per 16-token chunk, 4+4+2+2+1+1 for the tail.
  int64_t dynamic = 0;
  for (int64_t l : DynamicTreeLengths(s, shape)) dynamic += l;
  EXPECT_EQ(dynamic, 2 * 28 + 14);
}

struct TinyShared {
  std::shared_ptr<LoadedModel> model = std::make_shared<LoadedModel>();
  TinyShared(int64_t window = 128) {
    ModelConfig c = test::TinyConfig();
    c.max_position_embeddings = window;
    model->config = c;
    model->lm = test::TinyModel(c);
    SharedLLMConfig s;
    s.num_injection_layers = 1;
    s.chunk_size = 32;
    s.alphas = {4, 2, 1};
    model->shared = std::make_shared<SharedLLM>(model->lm, s);
  }
};

TEST(EfficiencyPhaseTest, EveryPhaseRunsAndCountsItsWork) {
  TinyShared t;
  test::TempDir dir;
  PhaseInput in;
  in.document = SyntheticTokens(200, t.model->config.vocab_size, 1);
  in.question = SyntheticTokens(6, t.model->config.vocab_size, 2);
  in.decode_tokens = 3;
  in.tree_file = dir / "tree.safetensors";
  const PhaseResult ingest = RunPhase(*t.model, EfficiencyPhase::kIngest, in);
  EXPECT_GT(ingest.seconds, 0);
  EXPECT_EQ(ingest.encoded_tokens, 3 * 200);
  EXPECT_GT(ingest.tree_record_bytes, 0);
  EXPECT_TRUE(test::Exists(in.tree_file));
  const PhaseResult ask = RunPhase(*t.model, EfficiencyPhase::kAsk, in);
  const PhaseResult rebuild = RunPhase(*t.model, EfficiencyPhase::kRebuild, in);
  in.cache_file = dir / "cache.safetensors";
  const PhaseResult full = RunPhase(*t.model, EfficiencyPhase::kFullAttention, in);
  const PhaseResult cached = RunPhase(*t.model, EfficiencyPhase::kStoredCache, in);
  for (const PhaseResult* r : {&ask, &rebuild, &full, &cached}) {
    EXPECT_GT(r->seconds, 0);
    EXPECT_GT(r->decode_seconds, 0);
    EXPECT_EQ(r->decode_tokens, 3);
    EXPECT_GT(r->decode_flops, 0);
  }
  // The stored tree and the rebuilt one give the question the same context (the search is the
  // same function of the same vectors); full attention reads every token.
  const SharedLLMConfig& s = t.model->shared->config();
  EXPECT_EQ(ask.context_positions, rebuild.context_positions);
  EXPECT_EQ(full.context_positions, 206);
  // 200 tokens = 6 chunks of 32 + one of 8; every split is even, so the query's walk encodes as
  // many tokens as the right-child walk: (16+16+8+8+4+4) x 6 + (4+4+2+2+1+1).
  int64_t dynamic = 0;
  for (int64_t l : DynamicTreeLengths(s, StaticTreeShape(s, 200))) dynamic += l;
  EXPECT_EQ(dynamic, 56 * 6 + 14);
  EXPECT_EQ(rebuild.encoded_tokens, dynamic);
  EXPECT_GT(rebuild.flops, ask.flops);
  EXPECT_DOUBLE_EQ(full.flops, UpperForwardFlops(t.model->config, 0, 206, 0, 0));
  // The stored cache: every layer's keys and values of the 200 document tokens, all read back by
  // the question, which then sees what full attention saw (the same first token).
  const ModelConfig& c = t.model->config;
  const int64_t cache_bytes = c.num_hidden_layers * 2 * c.num_key_value_heads * 200 * c.head_dim * 4;
  EXPECT_EQ(full.cache_bytes, cache_bytes);
  EXPECT_EQ(cached.read_bytes, cache_bytes);
  EXPECT_EQ(cached.first_token, full.first_token);
  EXPECT_EQ(cached.context_positions, 206);
  EXPECT_LT(cached.flops, full.flops / 10);
  // A question over the tree reads the vectors and the chosen nodes only.
  EXPECT_GT(ask.read_bytes, 0);
  EXPECT_LT(ask.read_bytes, ingest.tree_record_bytes);
  EXPECT_EQ(ask.first_token, rebuild.first_token);
}

TEST(EfficiencyCliTest, SmokeRunWritesEveryConfiguration) {
  test::TempDir dir;
  TinyShared t;
  const std::string model_dir = dir.Mkdir("model");
  SaveModel(t.model->lm, model_dir);
  SaveSharedLLM(*t.model->shared, model_dir);
  const auto r = test::Run({SHAREDLLM_BIN, "eval", "efficiency", "--model", model_dir, "--lengths", "1",
                            "--runs", "2", "--decode-tokens", "4", "--threads", "1", "--out",
                            dir / "eff.json"},
                           dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(test::ReadFile(dir / "eff.json"));
  EXPECT_EQ(j.at("task"), "efficiency");
  ASSERT_EQ(j.at("points").size(), 1u);
  const auto& p = j["points"][0];
  EXPECT_EQ(p.at("tokens"), 128);
  EXPECT_EQ(p.at("runs").size(), 2u);
  for (const char* phase : {"ingest", "ask", "rebuild", "full_attention", "stored_cache"}) {
    SCOPED_TRACE(phase);
    ASSERT_TRUE(p.contains(phase));
    EXPECT_GT(p[phase].at("phase_peak_rss_bytes").get<double>(), 1e6);
    EXPECT_GE(p[phase].at("process_peak_rss_bytes").get<double>(),
              p[phase].at("rss_model_loaded_bytes").get<double>());
    EXPECT_GT(p[phase].at("matmul_peak_gflops").get<double>(), 0);
  }
  EXPECT_GT(p["ingest"].at("seconds").get<double>(), 0);
  EXPECT_GT(p["ask"].at("decode_tokens_per_second").get<double>(), 0);
  EXPECT_GT(p["full_attention"].at("ttft_utilization").get<double>(), 0);
  for (const char* ratio : {"full_ttft_over_ask_ttft", "rebuild_ttft_over_ask_ttft",
                            "ask_decode_over_full_decode", "full_peak_rss_over_ask_peak_rss",
                            "cached_ttft_over_ask_ttft", "cache_bytes_over_tree_bytes",
                            "cached_read_bytes_over_ask_read_bytes"}) {
    EXPECT_GT(p.at("ratios").at(ratio).get<double>(), 0) << ratio;
  }
}

// The plan's weight bytes are the bytes of every parameter the model holds: the base model, the
// cross-attentions, a gate, a separate compressor.
TEST(PlanTest, WeightBytesCountEveryParameter) {
  MachineRates rates;
  rates.matmul_flops_per_second = 1e9;
  for (const bool separate : {false, true}) {
    for (const bool gate : {false, true}) {
     for (const bool sink : {false, true}) {
      CausalLM lm = test::TinyModel();
      SharedLLMConfig sc;
      sc.num_injection_layers = 2;
      sc.chunk_size = 32;
      sc.compressor = separate ? "separate" : "shared";
      sc.gate = gate;
      sc.sink = sink;
      SharedLLM s(lm, sc);
      int64_t bytes = 0;
      for (const auto& p : lm->parameters()) bytes += p.numel() * 4;
      EXPECT_EQ(PredictPlan(lm->config, s.config(), 4, 256, 8, 4, rates).weight_bytes, bytes)
          << "separate " << separate << " gate " << gate << " sink " << sink;
     }
    }
  }
}

// The cost model against a measurement where its dominant terms are large: full attention over
// 2048 tokens (score tensors of [4 heads, 2048, 2048] float32) and ingesting 2048 tokens.
// Memory within a factor of 2 (allocator slack and temporaries the model does not list), time
// within a factor of 10 of the fastest of three runs: rates are measured at one shape (1024 tokens
// for the MLP matmul, 512 for attention) and the phases run others, and under ctest -j on a
// loaded 2-core CI machine a 3x bound failed on the 30 ms ingest. The time accuracy on an idle
// machine is reported by `sharedllm eval efficiency` against `sharedllm plan`, not asserted here.
TEST(PlanTest, PredictionIsWithinAStatedFactorOfTheMeasurement) {
  TinyShared t(2048 + 64);
  MachineRates rates;
  rates.matmul_flops_per_second = MeasureModelMatmulRate(t.model->config, "float32", "cpu", 1024, 3);
  rates.attention_element_seconds = MeasureAttentionElementSeconds(t.model->config, "float32", "cpu", 512, 3);
  rates.node_seconds = MeasureNodeSeconds(t.model->config, t.model->shared->config(), "cpu", 3);
  rates.memory_bytes_per_second = MeasureMemoryBandwidth("cpu", 3);
  rates.layer_overhead_seconds = MeasureLayerOverhead("cpu", 16);
  const int64_t length = 2048, q = 8, decode = 4;
  const PlanPrediction plan = PredictPlan(t.model->config, t.model->shared->config(), 4, length, q,
                                          decode, rates);
  PhaseInput in;
  in.document = SyntheticTokens(length, t.model->config.vocab_size, 1);
  in.question = SyntheticTokens(q, t.model->config.vocab_size, 2);
  in.decode_tokens = decode;
  RunPhase(*t.model, EfficiencyPhase::kFullAttention, in);  // warm-up
  ASSERT_TRUE(ResetPeakMemory()) << "the kernel refused to reset VmHWM";
  const int64_t before = ReadProcessMemory().rss_bytes;
  const PhaseResult full = RunPhase(*t.model, EfficiencyPhase::kFullAttention, in);
  double full_seconds = full.seconds;
  for (int i = 0; i < 2; ++i) {
    full_seconds = std::min(full_seconds, RunPhase(*t.model, EfficiencyPhase::kFullAttention, in).seconds);
  }
  const double measured = static_cast<double>(full.peak_bytes - before);
  const double predicted = static_cast<double>(plan.full_ttft.memory_bytes - plan.weight_bytes);
  EXPECT_GT(predicted / measured, 0.5) << predicted << " predicted vs " << measured << " measured bytes";
  EXPECT_LT(predicted / measured, 2.0) << predicted << " predicted vs " << measured << " measured bytes";
  EXPECT_GT(plan.full_ttft.seconds / full_seconds, 0.1) << plan.full_ttft.seconds << " vs " << full_seconds;
  EXPECT_LT(plan.full_ttft.seconds / full_seconds, 10.0) << plan.full_ttft.seconds << " vs " << full_seconds;
  EXPECT_DOUBLE_EQ(plan.full_ttft.flops, full.flops);

  RunPhase(*t.model, EfficiencyPhase::kIngest, in);  // warm-up
  const PhaseResult ingest = RunPhase(*t.model, EfficiencyPhase::kIngest, in);
  EXPECT_DOUBLE_EQ(plan.ingest.flops, ingest.flops);
  double ingest_seconds = ingest.seconds;
  for (int i = 0; i < 2; ++i) {
    ingest_seconds = std::min(ingest_seconds, RunPhase(*t.model, EfficiencyPhase::kIngest, in).seconds);
  }
  EXPECT_GT(plan.ingest.seconds / ingest_seconds, 0.1) << plan.ingest.seconds << " vs " << ingest_seconds;
  EXPECT_LT(plan.ingest.seconds / ingest_seconds, 10.0) << plan.ingest.seconds << " vs " << ingest_seconds;
}

}  // namespace
}  // namespace sharedllm

// Training: loss goes down, a resumed run equals the uninterrupted one bit for bit, SharedLLM lm
// and sft modes run end to end, bad configs are refused, and the committed recipes parse.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include "llm/errors.h"
#include "sharedllm/loaded_model.h"
#include "llm/safetensors.h"
#include "training/sft_data.h"
#include "training/token_shards.h"
#include "training/trainer.h"
#include "sharedllm/surgery.h"
#include "tests/model_util.h"

namespace sharedllm {
namespace {

// `sharedllm edit`'s step: writes `init` changed by `edit` to dir/name and returns that directory,
// which the trainer then trains as it loads it.
std::string Edited(const std::string& init, const std::filesystem::path& dir, const std::string& name,
                   const ModelEdit& edit) {
  const std::string out = (dir / name).string();
  EditModel(init, out, edit);
  return out;
}

// Documents of a learnable pattern: counting sequences modulo `vocab` from random starts.
std::vector<std::vector<int64_t>> PatternDocs(int64_t vocab, int docs, int length, uint64_t seed) {
  std::vector<std::vector<int64_t>> out;
  const auto starts = test::SeededIds(docs, vocab - 3, seed);
  for (int i = 0; i < docs; ++i) {
    std::vector<int64_t> d = {1};
    for (int t = 0; t < length; ++t) d.push_back(3 + (starts[i] + t) % (vocab - 3));
    out.push_back(d);
  }
  return out;
}

std::string WriteTinyConfig(const test::TempDir& dir) {
  const std::string path = dir / "config.json";
  std::ofstream(path) << test::TinyConfig().ToJsonText();
  return path;
}

TrainConfig BaseConfig(const test::TempDir& dir, const std::string& out) {
  test::WriteTokenShard(dir / "train.bin", 61, PatternDocs(61, 20, 200, 1));
  test::WriteTokenShard(dir / "eval.bin", 61, PatternDocs(61, 5, 200, 2));
  TrainConfig c;
  c.mode = "base";
  c.model_config = WriteTinyConfig(dir);
  c.out = dir / out;
  c.train_shards = {dir / "train.bin"};
  c.eval_shards = {dir / "eval.bin"};
  c.seq_len = 32;
  c.batch_size = 4;
  c.steps = 40;
  c.warmup_steps = 5;
  c.lr = 1e-2;
  c.log_every = 10;
  c.eval_every = 0;
  c.eval_batches = 2;
  c.checkpoint_every = 0;
  c.threads = 1;
  c.seed = 3;
  return c;
}

TEST(TrainerTest, BaseTrainingReducesLoss) {
  test::TempDir dir;
  TrainConfig c = BaseConfig(dir, "run");
  c.steps = 1;
  const double before = Train(c).eval_loss;
  TrainConfig longer = BaseConfig(dir, "run2");
  const TrainResult r = Train(longer);
  EXPECT_LT(r.eval_loss, before - 1.0) << "before " << before << " after " << r.eval_loss;
  // The output directory is a loadable model.
  RuntimeOptions o;
  o.threads = 1;
  auto model = LoadModel(longer.out, o);
  EXPECT_EQ(model->config.vocab_size, 61);
  // A JSONL log line per logged step.
  std::ifstream log(longer.out + "/train_log.jsonl");
  int lines = 0;
  for (std::string line; std::getline(log, line);) ++lines;
  EXPECT_GE(lines, 4);
}

TEST(TrainerTest, ResumeReproducesTheUninterruptedRunBitForBit) {
  test::TempDir dir;
  TrainConfig straight = BaseConfig(dir, "straight");
  straight.steps = 8;
  Train(straight);
  TrainConfig sliced = BaseConfig(dir, "sliced");
  sliced.steps = 8;
  sliced.stop_after = 3;
  EXPECT_EQ(Train(sliced).steps, 3);
  Train(sliced);  // steps 3..5, from the checkpoint
  sliced.stop_after = 0;
  Train(sliced);  // steps 6..7
  auto a = CheckpointReader(straight.out);
  auto b = CheckpointReader(sliced.out);
  ASSERT_EQ(a.names(), b.names());
  for (const auto& name : a.names()) {
    EXPECT_TRUE(at::equal(a.tensor(name), b.tensor(name))) << name;
  }
}

// The (step, loss) pairs of a run's train_log.jsonl, in file order.
std::vector<std::pair<int64_t, double>> LoggedLosses(const std::string& run) {
  std::vector<std::pair<int64_t, double>> out;
  std::ifstream log(run + "/train_log.jsonl");
  for (std::string line; std::getline(log, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.emplace_back(j.at("step").get<int64_t>(), j.at("loss").get<double>());
  }
  return out;
}

TEST(TrainerTest, ResumeAfterAKillDropsTheLogOfTheStepsItRepeats) {
  test::TempDir dir;
  TrainConfig straight = BaseConfig(dir, "straight");
  straight.steps = 12;
  straight.log_every = 2;
  Train(straight);
  // A run killed at step 8 whose last checkpoint is step 4: its log already holds steps 6 and 8,
  // which the resumed run trains and logs again.
  TrainConfig killed = straight;
  killed.out = dir / "killed";
  killed.stop_after = 4;
  Train(killed);
  const std::string ckpt = killed.out + "/checkpoint", saved = dir / "step4";
  std::filesystem::copy(ckpt, saved);
  Train(killed);  // steps 4..7, checkpoint at 8
  std::filesystem::remove_all(ckpt);
  std::filesystem::copy(saved, ckpt);
  killed.stop_after = 0;
  Train(killed);  // resumes at 4
  const auto want = LoggedLosses(straight.out);
  ASSERT_EQ(want.size(), 6u);
  EXPECT_EQ(LoggedLosses(killed.out), want);
}

TEST(TrainerTest, TimeBudgetEndsTheRunWithASavedModelAndADecayedRate) {
  test::TempDir dir;
  TrainConfig c = BaseConfig(dir, "timed");
  c.warmup_steps = 0;
  c.min_lr_ratio = 0.1;
  c.time_budget = 1e-9;  // spent before the first step is done
  const TrainResult r = Train(c);
  EXPECT_EQ(r.steps, 1);
  RuntimeOptions o;
  o.threads = 1;
  EXPECT_EQ(LoadModel(c.out, o)->config.vocab_size, 61);  // the final model was written
  // The schedule ran by time: the one step already used the floor of the cosine.
  std::ifstream log(c.out + "/train_log.jsonl");
  std::string first;
  std::getline(log, first);
  EXPECT_NE(first.find("\"step\":1"), std::string::npos) << first;
  EXPECT_NEAR(nlohmann::json::parse(first).at("lr").get<double>(), c.lr * 0.1, 1e-12) << first;
  TrainConfig bad = BaseConfig(dir, "bad");
  bad.time_budget = -1;
  EXPECT_THROW(Train(bad), ModelError);
}

// A SharedLLM directory from the tiny test model (chunk 16, depth 2).
std::string MakeSharedLLMDir(const test::TempDir& dir) {
  const std::string path = dir / "shared";
  ModelConfig mc = test::TinyConfig();
  CausalLM lm = test::TinyModel(mc);
  SaveModel(lm, path);
  SharedLLMConfig sc;
  sc.num_injection_layers = 1;
  sc.chunk_size = 16;
  sc.tree_depth = 2;
  sc.alphas = {4, 2};
  SharedLLM s(lm, sc);
  SaveSharedLLM(s, path);
  return path;
}

// SharedLLM language modelling from MakeSharedLLMDir: 3 chunks of context, 16 running tokens.
TrainConfig SharedLLMLanguageModelling(const test::TempDir& dir, const std::string& name, int64_t steps) {
  TrainConfig c = BaseConfig(dir, name);
  c.mode = "lm";
  c.model_config.clear();
  c.init = MakeSharedLLMDir(dir);
  c.context_chunks = 3;
  c.seq_len = 16;
  c.steps = steps;
  return c;
}

// An option set to its "off" value must leave the 3-step run from before it bit for bit:
// `set_off` applied to one of two otherwise equal runs.
void ExpectOffIsTheRunFromBefore(const test::TempDir& dir, const std::function<void(TrainConfig&)>& set_off) {
  TrainConfig plain = SharedLLMLanguageModelling(dir, "plain", 3);
  TrainConfig off = SharedLLMLanguageModelling(dir, "off", 3);
  set_off(off);
  EXPECT_EQ(Train(plain).final_loss, Train(off).final_loss);
}

// Two 2-step runs with the weights held (lr 0), so both see the same model: the plain one and
// one changed by `set` (`both` applies to the two). An option that changes only the training loss
// makes the second result's final loss differ from the first's and leaves the eval loss equal.
std::pair<TrainResult, TrainResult> HeldPair(const test::TempDir& dir, const std::function<void(TrainConfig&)>& set,
                                             const std::function<void(TrainConfig&)>& both = nullptr) {
  TrainConfig held = SharedLLMLanguageModelling(dir, "held", 2);
  held.lr = 0;
  if (both) both(held);
  TrainConfig changed = held;
  changed.out = dir / "held-changed";
  set(changed);
  const TrainResult h = Train(held);
  return {h, Train(changed)};
}

TEST(TrainerTest, SharedLLMLanguageModellingTrainsTheCrossAttention) {
  test::TempDir dir;
  TrainConfig c = SharedLLMLanguageModelling(dir, "lm", 6);
  const TrainResult r = Train(c);
  EXPECT_TRUE(std::isfinite(r.final_loss));
  // The cross-attention left its zero initialisation; the frozen lower layer did not move.
  auto before = CheckpointReader::FromFile(c.init + "/sharedllm.safetensors");
  auto after = CheckpointReader::FromFile(c.out + "/sharedllm.safetensors");
  EXPECT_GT(after.tensor("model.layers.0.cross_attn.o_proj.weight").abs().sum().item<double>(), 0.0);
  EXPECT_TRUE(before.tensor("model.layers.0.cross_attn.o_proj.weight").abs().sum().item<double>() == 0.0);
  auto base_before = CheckpointReader(c.init), base_after = CheckpointReader(c.out);
  EXPECT_TRUE(at::equal(base_before.tensor("model.layers.0.mlp.up_proj.weight"),
                        base_after.tensor("model.layers.0.mlp.up_proj.weight")));
  EXPECT_FALSE(at::equal(base_before.tensor("model.layers.1.mlp.up_proj.weight"),
                         base_after.tensor("model.layers.1.mlp.up_proj.weight")));
}

TEST(TrainerTest, LogUniformDrawsCoverTheRangeWithEveryOctaveEquallyOften) {
  std::mt19937_64 rng(5);
  std::vector<int> count(129, 0);
  for (int i = 0; i < 70000; ++i) {
    const int64_t n = DrawLogUniform(rng, 8, 128);
    ASSERT_GE(n, 8);
    ASSERT_LE(n, 128);
    ++count[n];
  }
  EXPECT_GT(count[8], 0);
  EXPECT_GT(count[128], 0);
  // Octaves [8, 16), [16, 32), [32, 64), [64, 128) each take log 2 / log(129 / 8) = 24.9 %.
  for (int lo = 8; lo < 128; lo *= 2) {
    int octave = 0;
    for (int n = lo; n < 2 * lo; ++n) octave += count[n];
    EXPECT_NEAR(octave / 70000.0, 0.249, 0.01) << "octave from " << lo;
  }
  EXPECT_EQ(DrawLogUniform(rng, 4, 4), 4);
  EXPECT_THROW(DrawLogUniform(rng, 0, 4), ModelError);
  EXPECT_THROW(DrawLogUniform(rng, 5, 4), ModelError);
}

TEST(TrainerTest, LanguageModellingLengthsVaryOnlyWhenAsked) {
  test::TempDir dir;
  // lm_chunks_min = context_chunks draws n = context_chunks every time: the fixed run, bit for bit.
  TrainConfig fixed = SharedLLMLanguageModelling(dir, "fixed", 3);
  TrainConfig same = SharedLLMLanguageModelling(dir, "same", 3);
  same.lm_chunks_min = same.context_chunks;
  TrainConfig varied = SharedLLMLanguageModelling(dir, "varied", 3);
  varied.lm_chunks_min = 1;
  const TrainResult a = Train(fixed), b = Train(same), v = Train(varied);
  EXPECT_EQ(a.final_loss, b.final_loss);
  auto wa = CheckpointReader::FromFile(fixed.out + "/sharedllm.safetensors");
  auto wb = CheckpointReader::FromFile(same.out + "/sharedllm.safetensors");
  auto wv = CheckpointReader::FromFile(varied.out + "/sharedllm.safetensors");
  const std::string name = "model.layers.0.cross_attn.o_proj.weight";
  EXPECT_TRUE(at::equal(wa.tensor(name), wb.tensor(name)));
  // Shorter contexts in some steps: other trees, other gradients.
  EXPECT_NE(a.final_loss, v.final_loss);
  EXPECT_FALSE(at::equal(wa.tensor(name), wv.tensor(name)));
  TrainConfig bad = SharedLLMLanguageModelling(dir, "bad", 3);
  bad.lm_chunks_min = bad.context_chunks + 1;
  EXPECT_THROW(Train(bad), ModelError);
}

TEST(TrainerTest, LanguageModellingCanScoreOnlyTheLastTokens) {
  test::TempDir dir;
  TrainConfig all = SharedLLMLanguageModelling(dir, "all", 3);
  TrainConfig full = SharedLLMLanguageModelling(dir, "full", 3);
  full.lm_scored_tokens = full.seq_len;  // the whole window: the default, bit for bit
  TrainConfig tail = SharedLLMLanguageModelling(dir, "tail", 3);
  tail.lm_scored_tokens = 4;
  const TrainResult a = Train(all), f = Train(full), t = Train(tail);
  EXPECT_EQ(a.final_loss, f.final_loss);
  EXPECT_EQ(a.tokens, 3 * 4 * 16);  // steps x batch x seq_len
  EXPECT_EQ(t.tokens, 3 * 4 * 4);
  EXPECT_NE(a.final_loss, t.final_loss);
  TrainConfig bad = SharedLLMLanguageModelling(dir, "bad", 3);
  bad.lm_scored_tokens = bad.seq_len + 1;
  EXPECT_THROW(Train(bad), ModelError);
}

// Counting windows (token = position in an endless sequence) show where each piece was cut.
std::vector<int64_t> CountingWindow(std::mt19937_64& rng, int64_t count) {
  const int64_t start = std::uniform_int_distribution<int64_t>(0, 1'000'000)(rng);
  std::vector<int64_t> w(count);
  for (int64_t i = 0; i < count; ++i) w[i] = start + i;
  return w;
}

TEST(TrainerTest, FrozenParametersStayAsLoadedAndUnknownNamesAreRefused) {
  test::TempDir dir;
  TrainConfig c = SharedLLMLanguageModelling(dir, "frozen", 4);
  c.frozen = {"layers.0.cross_attn.o_proj", "layers.1.mlp"};
  Train(c);
  auto before = CheckpointReader::FromFile(c.init + "/sharedllm.safetensors");
  auto after = CheckpointReader::FromFile(c.out + "/sharedllm.safetensors");
  EXPECT_TRUE(at::equal(before.tensor("model.layers.0.cross_attn.o_proj.weight"),
                        after.tensor("model.layers.0.cross_attn.o_proj.weight")));
  auto base_before = CheckpointReader(c.init), base_after = CheckpointReader(c.out);
  EXPECT_TRUE(at::equal(base_before.tensor("model.layers.1.mlp.up_proj.weight"),
                        base_after.tensor("model.layers.1.mlp.up_proj.weight")));
  // What is not frozen trains as before.
  EXPECT_FALSE(at::equal(base_before.tensor("model.layers.1.self_attn.q_proj.weight"),
                         base_after.tensor("model.layers.1.self_attn.q_proj.weight")));
  c.frozen = {"layers.9.cross_attn"};
  c.out = dir / "frozen-typo";
  EXPECT_THROW(Train(c), ModelError);
  EXPECT_EQ(TrainConfig::FromJsonText(c.ToJsonText()).frozen, c.frozen);
}

// train_shard_weights (TokenPool, tested in token_shards_test) reaches the pool: a run with one
// weight per shard trains, a count that does not match the shards is refused, and the field
// round-trips through the config.
TEST(TrainerTest, ShardWeightsMustMatchTheShards) {
  test::TempDir dir;
  TrainConfig c = SharedLLMLanguageModelling(dir, "weights", 2);
  c.train_shards = {c.train_shards[0], c.train_shards[0]};
  c.train_shard_weights = {1, 3};
  EXPECT_GT(Train(c).final_loss, 0.0);
  EXPECT_EQ(TrainConfig::FromJsonText(c.ToJsonText()).train_shard_weights, c.train_shard_weights);
  c.train_shard_weights = {1};
  c.out = dir / "weights-mismatch";
  EXPECT_THROW(Train(c), ModelError);
}

TEST(TrainerTest, SeparateCompressorTrainsTheCopyAndLeavesTheBaseModel) {
  test::TempDir dir;
  TrainConfig c = SharedLLMLanguageModelling(dir, "separate", 4);
  c.lower_trainable = true;
  ModelEdit separate;
  separate.separate_compressor = true;
  c.init = Edited(c.init, dir.path(), "separate-init", separate);
  c.upper_trainable = false;
  Train(c);
  // Every base-model tensor is bit for bit the init's; the copy moved away from layer 0.
  auto base_before = CheckpointReader(c.init), base_after = CheckpointReader(c.out);
  for (const std::string& name : base_before.names()) {
    EXPECT_TRUE(at::equal(base_before.tensor(name), base_after.tensor(name))) << name;
  }
  auto shared = CheckpointReader::FromFile(c.out + "/sharedllm.safetensors");
  EXPECT_FALSE(at::equal(shared.tensor("compressor.0.self_attn.k_proj.weight"),
                         base_before.tensor("model.layers.0.self_attn.k_proj.weight")));
  EXPECT_GT(shared.tensor("model.layers.0.cross_attn.o_proj.weight").abs().sum().item<double>(), 0.0);
  RuntimeOptions o;
  o.threads = 1;
  EXPECT_EQ(LoadModel(c.out, o)->shared->config().compressor, "separate");
}

TEST(TrainerTest, InstructionTuningScoresOnlyTheAnswer) {
  // The bundled tiny model has a real tokenizer, which the generated tasks need.
  test::TempDir dir;
  RuntimeOptions o;
  o.threads = 1;
  auto tiny = LoadModel(std::string(SHAREDLLM_SOURCE_DIR) + "/models/tiny", o);
  const std::string init = dir / "shared";
  SaveModel(tiny->lm, init);
  SharedLLMConfig sc;
  sc.num_injection_layers = 1;
  sc.chunk_size = 32;
  sc.tree_depth = 2;
  sc.alphas = {4, 2};
  SharedLLM s(tiny->lm, sc);
  SaveSharedLLM(s, init);
  std::ofstream(init + "/tokenizer.model", std::ios::binary)
      << std::ifstream(std::string(SHAREDLLM_SOURCE_DIR) + "/models/tiny/tokenizer.model",
                       std::ios::binary).rdbuf();
  test::WriteTokenShard(dir / "filler.bin", 1000, PatternDocs(1000, 10, 400, 5));
  TrainConfig c;
  c.mode = "sft";
  c.init = init;
  c.out = dir / "sft";
  c.train_shards = {dir / "filler.bin"};
  c.eval_shards = {dir / "filler.bin"};
  c.context_chunks = 4;
  c.batch_size = 2;
  c.steps = 3;
  c.warmup_steps = 1;
  c.lower_trainable = true;
  c.threads = 1;
  c.eval_batches = 1;
  c.checkpoint_every = 0;
  const TrainResult r = Train(c);
  EXPECT_TRUE(std::isfinite(r.final_loss));
  EXPECT_TRUE(std::isfinite(r.eval_loss));
  // Scored tokens are answers only: a few per sample, far fewer than the contexts.
  EXPECT_GT(r.tokens, 0);
  EXPECT_LT(r.tokens, 3 * 2 * 16);
  // With a trainable lower model the bottom layer moved too.
  auto before = CheckpointReader(init), after = CheckpointReader(c.out);
  EXPECT_FALSE(at::equal(before.tensor("model.layers.0.mlp.up_proj.weight"),
                         after.tensor("model.layers.0.mlp.up_proj.weight")));

  // lm_mix = 1: every micro-batch is language modelling, so every running token is scored.
  c.out = dir / "sft-mixed";
  c.lm_mix = 1.0;
  c.seq_len = 16;
  const TrainResult mixed = Train(c);
  EXPECT_TRUE(std::isfinite(mixed.final_loss));
  EXPECT_EQ(mixed.tokens, 3 * 2 * 16);
}

TEST(SftDataTest, SamplesHaveTheAnswerInTheContext) {
  RuntimeOptions o;
  o.threads = 1;
  auto tiny = LoadModel(std::string(SHAREDLLM_SOURCE_DIR) + "/models/tiny", o);
  FillerSource filler = [](std::mt19937_64& rng, int64_t count) {
    std::vector<int64_t> out;
    for (int64_t i = 0; i < count; ++i) out.push_back(100 + static_cast<int64_t>(rng() % 50));
    return out;
  };
  for (const auto& task : SftTaskNames()) {
    std::mt19937_64 rng(9);
    SftSample s = MakeSftSample(task, *tiny->tokenizer, filler, 300, rng);
    EXPECT_EQ(static_cast<int64_t>(s.context.size()), 300) << task;
    EXPECT_EQ(s.prompt.front(), tiny->tokenizer->bos_id());
    ASSERT_FALSE(s.answer.empty());
    // The answer's digits appear in the context (for minmax: the chosen list item).
    std::string answer = tiny->tokenizer->Decode(s.answer);
    std::string digits;
    for (char ch : answer) if (std::isdigit(static_cast<unsigned char>(ch))) digits += ch;
    ASSERT_FALSE(digits.empty()) << task << ": " << answer;
    EXPECT_NE(tiny->tokenizer->Decode(s.context).find(digits), std::string::npos) << task;
    // Prompt + answer decode to the question followed by the answer.
    std::vector<int64_t> joint = s.prompt;
    joint.insert(joint.end(), s.answer.begin(), s.answer.end());
    EXPECT_NE(tiny->tokenizer->Decode(joint).find(digits), std::string::npos) << task;
  }
  std::mt19937_64 rng(1);
  EXPECT_THROW(MakeSftSample("poetry", *tiny->tokenizer, filler, 100, rng), ModelError);
}

TEST(SftDataTest, PasskeyIgnoreAsksSomethingElseOverAKeyDocument) {
  RuntimeOptions o;
  o.threads = 1;
  auto tiny = LoadModel(std::string(SHAREDLLM_SOURCE_DIR) + "/models/tiny", o);
  // Filler ids count up from 100, so a prompt and its answer must be consecutive runs of it.
  FillerSource filler = [](std::mt19937_64& rng, int64_t count) {
    const int64_t start = 100 + static_cast<int64_t>(rng() % 50);
    std::vector<int64_t> out;
    for (int64_t i = 0; i < count; ++i) out.push_back(start + i);
    return out;
  };
  for (uint64_t seed = 0; seed < 20; ++seed) {
    std::mt19937_64 rng(seed), same(seed);
    const SftSample s = MakeSftSample("passkey_ignore", *tiny->tokenizer, filler, 300, rng);
    const SftSample p = MakeSftSample("passkey", *tiny->tokenizer, filler, 300, same);
    EXPECT_EQ(s.context, p.context) << "the same key document as passkey draws";
    ASSERT_GE(s.prompt.size(), 5u);
    ASSERT_LE(s.prompt.size(), 17u);
    EXPECT_EQ(s.prompt.front(), tiny->tokenizer->bos_id());
    ASSERT_EQ(s.answer.size(), 8u);
    // The answer continues the prompt's text, and neither is the question about the key.
    EXPECT_EQ(s.answer.front(), s.prompt.back() + 1);
    for (size_t i = 1; i < s.answer.size(); ++i) EXPECT_EQ(s.answer[i], s.answer[i - 1] + 1);
    EXPECT_EQ(tiny->tokenizer->Decode(s.prompt).find("pass key"), std::string::npos);
  }
  // Not among the default tasks: configs without sft_tasks train as before.
  const auto& names = SftTaskNames();
  EXPECT_EQ(std::find(names.begin(), names.end(), "passkey_ignore"), names.end());
}

TEST(SftDataTest, CopyAsksForWhatFollowedASpanOfTheContext) {
  RuntimeOptions o;
  o.threads = 1;
  auto tiny = LoadModel(std::string(SHAREDLLM_SOURCE_DIR) + "/models/tiny", o);
  // Every filler draw is a distinct run of ids, so a span locates its position in the context.
  int64_t next_run = 1000;
  FillerSource filler = [&next_run](std::mt19937_64&, int64_t count) {
    std::vector<int64_t> out;
    for (int64_t i = 0; i < count; ++i) out.push_back(next_run + i);
    next_run += 10000;
    return out;
  };
  for (uint64_t seed = 0; seed < 20; ++seed) {
    std::mt19937_64 rng(seed);
    const int64_t length = seed % 2 == 0 ? 64 : 300;
    const SftSample s = MakeSftSample("copy", *tiny->tokenizer, filler, length, rng);
    ASSERT_EQ(static_cast<int64_t>(s.context.size()), length);
    EXPECT_EQ(s.prompt.front(), tiny->tokenizer->bos_id());
    ASSERT_EQ(s.answer.size(), 16u);
    // The answer follows, in the context, the span the prompt ends with (at least 8 tokens).
    const auto at = std::find(s.context.begin(), s.context.end(), s.answer.front());
    ASSERT_NE(at, s.context.end());
    ASSERT_TRUE(std::equal(s.answer.begin(), s.answer.end(), at));
    ASSERT_GE(at - s.context.begin(), 8);
    EXPECT_TRUE(std::equal(at - 8, at, s.prompt.end() - 8));
    // ... after text that is not from the context.
    EXPECT_EQ(std::find(s.context.begin(), s.context.end(), s.prompt[1]), s.context.end());
  }
  std::mt19937_64 rng(1);
  EXPECT_THROW(MakeSftSample("copy", *tiny->tokenizer, filler, 4, rng), ModelError);
}

TEST(TrainerTest, StridesFromTheConfigAreTrainedAtAndSavedWithTheModel) {
  test::TempDir dir;
  TrainConfig c = SharedLLMLanguageModelling(dir, "strides", 2);
  const TrainResult kept = Train(c);
  RuntimeOptions o;
  o.threads = 1;
  EXPECT_EQ(LoadModel(c.out, o)->shared->config().alphas, (std::vector<int64_t>{4, 2}));
  ModelEdit retile;
  retile.tree_depth = 2;
  retile.alphas = {1, 1};
  const std::string init = c.init;
  c.init = Edited(init, dir.path(), "strides-1-init", retile);
  c.out = dir / "strides-1";
  const TrainResult unit = Train(c);
  EXPECT_EQ(LoadModel(c.out, o)->shared->config().alphas, (std::vector<int64_t>{1, 1}));
  // Same seed and data, more context positions: the loss differs, so the strides were used.
  EXPECT_NE(kept.final_loss, unit.final_loss);
  retile.alphas = {1};  // one stride per level (the tree has two)
  EXPECT_THROW(Edited(init, dir.path(), "strides-short", retile), ModelError);
  retile.alphas = {0, 1};
  EXPECT_THROW(Edited(init, dir.path(), "strides-zero", retile), ModelError);
}

TEST(TrainerTest, InjectionDeepenedByTheConfigTrainsAndIsSaved) {
  test::TempDir dir;
  TrainConfig c = SharedLLMLanguageModelling(dir, "deeper", 3);
  ModelEdit deeper;
  deeper.injection_layers = 2;  // the init injects into layer 0 only
  const std::string init = c.init;
  c.init = Edited(init, dir.path(), "deeper-init", deeper);
  Train(c);
  RuntimeOptions o;
  o.threads = 1;
  EXPECT_EQ(LoadModel(c.out, o)->shared->config().num_injection_layers, 2);
  auto after = CheckpointReader::FromFile(c.out + "/sharedllm.safetensors");
  // The new layer's cross-attention started at zero (neutral) and trained.
  EXPECT_GT(after.tensor("model.layers.1.cross_attn.o_proj.weight").abs().sum().item<double>(), 0.0);
  deeper.injection_layers = 3;  // more layers than the base model has
  EXPECT_THROW(Edited(init, dir.path(), "deeper-3", deeper), ModelError);
}

// inherit_o_scale starts the added layer as its own self-attention heads (the trained run differs
// from the neutral start's); it is saved with the recipe, and refused without
// num_injection_layers or below 0.
TEST(TrainerTest, InjectionDeepenedFromTheLayersOwnHeads) {
  test::TempDir dir;
  TrainConfig neutral = SharedLLMLanguageModelling(dir, "deeper-neutral", 3);
  const std::string init = neutral.init;
  ModelEdit deeper;
  deeper.injection_layers = 2;
  neutral.init = Edited(init, dir.path(), "deeper-neutral-init", deeper);
  Train(neutral);
  TrainConfig c = SharedLLMLanguageModelling(dir, "deeper-inherit", 3);
  deeper.inherit_o_scale = 0.5;
  c.init = Edited(init, dir.path(), "deeper-inherit-init", deeper);
  Train(c);
  const std::string name = "model.layers.1.cross_attn.o_proj.weight";
  const auto inherited = CheckpointReader::FromFile(c.out + "/sharedllm.safetensors").tensor(name);
  const auto zero_start =
      CheckpointReader::FromFile(neutral.out + "/sharedllm.safetensors").tensor(name);
  // Three steps move each weight by about lr at most: the inherited run stays near its start,
  // half of the init's self-attention o_proj, and the neutral run near zero.
  const auto start =
      0.5 * CheckpointReader(c.init).tensor("model.layers.1.self_attn.o_proj.weight");
  EXPECT_LT((inherited - start).norm().item<double>(),
            0.5 * (zero_start - start).norm().item<double>());
  deeper.inherit_o_scale = -1;
  EXPECT_THROW(Edited(init, dir.path(), "inherit-negative", deeper), ModelError);
  deeper.inherit_o_scale = 0.5;
  deeper.injection_layers = 0;
  EXPECT_THROW(Edited(init, dir.path(), "inherit-alone", deeper), ModelError);
}

// own_lower: with a separate compressor the added layer reads the base model's own lower layer,
// so the saved copy keeps one layer and the model says so (separate_layers); saved with the
// recipe; refused without num_injection_layers, and without a separate compressor.
TEST(TrainerTest, InjectionDeepenedOntoTheBaseModelsOwnLowerLayers) {
  test::TempDir dir;
  TrainConfig c = SharedLLMLanguageModelling(dir, "deeper-own", 3);
  const std::string init = c.init;
  ModelEdit own;
  own.separate_compressor = true;
  own.injection_layers = 2;
  own.own_lower = true;
  c.init = Edited(init, dir.path(), "deeper-own-init", own);
  Train(c);
  RuntimeOptions o;
  o.threads = 1;
  EXPECT_EQ(LoadModel(c.out, o)->shared->config().separate_layers, 1);
  auto saved = CheckpointReader::FromFile(c.out + "/sharedllm.safetensors");
  EXPECT_TRUE(saved.contains("compressor.0.self_attn.k_proj.weight"));
  EXPECT_FALSE(saved.contains("compressor.1.self_attn.k_proj.weight"));
  own.injection_layers = 0;
  EXPECT_THROW(Edited(init, dir.path(), "own-alone", own), ModelError);
  own.injection_layers = 2;
  own.separate_compressor = false;
  EXPECT_THROW(Edited(init, dir.path(), "own-shared", own), ModelError);
}

// The trainer trains what it loads: a recipe field that would change the model first is refused,
// pointing at `sharedllm edit`, and the removed research switches are unknown fields.
TEST(TrainerTest, SurgeryAndRemovedSwitchesAreRefusedByTheConfig) {
  for (const char* field : {"gate", "sink", "sink_logit", "separate_compressor", "alphas",
                            "num_injection_layers", "inherit_o_scale", "own_lower"}) {
    const std::string text = std::string("{\"mode\": \"lm\", \"") + field + "\": 1}";
    try {
      TrainConfig::FromJsonText(text);
      ADD_FAILURE() << field << " accepted";
    } catch (const ModelError& e) {
      EXPECT_NE(std::string(e.what()).find("sharedllm edit"), std::string::npos) << e.what();
    }
  }
  for (const char* field : {"lm_copy_weight", "lm_foreign_context", "lm_within_document",
                            "sink_keys_ref", "context_top_k"}) {
    const std::string text = std::string("{\"mode\": \"lm\", \"") + field + "\": 1}";
    EXPECT_THROW(TrainConfig::FromJsonText(text), ModelError) << field;
  }
}

// Distillation: off is the run from before; the KL term is exactly 0 where the teacher is the
// model itself and half-weighted beside the cross-entropy; a teacher that reads the context
// (with YaRN past the window) is learnt from; the eval loss stays the cross-entropy.
TEST(TrainerTest, DistillationLearnsTheFullAttentionTeacher) {
  test::TempDir dir;
  ExpectOffIsTheRunFromBefore(dir, [](TrainConfig& c) { c.lm_distill_context = 8; });

  // The untrained cross-attention (zero o_proj) reads nothing, so the model is the truncated one:
  // a teacher that reads no context is the model itself, KL 0.
  TrainConfig held = SharedLLMLanguageModelling(dir, "held", 2);
  held.lr = 0;
  TrainConfig same = held, half = held;
  same.out = dir / "same";
  same.lm_distill = 1;
  same.lm_distill_context = 0;
  half.out = dir / "half";
  half.lm_distill = 0.5;
  half.lm_distill_context = 0;
  const TrainResult h = Train(held), s = Train(same), hf = Train(half);
  EXPECT_GT(h.final_loss, 0.5);
  EXPECT_NEAR(s.final_loss, 0.0, 1e-6);
  EXPECT_NEAR(hf.final_loss, 0.5 * h.final_loss, 1e-5);
  EXPECT_EQ(s.eval_loss, h.eval_loss);

  // A teacher reading 128 context tokens + 16 running ones (past the tiny model's 128-token
  // window: YaRN, factor 1.125): the KL is positive and falls as the cross-attention trains,
  // below the same samples' KL with the weights held.
  const auto reading = [&](const std::string& name, double lr) {
    TrainConfig c = SharedLLMLanguageModelling(dir, name, 30);
    c.context_chunks = 8;
    c.lm_distill = 1;
    c.lm_distill_context = 128;
    c.lr = lr;
    return c;
  };
  const TrainResult fixed = Train(reading("kl-held", 0)), learnt = Train(reading("kl-learnt", 1e-2));
  EXPECT_GT(fixed.final_loss, 1e-3);
  EXPECT_LT(learnt.final_loss, 0.8 * fixed.final_loss);

  TrainConfig round = reading("round", 1e-2);
  const TrainConfig parsed = TrainConfig::FromJsonText(round.ToJsonText());
  EXPECT_EQ(parsed.lm_distill, 1.0);
  EXPECT_EQ(parsed.lm_distill_context, 128);
  round.lm_distill = 1.5;
  EXPECT_THROW(Train(round), ModelError);
  round.lm_distill = 1;
  round.lm_distill_context = -2;
  EXPECT_THROW(Train(round), ModelError);
  TrainConfig base = BaseConfig(dir, "base-distill");
  base.lm_distill = 0.5;
  EXPECT_THROW(Train(base), ModelError);
}

// lm_rename 0 is the run from before, bit for bit; renaming changes the training loss and not
// the eval loss (the text as it is); the fields round-trip and bad values are refused.
TEST(TrainerTest, RenameChangesOnlyTheTrainingLoss) {
  test::TempDir dir;
  ExpectOffIsTheRunFromBefore(dir, [](TrainConfig& c) { c.lm_rename_ids = {3, 61}; });
  const auto rename_all = [](TrainConfig& c) {
    c.lm_rename = 1;
    c.lm_rename_ids = {3, 61};
  };
  const auto [h, y] = HeldPair(dir, rename_all);
  EXPECT_NE(h.final_loss, y.final_loss);
  EXPECT_GT(h.eval_loss, 0.0);
  EXPECT_EQ(h.eval_loss, y.eval_loss);
  TrainConfig renamed = SharedLLMLanguageModelling(dir, "renamed", 2);
  rename_all(renamed);
  const TrainConfig parsed = TrainConfig::FromJsonText(renamed.ToJsonText());
  EXPECT_EQ(parsed.lm_rename, 1.0);
  EXPECT_EQ(parsed.lm_rename_ids, (std::vector<int64_t>{3, 61}));
  const std::vector<std::function<void(TrainConfig&)>> bad = {
      [](TrainConfig& c) { c.lm_rename = 1.5; },
      [](TrainConfig& c) { c.lm_rename_ids.clear(); },
      [](TrainConfig& c) { c.lm_rename_ids = {3, 4}; },    // one id: nothing to rename it to
      [](TrainConfig& c) { c.lm_rename_ids = {3, 62}; }};  // past the 61-id vocabulary
  for (size_t i = 0; i < bad.size(); ++i) {
    TrainConfig c = renamed;
    c.out = dir / ("bad-" + std::to_string(i));
    bad[i](c);
    EXPECT_THROW(Train(c), ModelError) << i;
  }
  TrainConfig base = BaseConfig(dir, "base-rename");
  base.lm_rename = 0.5;
  base.lm_rename_ids = {3, 61};
  EXPECT_THROW(Train(base), ModelError);
}

// Every committed training recipe of the shipped chain (recipes/**.json, less the model files
// config.json and sharedllm.json kept beside them) still parses: no field renamed or dropped from
// under it.
TEST(TrainerTest, CommittedRecipesParse) {
  namespace fs = std::filesystem;
  int parsed = 0;
  for (const auto& e : fs::recursive_directory_iterator(std::string(SHAREDLLM_SOURCE_DIR) + "/recipes")) {
    const fs::path& path = e.path();
    if (path.extension() != ".json") continue;
    if (path.filename() == "config.json" || path.filename() == "sharedllm.json") continue;
    SCOPED_TRACE(path.string());
    TrainConfig c;
    EXPECT_NO_THROW(c = TrainConfig::Load(path.string()));
    EXPECT_TRUE(c.mode == "base" || c.mode == "lm" || c.mode == "sft") << c.mode;
    EXPECT_FALSE(c.out.empty());
    ++parsed;
  }
  EXPECT_GT(parsed, 10);
}

TEST(TrainerTest, RejectsBadConfigs) {
  EXPECT_THROW(TrainConfig::FromJsonText("{\"mode\": \"base\", \"stepz\": 3}"), ModelError);
  EXPECT_THROW(TrainConfig::FromJsonText("{\"steps\": \"many\"}"), ModelError);
  EXPECT_THROW(TrainConfig::FromJsonText("not json"), ModelError);
  test::TempDir dir;
  TrainConfig c = BaseConfig(dir, "bad");
  c.mode = "pretrain";
  EXPECT_THROW(Train(c), ModelError);
  c = BaseConfig(dir, "bad2");
  c.mode = "lm";  // lm needs a SharedLLM init directory
  EXPECT_THROW(Train(c), ModelError);
  c = BaseConfig(dir, "bad-mix");
  c.lm_mix = 0.5;  // mixing is an sft option
  EXPECT_THROW(Train(c), ModelError);
  c = BaseConfig(dir, "bad3");
  c.train_shards = {dir / "missing.bin"};
  EXPECT_THROW(Train(c), ModelError);
  const auto round = TrainConfig::FromJsonText(BaseConfig(dir, "x").ToJsonText());
  EXPECT_EQ(round.ToJsonText(), BaseConfig(dir, "x").ToJsonText());
}

}  // namespace
}  // namespace sharedllm

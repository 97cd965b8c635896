// The sharedllm tool as a user runs it: exit codes, help texts, `new` -> `score`/`generate`, and
// agreement of its output with the library called in-process.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>

#include "llm/decoder.h"
#include "sharedllm/loaded_model.h"
#include "llm/safetensors.h"
#include "llm/scoring.h"
#include "llm/tokenizer.h"
#include "tests/model_util.h"

#ifndef SHAREDLLM_BIN
#error "SHAREDLLM_BIN must name the sharedllm binary"
#endif

namespace sharedllm {
namespace {

using nlohmann::json;
using test::CommandResult;

SharedLLMConfig LoadSharedLLMConfig(const std::string& dir) { return SharedLLMConfig::Load(dir); }
bool Contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

class CliTest : public ::testing::Test {
 protected:
  CommandResult Sharedllm(std::vector<std::string> args) {
    args.insert(args.begin(), SHAREDLLM_BIN);
    return test::Run(args, dir_.path());
  }
  // Writes the tiny test config and runs `new` on it; returns the model directory.
  std::string NewModel(const std::string& name, const ModelConfig& config, int seed,
                       std::vector<std::string> extra = {}) {
    const std::string config_path = dir_ / (name + ".json");
    test::WriteFile(config_path, config.ToJsonText());
    const std::string out = dir_ / name;
    std::vector<std::string> args = {"new", "--config", config_path, "--out", out,
                                     "--seed", std::to_string(seed), "--std", "0.1"};
    args.insert(args.end(), extra.begin(), extra.end());
    const CommandResult r = Sharedllm(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return out;
  }
  static std::string IdList(const std::vector<int64_t>& ids) {
    std::string s;
    for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
    return s;
  }
  static RuntimeOptions OneThread() {
    RuntimeOptions o;
    o.threads = 1;
    return o;
  }
  test::TempDir dir_;
};

// Separate suites, so that ctest runs them in parallel.
class CliUsageTest : public CliTest {};
class CliErrorTest : public CliTest {};

// ---- usage -------------------------------------------------------------------------------------

TEST_F(CliUsageTest, HelpListsTheCommands) {
  for (const char* h : {"--help", "-h", "help"}) {
    const CommandResult r = Sharedllm({h});
    EXPECT_EQ(r.exit_code, 0) << h;
    EXPECT_TRUE(Contains(r.out, "usage: sharedllm COMMAND")) << r.out;
    for (const char* cmd : {"generate", "score", "new"}) {
      EXPECT_TRUE(Contains(r.out, std::string("\n  ") + cmd + " ")) << cmd << " not listed:\n" << r.out;
    }
  }
}

TEST_F(CliUsageTest, NoCommandIsAUsageError) {
  const CommandResult r = Sharedllm({});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.err, "usage: sharedllm COMMAND")) << r.err;
  EXPECT_TRUE(r.out.empty());
}

TEST_F(CliUsageTest, UnknownCommandExits2) {
  const CommandResult r = Sharedllm({"frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.err, "unknown command 'frobnicate'")) << r.err;
}

TEST_F(CliUsageTest, SubcommandHelp) {
  const std::map<std::string, std::vector<std::string>> flags = {
      {"generate", {"--model", "--prompt", "--max-tokens", "--temperature", "--stop", "--threads"}},
      {"score", {"--model", "--token-ids", "--text-file", "--json", "--dtype"}},
      {"new", {"--config", "--out", "--seed", "--tokenizer"}},
  };
  for (const auto& [cmd, names] : flags) {
    const CommandResult r = Sharedllm({cmd, "--help"});
    EXPECT_EQ(r.exit_code, 0) << cmd << ": " << r.err;
    EXPECT_TRUE(Contains(r.out, "usage: sharedllm " + cmd)) << r.out;
    for (const auto& f : names) EXPECT_TRUE(Contains(r.out, f)) << cmd << " help lacks " << f;
  }
}

TEST_F(CliUsageTest, EvalHelpListsEveryTask) {
  const CommandResult r = Sharedllm({"eval", "--help"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "usage: sharedllm eval TASK")) << r.out;
  for (const char* task : {"ppl", "passkey", "ruler", "mathfind", "efficiency"}) {
    EXPECT_TRUE(Contains(r.out, std::string("\n") + task + ":")) << task << " not described:\n" << r.out;
  }
  EXPECT_EQ(Sharedllm({"eval", "frobnicate"}).exit_code, 2);
}

TEST_F(CliUsageTest, UnknownFlagExits2) {
  for (const char* cmd : {"generate", "score", "new"}) {
    const CommandResult r = Sharedllm({cmd, "--bogus", "1"});
    EXPECT_EQ(r.exit_code, 2) << cmd;
    EXPECT_TRUE(Contains(r.err, "unknown flag --bogus")) << r.err;
  }
}

TEST_F(CliUsageTest, MissingRequiredFlagExits2) {
  const CommandResult score = Sharedllm({"score", "--token-ids", "1,2"});
  EXPECT_EQ(score.exit_code, 2);
  EXPECT_TRUE(Contains(score.err, "missing required flag --model")) << score.err;
  const CommandResult make = Sharedllm({"new", "--config", "c.json"});
  EXPECT_EQ(make.exit_code, 2);
  EXPECT_TRUE(Contains(make.err, "missing required flag --out")) << make.err;
  const CommandResult gen = Sharedllm({"generate", "--model", "m"});
  EXPECT_EQ(gen.exit_code, 2);
  EXPECT_TRUE(Contains(gen.err, "missing required flag --prompt")) << gen.err;
  const CommandResult bad = Sharedllm({"generate", "--model", "m", "--prompt", "x", "--max-tokens", "many"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_TRUE(Contains(bad.err, "bad value 'many' for --max-tokens")) << bad.err;
}

// ---- new + score -------------------------------------------------------------------------------

TEST_F(CliTest, NewThenScoreJson) {
  const ModelConfig config = test::TinyConfig();
  const std::string config_path = dir_ / "tiny.json";
  test::WriteFile(config_path, config.ToJsonText());
  const CommandResult made = Sharedllm({"new", "--config", config_path, "--out", dir_ / "m",
                                        "--seed", "3", "--std", "0.1"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  EXPECT_TRUE(Contains(made.err, std::to_string(config.NumParameters()) + " parameters")) << made.err;
  EXPECT_TRUE(test::Exists(dir_ / "m/config.json"));
  EXPECT_TRUE(test::Exists(dir_ / "m/model.safetensors"));
  EXPECT_FALSE(test::Exists(dir_ / "m/tokenizer.model"));

  const std::vector<int64_t> ids = test::SeededIds(9, 61, 41);
  const CommandResult r = Sharedllm({"score", "--model", dir_ / "m", "--token-ids", IdList(ids),
                                     "--json", "--threads", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["tokens"], 9);
  ASSERT_TRUE(j["nll"].is_array());
  ASSERT_EQ(j["nll"].size(), 8u);
  double sum = 0;
  for (const auto& x : j["nll"]) {
    EXPECT_GT(x.get<double>(), 0.0);
    sum += x.get<double>();
  }
  const double mean = j["mean_nll"].get<double>();
  EXPECT_NEAR(mean, sum / 8, 1e-12);
  EXPECT_NEAR(j["ppl"].get<double>(), std::exp(mean), 1e-9 * std::exp(mean));

  // The same numbers as the library in-process on the same files.
  auto model = LoadModel(dir_ / "m", OneThread());
  const std::vector<double> nll = TokenNll(model->lm, ids);
  for (size_t i = 0; i < nll.size(); ++i) EXPECT_NEAR(j["nll"][i].get<double>(), nll[i], 1e-9) << i;
  // And the weights are those of InitRandom(seed 3, std 0.1).
  CausalLM direct = test::TinyModel(config, 3);
  EXPECT_TRUE(at::equal(model->lm->model->embed_tokens->weight, direct->model->embed_tokens->weight));

  // Plain output.
  const CommandResult plain = Sharedllm({"score", "--model", dir_ / "m", "--token-ids", IdList(ids)});
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  char expected[128];
  std::snprintf(expected, sizeof(expected), "tokens 9  mean_nll %.6f  ppl %.4f\n", mean, std::exp(mean));
  EXPECT_EQ(plain.out, expected);
}

TEST_F(CliTest, NewIsSeededAndWritesTheDtype) {
  const ModelConfig config = test::TinyConfig();
  const std::string a = NewModel("a", config, 5), b = NewModel("b", config, 5), c = NewModel("c", config, 6);
  EXPECT_EQ(test::ReadFile(a + "/model.safetensors"), test::ReadFile(b + "/model.safetensors"));
  EXPECT_NE(test::ReadFile(a + "/model.safetensors"), test::ReadFile(c + "/model.safetensors"));
  const std::string h = NewModel("h", config, 5, {"--dtype", "bfloat16"});
  EXPECT_TRUE(Contains(test::ReadFile(h + "/config.json"), "\"torch_dtype\": \"bfloat16\""));
  EXPECT_EQ(SafetensorsFile(h + "/model.safetensors").tensor("lm_head.weight").scalar_type(), at::kBFloat16);
}

TEST_F(CliErrorTest, ScoreBadTokenIdListExits2) {
  const std::string m = NewModel("m", test::TinyConfig(), 1);
  for (const char* bad : {"1,x,3", "1,,2", "one"}) {
    const CommandResult r = Sharedllm({"score", "--model", m, "--token-ids", bad});
    EXPECT_EQ(r.exit_code, 2) << bad;
    EXPECT_TRUE(Contains(r.err, "--token-ids: bad token id")) << r.err;
    EXPECT_TRUE(r.out.empty());
  }
}

TEST_F(CliErrorTest, ScoreOutOfVocabularyIdExits1) {
  const std::string m = NewModel("m", test::TinyConfig(), 1);
  const CommandResult r = Sharedllm({"score", "--model", m, "--token-ids", "1,61,3"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.err, "error: token id 61 is outside the vocabulary [0, 61)")) << r.err;
  const CommandResult neg = Sharedllm({"score", "--model", m, "--token-ids", "1,-2"});
  EXPECT_EQ(neg.exit_code, 1);
  EXPECT_TRUE(Contains(neg.err, "token id -2")) << neg.err;
  const CommandResult one = Sharedllm({"score", "--model", m, "--token-ids", "5"});
  EXPECT_EQ(one.exit_code, 1);
  EXPECT_TRUE(Contains(one.err, "at least two tokens")) << one.err;
}

TEST_F(CliErrorTest, ScoreNeedsExactlyOneInput) {
  const std::string m = NewModel("m", test::TinyConfig(), 1);
  test::WriteFile(dir_ / "t.txt", "hello");
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"score", "--model", m},
           {"score", "--model", m, "--token-ids", "1,2", "--text-file", dir_ / "t.txt"}}) {
    const CommandResult r = Sharedllm(args);
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_TRUE(Contains(r.err, "give exactly one of --token-ids and --text-file")) << r.err;
  }
}

TEST_F(CliErrorTest, ModelErrorsExit1WithMessage) {
  const CommandResult none = Sharedllm({"score", "--model", dir_ / "absent", "--token-ids", "1,2"});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_TRUE(Contains(none.err, "error: no config.json in")) << none.err;
  test::WriteFile(dir_ / "bad.json", "{\"architectures\": [\"LlamaForCausalLM\"]}");
  const CommandResult bad = Sharedllm({"new", "--config", dir_ / "bad.json", "--out", dir_ / "x"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_TRUE(Contains(bad.err, "missing required field 'vocab_size'")) << bad.err;
  const std::string m = NewModel("m", test::TinyConfig(), 1);
  const CommandResult gen = Sharedllm({"generate", "--model", m, "--prompt", "hi"});
  EXPECT_EQ(gen.exit_code, 1);
  EXPECT_TRUE(Contains(gen.err, "has no tokenizer.model")) << gen.err;
  const CommandResult dtype = Sharedllm({"score", "--model", m, "--token-ids", "1,2", "--dtype", "fp8"});
  EXPECT_EQ(dtype.exit_code, 1);
  EXPECT_TRUE(Contains(dtype.err, "unknown dtype 'fp8'")) << dtype.err;
}

// init --inherit-o-scale S starts each cross-attention as its layer's own heads: o_proj is S times
// the self-attention's (0, the default, zero); a negative S is refused (exit 1), nothing written.
TEST_F(CliTest, InitCanStartTheReadersAsTheLayersOwnHeads) {
  const std::string base = NewModel("base", test::TinyConfig(), 7);
  auto init = [&](const std::string& out, std::vector<std::string> extra) {
    std::vector<std::string> args = {"init",         "--base", base, "--out", dir_ / out,
                                     "--layers",     "2",      "--chunk-size", "32",
                                     "--depth",      "2",      "--alphas",     "4,2"};
    args.insert(args.end(), extra.begin(), extra.end());
    return Sharedllm(args);
  };
  ASSERT_EQ(init("neutral", {}).exit_code, 0);
  const CommandResult inherit = init("inherit", {"--inherit-o-scale", "0.5"});
  ASSERT_EQ(inherit.exit_code, 0) << inherit.err;
  CheckpointReader self(base);
  auto neutral = CheckpointReader::FromFile(dir_ / "neutral/sharedllm.safetensors");
  auto inherited = CheckpointReader::FromFile(dir_ / "inherit/sharedllm.safetensors");
  for (const std::string layer : {"0", "1"}) {
    const std::string l = "model.layers." + layer + ".";
    const auto o = self.tensor(l + "self_attn.o_proj.weight");
    ASSERT_GT(o.abs().sum().item<double>(), 0.0);
    EXPECT_TRUE(at::allclose(inherited.tensor(l + "cross_attn.o_proj.weight"), 0.5 * o)) << layer;
    EXPECT_EQ(neutral.tensor(l + "cross_attn.o_proj.weight").abs().sum().item<double>(), 0.0);
  }
  const CommandResult negative = init("negative", {"--inherit-o-scale", "-1"});
  EXPECT_EQ(negative.exit_code, 1);
  EXPECT_TRUE(Contains(negative.err, "inherit_o_scale must be a number >= 0")) << negative.err;
  EXPECT_FALSE(std::filesystem::exists(dir_ / "negative/sharedllm.safetensors"));
}

// `sharedllm edit` writes a changed copy and leaves the input alone: the gate (neutral) keeps every
// score; dropping heads changes them; dropping every head of the top injection layer removes that
// layer, giving exactly the one-layer model `init` writes (tensors and scores); bad edits exit 1 and
// write nothing.
TEST_F(CliTest, EditWritesAChangedCopyAndRemovesSilentTopLayers) {
  const std::string base = NewModel("base", test::TinyConfig(), 7);
  auto init = [&](const std::string& out, const std::string& layers) {
    return Sharedllm({"init", "--base", base, "--out", dir_ / out, "--layers", layers,
                      "--chunk-size", "32", "--depth", "2", "--alphas", "4,2",
                      "--inherit-o-scale", "0.5"});
  };
  ASSERT_EQ(init("m2", "2").exit_code, 0);
  ASSERT_EQ(init("m1", "1").exit_code, 0);
  std::string context;
  for (int i = 0; i < 96; ++i) context += (i ? "," : "") + std::to_string(3 + (i * 7) % 50);
  auto score = [&](const std::string& model) {
    const CommandResult r = Sharedllm({"score", "--model", model, "--token-ids", "5,9,13,4,8,21,30",
                                       "--context-token-ids", context, "--json", "--threads", "1"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out)["nll"];
  };
  auto edit = [&](const std::string& out, std::vector<std::string> extra) {
    std::vector<std::string> args = {"edit", "--model", dir_ / "m2", "--out", dir_ / out};
    args.insert(args.end(), extra.begin(), extra.end());
    return Sharedllm(args);
  };
  const auto original = score(dir_ / "m2");
  ASSERT_EQ(edit("gated", {"--gate"}).exit_code, 0);
  EXPECT_EQ(score(dir_ / "gated"), original);
  EXPECT_TRUE(LoadSharedLLMConfig(dir_ / "gated").gate);
  EXPECT_FALSE(LoadSharedLLMConfig(dir_ / "m2").gate);  // the input is left as it was

  const int64_t heads = test::TinyConfig().num_attention_heads;
  std::string top;
  for (int64_t h = 0; h < heads; ++h) top += (h ? ",1:" : "1:") + std::to_string(h);
  ASSERT_EQ(edit("one-head-less", {"--drop-heads", "0:1"}).exit_code, 0);
  EXPECT_NE(score(dir_ / "one-head-less"), original);
  const CommandResult silent = edit("silent-top", {"--drop-heads", top});
  ASSERT_EQ(silent.exit_code, 0) << silent.err;
  EXPECT_EQ(LoadSharedLLMConfig(dir_ / "silent-top").num_injection_layers, 1);
  auto written = CheckpointReader::FromFile(dir_ / "silent-top/sharedllm.safetensors");
  auto one = CheckpointReader::FromFile(dir_ / "m1/sharedllm.safetensors");
  EXPECT_EQ(written.names(), one.names());
  for (const auto& name : one.names()) EXPECT_TRUE(at::equal(written.tensor(name), one.tensor(name))) << name;
  EXPECT_EQ(score(dir_ / "silent-top"), score(dir_ / "m1"));
  // A separate compressor: the removed layer's copy goes too. A split one (the copy holds fewer
  // layers than M, the layers above read the base's own): removing its top layer leaves the
  // one-layer separate model it was deepened from, tensor for tensor.
  ASSERT_EQ(edit("sep", {"--separate-compressor"}).exit_code, 0);
  ASSERT_EQ(Sharedllm({"edit", "--model", dir_ / "sep", "--out", dir_ / "sep-1", "--drop-heads", top}).exit_code, 0);
  auto sep1 = CheckpointReader::FromFile(dir_ / "sep-1/sharedllm.safetensors");
  EXPECT_TRUE(sep1.contains("compressor.0.self_attn.k_proj.weight"));
  EXPECT_FALSE(sep1.contains("compressor.1.self_attn.k_proj.weight"));
  EXPECT_EQ(LoadSharedLLMConfig(dir_ / "sep-1").compressor, "separate");
  ASSERT_EQ(Sharedllm({"edit", "--model", dir_ / "m1", "--out", dir_ / "s1", "--separate-compressor"}).exit_code, 0);
  const CommandResult split = Sharedllm({"edit", "--model", dir_ / "s1", "--out", dir_ / "split",
                                         "--injection-layers", "2", "--own-lower"});
  ASSERT_EQ(split.exit_code, 0) << split.err;
  EXPECT_EQ(LoadSharedLLMConfig(dir_ / "split").separate_layers, 1);
  ASSERT_EQ(Sharedllm({"edit", "--model", dir_ / "split", "--out", dir_ / "split-1", "--drop-heads", top}).exit_code, 0);
  const SharedLLMConfig split1 = LoadSharedLLMConfig(dir_ / "split-1");
  EXPECT_EQ(split1.num_injection_layers, 1);
  EXPECT_EQ(split1.separate_layers, 0);
  auto s1 = CheckpointReader::FromFile(dir_ / "s1/sharedllm.safetensors");
  auto back = CheckpointReader::FromFile(dir_ / "split-1/sharedllm.safetensors");
  EXPECT_EQ(back.names(), s1.names());
  for (const auto& name : s1.names()) EXPECT_TRUE(at::equal(back.tensor(name), s1.tensor(name))) << name;

  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"--drop-heads", "1:" + std::to_string(heads)},
        {"--drop-heads", "5:0"}, {"--drop-heads", "1"}, {"--injection-layers", "9"},
        {"--depth", "2"}, {"--inherit-o-scale", "0.5"}}) {
    const CommandResult r = edit("bad", bad);
    EXPECT_EQ(r.exit_code, 1) << bad[0] << " " << bad[1];
    EXPECT_TRUE(Contains(r.err, "error:")) << r.err;
    EXPECT_FALSE(std::filesystem::exists(dir_ / "bad")) << bad[0] << " " << bad[1];
  }
  const CommandResult same = Sharedllm({"edit", "--model", dir_ / "m2", "--out", dir_ / "m2", "--gate"});
  EXPECT_EQ(same.exit_code, 1);
  EXPECT_TRUE(Contains(same.err, "--out must differ from --model")) << same.err;
  EXPECT_FALSE(LoadSharedLLMConfig(dir_ / "m2").gate);
  const CommandResult plain = Sharedllm({"edit", "--model", base, "--out", dir_ / "p", "--gate"});
  EXPECT_EQ(plain.exit_code, 1);
}

// ---- eval ppl --full-attention-from --------------------------------------------------------------

// The full-attention baselines of an earlier run are reused only on the same windows: copied
// exactly, refused (exit 1) when the truncated perplexities show other windows, and never together
// with --full-attention-max.
TEST_F(CliTest, EvalPplReusesFullAttentionBaselinesOfTheSameWindows) {
  const std::string base = NewModel("base", test::TinyConfig(), 7);
  const std::string model = dir_ / "sl";
  const CommandResult init = Sharedllm({"init", "--base", base, "--out", model, "--layers", "1",
                                        "--chunk-size", "32", "--depth", "2", "--alphas", "4,2"});
  ASSERT_EQ(init.exit_code, 0) << init.err;
  const std::string shard = dir_ / "heldout.bin";
  test::WriteTokenShard(shard, 61, {test::SeededIds(4 * 128 + 10, 61, 3),
                                    test::SeededIds(4 * 128 + 10, 61, 4)});
  auto eval = [&](const std::string& seed, std::vector<std::string> extra) {
    std::vector<std::string> args = {"eval", "ppl", "--model", model, "--shard", shard,
                                     "--lengths", "1,2,4", "--windows", "2", "--seed", seed,
                                     "--threads", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    return Sharedllm(args);
  };
  const std::string measured = dir_ / "measured.json";
  const CommandResult a = eval("1", {"--full-attention-max", "2", "--out", measured});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  const CommandResult b = eval("1", {"--full-attention-from", measured});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  const json ja = json::parse(a.out), jb = json::parse(b.out);
  ASSERT_EQ(jb["points"].size(), 3u);
  EXPECT_EQ(jb["full_attention_from"], measured);
  for (size_t i = 0; i < 3; ++i) {
    const json &pa = ja["points"][i], &pb = jb["points"][i];
    EXPECT_EQ(pb["truncated_ppl"], pa["truncated_ppl"]) << i;
    EXPECT_EQ(pb["sharedllm_ppl"], pa["sharedllm_ppl"]) << i;
    EXPECT_EQ(pb["log_ratio_se"], pa["log_ratio_se"]) << i;
    EXPECT_GE(pb["log_ratio_se"].get<double>(), 0.0) << i;
    EXPECT_EQ(pb["streaming_log_ratio_se"], pa["streaming_log_ratio_se"]) << i;
    EXPECT_GE(pb["streaming_log_ratio_se"].get<double>(), 0.0) << i;
    EXPECT_EQ(pb.contains("full_linear_ppl"), pa.contains("full_linear_ppl")) << i;
  }
  // Measured at 2x only (1x is the truncated model, 4x is above the maximum); copied bit for bit.
  EXPECT_FALSE(jb["points"][0].contains("full_linear_ppl"));
  ASSERT_TRUE(ja["points"][1].contains("full_yarn_ppl"));
  EXPECT_GT(ja["points"][1]["full_linear_ppl"].get<double>(), 1.0);
  EXPECT_EQ(jb["points"][1]["full_linear_ppl"], ja["points"][1]["full_linear_ppl"]);
  EXPECT_EQ(jb["points"][1]["full_yarn_ppl"], ja["points"][1]["full_yarn_ppl"]);
  EXPECT_FALSE(jb["points"][2].contains("full_linear_ppl"));

  // Other windows (another seed): refused, nothing copied.
  const CommandResult other = eval("2", {"--full-attention-from", measured});
  EXPECT_EQ(other.exit_code, 1);
  EXPECT_TRUE(Contains(other.err, "was measured on other windows")) << other.err;
  // Not a ppl result; no such file; both flags.
  test::WriteFile(dir_ / "other.json", R"({"task": "passkey", "points": []})");
  const CommandResult wrong = eval("1", {"--full-attention-from", dir_ / "other.json"});
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_TRUE(Contains(wrong.err, "is not an `eval ppl` result")) << wrong.err;
  const CommandResult missing = eval("1", {"--full-attention-from", dir_ / "none.json"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_TRUE(Contains(missing.err, "cannot read")) << missing.err;
  const CommandResult both = eval("1", {"--full-attention-max", "2", "--full-attention-from", measured});
  EXPECT_EQ(both.exit_code, 2);
  EXPECT_TRUE(Contains(both.err, "exclude each other")) << both.err;
}

// ---- with a tokenizer --------------------------------------------------------------------------

class CliTextTest : public CliTest {
 protected:
  void SetUp() override {
    std::string why;
    spm_ = test::TrainTokenizer(dir_, &why);
    if (spm_.empty()) GTEST_SKIP() << why;
    tokenizer_ = LoadSentencePieceTokenizer(spm_);
    config_ = test::TinyConfig();
    config_.vocab_size = tokenizer_->vocab_size();
    config_.eos_token_ids = {tokenizer_->eos_id()};
  }
  std::string spm_;
  std::unique_ptr<Tokenizer> tokenizer_;
  ModelConfig config_;
};

// A recipe written for a GPU (device "cuda:7", 8 threads) runs on this CPU with --device and
// --threads, and the run records the settings it used.
TEST_F(CliTest, TrainDeviceAndThreadsFlagsOverrideTheRecipe) {
  const std::string model = NewModel("m", test::TinyConfig(), 3);
  const std::string shard = dir_ / "train.bin";
  std::vector<std::vector<int64_t>> docs;
  for (int d = 0; d < 4; ++d) docs.push_back(test::SeededIds(64, 61, 10 + d));
  test::WriteTokenShard(shard, 61, docs);
  const std::string run = dir_ / "run";
  const json recipe = {{"mode", "base"}, {"init", model}, {"out", run},
                       {"train_shards", {shard}}, {"eval_shards", json::array()},
                       {"seq_len", 8}, {"batch_size", 2}, {"steps", 2}, {"warmup_steps", 1},
                       {"lr", 1e-3}, {"checkpoint_every", 2}, {"eval_every", 0},
                       {"threads", 8}, {"device", "cuda:7"}, {"seed", 1}};
  const std::string path = dir_ / "recipe.json";
  test::WriteFile(path, recipe.dump());
  const CommandResult r =
      Sharedllm({"train", "base", "--config", path, "--device", "cpu", "--threads", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(test::Exists(run + "/train_log.jsonl"));
  const json used = json::parse(test::ReadFile(run + "/checkpoint/state.json"))["config"];
  EXPECT_EQ(used["device"], "cpu");
  EXPECT_EQ(used["threads"], 1);
}

TEST_F(CliTextTest, NewRejectsTokenizerLargerThanVocab) {
  const std::string config_path = dir_ / "small.json";
  test::WriteFile(config_path, test::TinyConfig().ToJsonText());  // 61 < the tokenizer's pieces
  const CommandResult r = Sharedllm({"new", "--config", config_path, "--out", dir_ / "m", "--tokenizer", spm_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.err, "more than vocab_size 61")) << r.err;
}

TEST_F(CliTextTest, ScoreTextFile) {
  const std::string m = NewModel("m", config_, 2, {"--tokenizer", spm_});
  EXPECT_EQ(test::ReadFile(m + "/tokenizer.model"), test::ReadFile(spm_));
  const std::string text = "hello world, this is the end";
  test::WriteFile(dir_ / "t.txt", text);
  const std::vector<int64_t> ids = tokenizer_->Encode(text);
  const CommandResult r = Sharedllm({"score", "--model", m, "--text-file", dir_ / "t.txt", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["tokens"], ids.size() + 1);  // BOS prepended
  const CommandResult no_bos = Sharedllm({"score", "--model", m, "--text-file", dir_ / "t.txt", "--json",
                                          "--no-bos"});
  ASSERT_EQ(no_bos.exit_code, 0) << no_bos.err;
  const json j = json::parse(no_bos.out);
  EXPECT_EQ(j["tokens"], ids.size());
  // Same as scoring the ids directly.
  const CommandResult direct = Sharedllm({"score", "--model", m, "--token-ids", IdList(ids), "--json"});
  ASSERT_EQ(direct.exit_code, 0) << direct.err;
  EXPECT_EQ(json::parse(direct.out), j);
}

TEST_F(CliTextTest, GenerateMatchesTheLibrary) {
  const std::string m = NewModel("m", config_, 2, {"--tokenizer", spm_});
  const CommandResult r = Sharedllm({"generate", "--model", m, "--prompt", "hello world", "--max-tokens", "6",
                                     "--threads", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<int64_t> prompt_ids = tokenizer_->Encode("hello world");
  EXPECT_TRUE(Contains(r.err, "[prompt " + std::to_string(prompt_ids.size() + 1) + " tokens, generated "))
      << r.err;
  // The same greedy generation in-process.
  auto model = LoadModel(m, OneThread());
  std::vector<int64_t> ids = {tokenizer_->bos_id()};
  ids.insert(ids.end(), prompt_ids.begin(), prompt_ids.end());
  SamplingOptions o;
  o.max_tokens = 6;
  std::string streamed;
  const GenerationResult expected = Decoder(model->lm).Generate(
      ids, o, model->tokenizer.get(), [&](const std::string& d) { streamed += d; return true; });
  EXPECT_TRUE(Contains(r.err, "generated " + std::to_string(expected.tokens.size()) + ", finish " +
                                  FinishReasonName(expected.finish)))
      << r.err;
  EXPECT_EQ(r.out, streamed + "\n");  // stdout is the stream

  const CommandResult quiet = Sharedllm({"generate", "--model", m, "--prompt", "hello world", "--max-tokens",
                                         "6", "--quiet"});
  ASSERT_EQ(quiet.exit_code, 0) << quiet.err;
  EXPECT_EQ(quiet.out, r.out);  // greedy: deterministic
  EXPECT_TRUE(quiet.err.empty()) << quiet.err;

  const CommandResult zero = Sharedllm({"generate", "--model", m, "--prompt", "x", "--max-tokens", "0"});
  EXPECT_EQ(zero.exit_code, 1);
  EXPECT_TRUE(Contains(zero.err, "--max-tokens must be positive")) << zero.err;
}

TEST_F(CliTextTest, GenerateSamplingIsSeeded) {
  const std::string m = NewModel("m", config_, 2, {"--tokenizer", spm_});
  auto gen = [&](const std::string& seed) {
    const CommandResult r = Sharedllm({"generate", "--model", m, "--prompt", "the", "--max-tokens", "12",
                                       "--temperature", "1.0", "--seed", seed, "--quiet"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out;
  };
  const std::string a = gen("7");
  EXPECT_EQ(gen("7"), a);
  EXPECT_NE(gen("8"), a);
}

}  // namespace
}  // namespace sharedllm

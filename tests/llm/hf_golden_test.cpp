// The C++ model against Hugging Face transformers itself: tests/fixtures/hf/* are tiny random
// checkpoints that transformers wrote with save_pretrained (its own config.json layout: v5's
// rope_parameters, tied embeddings, Qwen2 biases, a Mistral sliding window, llama3 / yarn / linear
// rotary scaling), with transformers' float64 token NLLs and greedy continuations
// (tests/reference/hf_golden.py, run on the GPU machine by scripts/gpu_check.sh).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "llm/decoder.h"
#include "llm/kv_cache.h"
#include "sharedllm/loaded_model.h"
#include "llm/scoring.h"

namespace sharedllm {
namespace {

const std::string kRoot = std::string(SHAREDLLM_SOURCE_DIR) + "/tests/fixtures/hf/";

struct Golden {
  std::vector<int64_t> token_ids, prompt, greedy;
  std::vector<double> nll;
};

Golden ReadGolden(const std::string& dir) {
  std::ifstream in(dir + "/golden.json");
  nlohmann::json j = nlohmann::json::parse(in);
  return {j["token_ids"].get<std::vector<int64_t>>(), j["prompt"].get<std::vector<int64_t>>(),
          j["greedy"].get<std::vector<int64_t>>(), j["nll"].get<std::vector<double>>()};
}

// Each case: its golden outputs and the checkpoint loaded by the C++ model.
class HfGoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string dir = kRoot + GetParam();
    g = ReadGolden(dir);
    model = LoadModel(dir, RuntimeOptions{});
  }
  Golden g;
  std::shared_ptr<LoadedModel> model;
};

TEST_P(HfGoldenTest, TokenNllMatchesTransformers) {
  const std::vector<double> nll = TokenNll(model->lm, g.token_ids);
  ASSERT_EQ(nll.size(), g.nll.size());
  double worst = 0;
  for (size_t i = 0; i < nll.size(); ++i) worst = std::max(worst, std::abs(nll[i] - g.nll[i]));
  EXPECT_LT(worst, 1e-4) << GetParam() << ": float32 against transformers' float64";
}

TEST_P(HfGoldenTest, GreedyDecodingOnTheKvCacheMatchesTransformers) {
  SamplingOptions options;
  options.max_tokens = static_cast<int64_t>(g.greedy.size());
  options.stop_at_eos = false;
  Decoder decoder(model->lm);
  const GenerationResult r = decoder.Generate(g.prompt, options, nullptr);
  EXPECT_EQ(r.tokens, g.greedy) << GetParam();
}

// Token by token on the KV cache over all 96 positions: past the Mistral window (24) and past
// the rope-scaled cases' original window (64), where greedy decoding from 8 tokens never goes.
TEST_P(HfGoldenTest, TokenByTokenDecodingMatchesTransformersNll) {
  Decoder decoder(model->lm);
  KVCache cache = model->lm->NewCache();
  const size_t first = 8;
  at::Tensor logits = decoder.Prefill({g.token_ids.begin(), g.token_ids.begin() + first}, cache);
  double worst = 0;
  for (size_t t = first - 1; t + 1 < g.token_ids.size(); ++t) {
    if (t >= first) logits = decoder.DecodeOneToken(g.token_ids[t], cache);
    const double nll = -at::log_softmax(logits.to(at::kDouble), -1)[g.token_ids[t + 1]].item<double>();
    worst = std::max(worst, std::abs(nll - g.nll[t]));
  }
  EXPECT_EQ(cache.length(), static_cast<int64_t>(g.token_ids.size()) - 1);
  EXPECT_LT(worst, 1e-4) << GetParam();
}

// Empty when the fixtures are missing (AllSevenCasesArePresent then fails; a throw here, during
// test registration, would abort the whole binary instead).
std::vector<std::string> Cases() {
  std::vector<std::string> names;
  std::error_code error;
  for (const auto& e : std::filesystem::directory_iterator(kRoot, error)) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfGoldenTest, ::testing::ValuesIn(Cases()),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n) if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

TEST(HfGoldenFixturesTest, AllSevenCasesArePresent) {
  // A lost fixture directory would silently shrink the parameterised suite.
  EXPECT_EQ(Cases().size(), 7u);
}

}  // namespace
}  // namespace sharedllm

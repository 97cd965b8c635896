// ModelConfig: parsing Hugging Face config.json texts of the supported families, the JSON it
// writes back, and the errors for invalid configs.
#include "llm/config.h"
#include "llm/json_fields.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "llm/errors.h"
#include "tests/test_util.h"

namespace sharedllm {
namespace {

using nlohmann::json;

// Llama-2-7B's config.json (abridged only by fields the parser ignores).
const char* kLlama2_7B = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
  "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
  "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
  "rms_norm_eps": 1e-05, "max_position_embeddings": 4096, "rope_scaling": null,
  "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": false,
  "torch_dtype": "float16", "pretraining_tp": 1, "use_cache": true, "initializer_range": 0.02
})";

// Llama-3.1-8B: GQA 32/8, rope_theta 5e5, llama3 rope scaling, a list of EOS ids.
const char* kLlama31_8B = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
  "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "max_position_embeddings": 131072,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "attention_bias": false, "mlp_bias": false, "tie_word_embeddings": false,
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "torch_dtype": "bfloat16"
})";

// Mistral-7B-v0.1: sliding window 4096.
const char* kMistral7B = R"({
  "architectures": ["MistralForCausalLM"], "model_type": "mistral",
  "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
  "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "max_position_embeddings": 32768,
  "sliding_window": 4096, "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2,
  "torch_dtype": "bfloat16"
})";

// Qwen2-0.5B: tied embeddings, q/k/v biases, a sliding_window field that Qwen2 does not use.
const char* kQwen2_05B = R"({
  "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
  "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
  "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "max_position_embeddings": 32768,
  "sliding_window": 32768, "use_sliding_window": false, "max_window_layers": 21,
  "tie_word_embeddings": true, "bos_token_id": 151643, "eos_token_id": 151643,
  "torch_dtype": "bfloat16"
})";

// A small Llama config with `extra` merged in (JSON object text without braces).
std::string Small(const std::string& extra = "") {
  std::string s = R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 100, "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2)";
  if (!extra.empty()) s += ", " + extra;
  return s + "}";
}

// The error message of FromJsonText(text); fails the test when it does not throw ModelError.
std::string ErrorOf(const std::string& text) {
  try {
    ModelConfig::FromJsonText(text);
  } catch (const ModelError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-ModelError: " << e.what();
    return "";
  }
  ADD_FAILURE() << "did not throw for: " << text;
  return "";
}

void ExpectSameConfig(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.architecture, b.architecture);
  EXPECT_EQ(a.model_type, b.model_type);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.num_hidden_layers, b.num_hidden_layers);
  EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
  EXPECT_EQ(a.num_key_value_heads, b.num_key_value_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_DOUBLE_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_DOUBLE_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.rope_scaling.type, b.rope_scaling.type);
  EXPECT_DOUBLE_EQ(a.rope_scaling.factor, b.rope_scaling.factor);
  EXPECT_EQ(a.rope_scaling.original_max_position_embeddings,
            b.rope_scaling.original_max_position_embeddings);
  EXPECT_DOUBLE_EQ(a.rope_scaling.low_freq_factor, b.rope_scaling.low_freq_factor);
  EXPECT_DOUBLE_EQ(a.rope_scaling.high_freq_factor, b.rope_scaling.high_freq_factor);
  EXPECT_DOUBLE_EQ(a.rope_scaling.beta_fast, b.rope_scaling.beta_fast);
  EXPECT_DOUBLE_EQ(a.rope_scaling.beta_slow, b.rope_scaling.beta_slow);
  EXPECT_EQ(a.rope_scaling.attention_factor, b.rope_scaling.attention_factor);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.qkv_bias, b.qkv_bias);
  EXPECT_EQ(a.o_bias, b.o_bias);
  EXPECT_EQ(a.mlp_bias, b.mlp_bias);
  EXPECT_EQ(a.sliding_window, b.sliding_window);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);
  EXPECT_EQ(a.torch_dtype, b.torch_dtype);
}

// A number an integer field cannot hold exactly (1e250: converting it is undefined behaviour,
// found by fuzz/model_files_fuzz; 2.5; -1 for a count) is a wrong type, reported as such.
TEST(ConfigTest, IntegerFieldsMustHoldIntegers) {
  for (const std::string bad : {"1e250", "2.5", "\"4096\""}) {
    std::string text = kLlama2_7B;
    const size_t at = text.find("\"hidden_size\": 4096");
    ASSERT_NE(at, std::string::npos);
    text.replace(at, std::string("\"hidden_size\": 4096").size(), "\"hidden_size\": " + bad);
    try {
      ModelConfig::FromJsonText(text);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const ModelError& e) {
      EXPECT_NE(std::string(e.what()).find("hidden_size"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(JsonGet<std::vector<int64_t>>(nlohmann::json::parse("[1, 2]")), (std::vector<int64_t>{1, 2}));
  EXPECT_THROW(JsonGet<std::vector<int64_t>>(nlohmann::json::parse("[1, 2e30]")), nlohmann::json::exception);
  EXPECT_THROW(JsonGet<uint64_t>(nlohmann::json::parse("-1")), nlohmann::json::exception);
  EXPECT_THROW(JsonGet<int32_t>(nlohmann::json::parse("3000000000")), nlohmann::json::exception);
  EXPECT_EQ(JsonGet<int64_t>(nlohmann::json::parse("-7")), -7);
  // JsonValueOr: a wrong type or an unrepresentable number counts as absent.
  const auto record = nlohmann::json::parse(R"({"a": 5, "b": 1e300, "c": "x", "d": null})");
  EXPECT_EQ(JsonValueOr<int64_t>(record, "a", 0), 5);
  EXPECT_EQ(JsonValueOr<int64_t>(record, "b", 0), 0);
  EXPECT_EQ(JsonValueOr<int64_t>(record, "c", 3), 3);
  EXPECT_EQ(JsonValueOr<std::string>(record, "a", "f"), "f");
  EXPECT_EQ(JsonValueOr<std::string>(record, "c", "f"), "x");
  EXPECT_EQ(JsonValueOr<int64_t>(record, "missing", 9), 9);
}

TEST(ConfigTest, Llama2) {
  const ModelConfig c = ModelConfig::FromJsonText(kLlama2_7B);
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_EQ(c.num_key_value_heads, 32);
  EXPECT_EQ(c.kv_groups(), 1);
  EXPECT_EQ(c.head_dim, 128);  // default: hidden / heads
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.rope_scaling.type, RopeType::kDefault);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_FALSE(c.mlp_bias);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>({2}));
  EXPECT_EQ(c.torch_dtype, "float16");
  EXPECT_EQ(c.NumParameters(), 6738415616);  // the published Llama-2-7B count
}

TEST(ConfigTest, Llama31GqaRopeLlama3AndEosList) {
  const ModelConfig c = ModelConfig::FromJsonText(kLlama31_8B);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.kv_groups(), 4);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeType::kLlama3);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>({128001, 128008, 128009}));
  EXPECT_EQ(c.NumParameters(), 8030261248);  // the published Llama-3.1-8B count
}

// Mistral-7B-v0.2 style: "sliding_window": null.
std::string MistralNullWindow() {
  std::string v02 = kMistral7B;
  const std::string from = "\"sliding_window\": 4096";
  v02.replace(v02.find(from), from.size(), "\"sliding_window\": null");
  return v02;
}

TEST(ConfigTest, MistralSlidingWindowNumberAndNull) {
  const ModelConfig c = ModelConfig::FromJsonText(kMistral7B);
  EXPECT_EQ(c.architecture, "MistralForCausalLM");
  EXPECT_EQ(c.model_type, "mistral");
  EXPECT_EQ(c.sliding_window, 4096);
  EXPECT_EQ(c.kv_groups(), 4);
  EXPECT_FALSE(c.qkv_bias);

  const std::string v02 = MistralNullWindow();
  ASSERT_NE(v02.find("\"sliding_window\": null"), std::string::npos);
  const ModelConfig n = ModelConfig::FromJsonText(v02);
  EXPECT_EQ(n.sliding_window, 0);
  EXPECT_EQ(n.hidden_size, 4096);

  // Without `architectures`, model_type selects the family.
  const ModelConfig m = ModelConfig::FromJsonText(
      R"({"model_type": "mistral", "vocab_size": 10, "hidden_size": 16, "intermediate_size": 32,
          "num_hidden_layers": 1, "num_attention_heads": 2, "sliding_window": 7})");
  EXPECT_EQ(m.architecture, "MistralForCausalLM");
  EXPECT_EQ(m.sliding_window, 7);
  EXPECT_EQ(m.num_key_value_heads, 2);  // defaults to the query heads (MHA)
}

TEST(ConfigTest, SlidingWindowOnlyForMistral) {
  // A Llama config that happens to carry sliding_window must not get a banded mask.
  EXPECT_EQ(ModelConfig::FromJsonText(Small("\"sliding_window\": 16")).sliding_window, 0);
  EXPECT_EQ(ModelConfig::FromJsonText(kQwen2_05B).sliding_window, 0);
}

TEST(ConfigTest, Qwen2) {
  const ModelConfig c = ModelConfig::FromJsonText(kQwen2_05B);
  EXPECT_EQ(c.architecture, "Qwen2ForCausalLM");
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.kv_groups(), 7);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_TRUE(c.qkv_bias);   // always, without attention_bias in the file
  EXPECT_FALSE(c.o_bias);    // never
  EXPECT_FALSE(c.mlp_bias);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>({151643}));
  EXPECT_EQ(c.NumParameters(), 494032768);  // the published Qwen2-0.5B count

  // model_type alone selects Qwen2 too.
  const ModelConfig q = ModelConfig::FromJsonText(
      R"({"model_type": "qwen2", "vocab_size": 10, "hidden_size": 16, "intermediate_size": 32,
          "num_hidden_layers": 1, "num_attention_heads": 2})");
  EXPECT_EQ(q.architecture, "Qwen2ForCausalLM");
  EXPECT_TRUE(q.qkv_bias);
  EXPECT_FALSE(q.o_bias);
}

TEST(ConfigTest, HeadDimDefaultAndExplicit) {
  EXPECT_EQ(ModelConfig::FromJsonText(Small()).head_dim, 16);
  const ModelConfig c = ModelConfig::FromJsonText(Small("\"head_dim\": 32"));
  EXPECT_EQ(c.head_dim, 32);
  // q_proj is [heads * head_dim, hidden]: 4 * 32 * 64 per q and o, 2 * 32 * 64 per k and v.
  const int64_t attn = 2 * 4 * 32 * 64 + 2 * 2 * 32 * 64;
  const int64_t mlp = 3 * 64 * 128;
  EXPECT_EQ(c.NumParameters(), 2 * (attn + mlp + 2 * 64) + 64 + 2 * 100 * 64);
}

TEST(ConfigTest, AttentionBiasAndMlpBiasForLlama) {
  const ModelConfig c = ModelConfig::FromJsonText(Small("\"attention_bias\": true"));
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_TRUE(c.o_bias);
  EXPECT_FALSE(c.mlp_bias);
  const ModelConfig m = ModelConfig::FromJsonText(Small("\"mlp_bias\": true"));
  EXPECT_FALSE(m.qkv_bias);
  EXPECT_FALSE(m.o_bias);
  EXPECT_TRUE(m.mlp_bias);
  const ModelConfig plain = ModelConfig::FromJsonText(Small());
  EXPECT_EQ(c.NumParameters() - plain.NumParameters(), 2 * (64 + 2 * 32 + 64));
}

TEST(ConfigTest, TieWordEmbeddings) {
  const ModelConfig untied = ModelConfig::FromJsonText(Small());
  const ModelConfig tied = ModelConfig::FromJsonText(Small("\"tie_word_embeddings\": true"));
  EXPECT_FALSE(untied.tie_word_embeddings);
  EXPECT_TRUE(tied.tie_word_embeddings);
  EXPECT_EQ(untied.NumParameters() - tied.NumParameters(), 100 * 64);
}

TEST(ConfigTest, RopeScalingTypeAndRopeTypeKeys) {
  struct Case {
    const char* scaling;
    RopeType type;
    double factor;
  };
  const Case cases[] = {
      {R"({"type": "linear", "factor": 2.0})", RopeType::kLinear, 2.0},
      {R"({"rope_type": "linear", "factor": 3.0})", RopeType::kLinear, 3.0},
      {R"({"type": "dynamic", "factor": 4.0})", RopeType::kDynamic, 4.0},
      {R"({"rope_type": "dynamic", "factor": 2.5})", RopeType::kDynamic, 2.5},
      {R"({"type": "yarn", "factor": 4.0})", RopeType::kYarn, 4.0},
      {R"({"rope_type": "yarn", "factor": 8.0})", RopeType::kYarn, 8.0},
      {R"({"type": "llama3", "factor": 8.0})", RopeType::kLlama3, 8.0},
      {R"({"rope_type": "llama3", "factor": 16.0})", RopeType::kLlama3, 16.0},
      {R"({"rope_type": "default"})", RopeType::kDefault, 1.0},
      // Transformers writes both keys; rope_type is the one that counts.
      {R"({"type": "linear", "rope_type": "dynamic", "factor": 2.0})", RopeType::kDynamic, 2.0},
  };
  for (const auto& k : cases) {
    SCOPED_TRACE(k.scaling);
    const ModelConfig c = ModelConfig::FromJsonText(Small(std::string("\"rope_scaling\": ") + k.scaling));
    EXPECT_EQ(c.rope_scaling.type, k.type);
    EXPECT_DOUBLE_EQ(c.rope_scaling.factor, k.factor);
  }
}

// transformers >= 5 writes rope_parameters (theta inside it) and dtype, and no rope_theta,
// rope_scaling or torch_dtype (tests/fixtures/hf/*/config.json are such files).
TEST(ConfigTest, TransformersV5RopeParametersAndDtype) {
  const ModelConfig c = ModelConfig::FromJsonText(Small(R"("dtype": "bfloat16",
      "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                          "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 64})"));
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeType::kLlama3);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 64);
  EXPECT_EQ(c.torch_dtype, "bfloat16");

  const ModelConfig d = ModelConfig::FromJsonText(
      Small(R"("rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0})"));
  EXPECT_DOUBLE_EQ(d.rope_theta, 1e6);
  EXPECT_EQ(d.rope_scaling.type, RopeType::kDefault);

  // Both forms: rope_parameters is the one transformers reads.
  const ModelConfig both = ModelConfig::FromJsonText(Small(R"("rope_theta": 10000.0,
      "rope_scaling": {"rope_type": "linear", "factor": 2.0},
      "rope_parameters": {"rope_type": "yarn", "rope_theta": 20000.0, "factor": 4.0})"));
  EXPECT_DOUBLE_EQ(both.rope_theta, 20000.0);
  EXPECT_EQ(both.rope_scaling.type, RopeType::kYarn);

  // torch_dtype, where present, wins over dtype.
  EXPECT_EQ(ModelConfig::FromJsonText(Small(R"("torch_dtype": "float16", "dtype": "bfloat16")"))
                .torch_dtype, "float16");

  EXPECT_NE(ErrorOf(Small(R"("rope_parameters": 10000.0)")).find("'rope_parameters' must be an object"),
            std::string::npos);
  EXPECT_NE(ErrorOf(Small(R"("rope_parameters": {"rope_type": "longrope"})"))
                .find("rope_parameters type 'longrope' is not supported"),
            std::string::npos);
  EXPECT_NE(ErrorOf(Small(R"("rope_parameters": {"full_attention": {"rope_theta": 1e6}})"))
                .find("neither rope_type nor rope_theta"),
            std::string::npos);
}

TEST(ConfigTest, RopeScalingYarnFields) {
  const ModelConfig c = ModelConfig::FromJsonText(Small(
      R"("rope_theta": 1000000.0, "rope_scaling": {"rope_type": "yarn", "factor": 4.0,
         "original_max_position_embeddings": 32768, "beta_fast": 16, "beta_slow": 2,
         "attention_factor": 1.25})"));
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 32768);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_fast, 16.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_slow, 2.0);
  ASSERT_TRUE(c.rope_scaling.attention_factor.has_value());
  EXPECT_DOUBLE_EQ(*c.rope_scaling.attention_factor, 1.25);
  // Unset: no attention_factor, HF's defaults for the betas.
  const ModelConfig d = ModelConfig::FromJsonText(Small(R"("rope_scaling": {"type": "yarn", "factor": 2})"));
  EXPECT_FALSE(d.rope_scaling.attention_factor.has_value());
  EXPECT_DOUBLE_EQ(d.rope_scaling.beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(d.rope_scaling.beta_slow, 1.0);
}

TEST(ConfigTest, EosAndBosOptional) {
  const ModelConfig none = ModelConfig::FromJsonText(Small("\"eos_token_id\": null, \"bos_token_id\": null"));
  EXPECT_TRUE(none.eos_token_ids.empty());
  EXPECT_EQ(none.bos_token_id, -1);
  const ModelConfig one = ModelConfig::FromJsonText(Small("\"eos_token_id\": 7"));
  EXPECT_EQ(one.eos_token_ids, std::vector<int64_t>({7}));
  const ModelConfig list = ModelConfig::FromJsonText(Small("\"eos_token_id\": [7, 9]"));
  EXPECT_EQ(list.eos_token_ids, std::vector<int64_t>({7, 9}));
}

TEST(ConfigTest, ToJsonTextRoundTrips) {
  const std::string texts[] = {
      kLlama2_7B, kLlama31_8B, kMistral7B, kQwen2_05B,
      Small("\"attention_bias\": true, \"mlp_bias\": true, \"head_dim\": 32"),
      Small("\"tie_word_embeddings\": true, \"eos_token_id\": null"),
      Small(R"("rope_scaling": {"type": "linear", "factor": 2.0})"),
      Small(R"("rope_scaling": {"type": "dynamic", "factor": 3.0},
               "max_position_embeddings": 512)"),
      Small(R"("rope_scaling": {"rope_type": "yarn", "factor": 4.0, "beta_fast": 8,
               "beta_slow": 0.5, "attention_factor": 1.1,
               "original_max_position_embeddings": 1024})"),
      Small(R"("rope_scaling": {"rope_type": "yarn", "factor": 4.0})"),
      MistralNullWindow(),
  };
  for (const auto& text : texts) {
    SCOPED_TRACE(text);
    const ModelConfig a = ModelConfig::FromJsonText(text);
    const std::string out = a.ToJsonText();
    const json j = json::parse(out);  // valid JSON, HF field names
    EXPECT_EQ(j["architectures"][0], a.architecture);
    EXPECT_EQ(j["num_key_value_heads"], a.num_key_value_heads);
    EXPECT_EQ(j["head_dim"], a.head_dim);
    EXPECT_EQ(j["tie_word_embeddings"], a.tie_word_embeddings);
    if (a.rope_scaling.type == RopeType::kDefault) {
      EXPECT_TRUE(j["rope_scaling"].is_null());
    }
    const ModelConfig b = ModelConfig::FromJsonText(out);
    ExpectSameConfig(a, b);
    EXPECT_EQ(b.ToJsonText(), out);  // a fixed point
  }
}

TEST(ConfigTest, MissingRequiredFieldsAllInOneMessage) {
  const std::string msg = ErrorOf(R"({"architectures": ["LlamaForCausalLM"], "rope_theta": 1.0})");
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads"}) {
    EXPECT_NE(msg.find(std::string("missing required field '") + key + "'"), std::string::npos)
        << key << " not in: " << msg;
  }
  // Only the absent ones.
  const std::string one = ErrorOf(R"({"vocab_size": 10, "hidden_size": 16, "intermediate_size": 32,
                                      "num_hidden_layers": 1})");
  EXPECT_NE(one.find("num_attention_heads"), std::string::npos) << one;
  EXPECT_EQ(one.find("vocab_size"), std::string::npos) << one;
}

TEST(ConfigTest, HeadsNotDivisibleByKvHeads) {
  const std::string msg = ErrorOf(Small("\"num_attention_heads\": 4, \"num_key_value_heads\": 3"));
  EXPECT_NE(msg.find("num_key_value_heads (3) must divide num_attention_heads (4)"), std::string::npos)
      << msg;
}

TEST(ConfigTest, UnknownArchitecture) {
  const std::string msg = ErrorOf(R"({"architectures": ["GPT2LMHeadModel"], "vocab_size": 10,
      "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
      "num_attention_heads": 2})");
  EXPECT_NE(msg.find("architecture 'GPT2LMHeadModel' is not supported"), std::string::npos) << msg;
}

TEST(ConfigTest, UnknownRopeType) {
  const std::string msg = ErrorOf(Small(R"("rope_scaling": {"rope_type": "su", "factor": 2.0})"));
  EXPECT_NE(msg.find("rope_scaling type 'su' is not supported"), std::string::npos) << msg;
}

TEST(ConfigTest, NotJson) {
  EXPECT_NE(ErrorOf("{\"vocab_size\": 10,").find("not valid JSON"), std::string::npos);
  EXPECT_NE(ErrorOf("not json at all").find("not valid JSON"), std::string::npos);
  EXPECT_NE(ErrorOf("[1, 2]").find("must hold a JSON object"), std::string::npos);
}

TEST(ConfigTest, OtherInvalidValues) {
  EXPECT_NE(ErrorOf(Small("\"hidden_size\": \"big\"")).find("field 'hidden_size' has the wrong type"),
            std::string::npos);
  EXPECT_NE(ErrorOf(Small(R"("rope_scaling": {"type": "linear", "factor": 0.5})"))
                .find("rope_scaling.factor must be >= 1"),
            std::string::npos);
  EXPECT_NE(ErrorOf(Small("\"head_dim\": 15")).find("head_dim must be positive and even"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"model_type": "qwen2", "vocab_size": 10, "hidden_size": 16,
      "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
      "use_sliding_window": true})").find("use_sliding_window=true is not supported"),
            std::string::npos);
  EXPECT_NE(ErrorOf(Small("\"vocab_size\": 0")).find("vocab_size must be positive"),
            std::string::npos);
  // Several problems at once are all reported.
  const std::string both = ErrorOf(R"({"architectures": ["Foo"], "hidden_size": "x"})");
  EXPECT_NE(both.find("architecture 'Foo'"), std::string::npos) << both;
  EXPECT_NE(both.find("'hidden_size' has the wrong type"), std::string::npos) << both;
  EXPECT_NE(both.find("missing required field 'vocab_size'"), std::string::npos) << both;
}

TEST(ConfigTest, LoadFromDirectory) {
  test::TempDir dir;
  try {
    ModelConfig::Load(dir.path());
    FAIL() << "Load of an empty directory did not throw";
  } catch (const ModelError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("no config.json in " + dir.path()), std::string::npos) << msg;
    EXPECT_NE(msg.find("hint"), std::string::npos) << msg;
  }
  test::WriteFile(dir / "config.json", kMistral7B);
  EXPECT_EQ(ModelConfig::Load(dir.path()).sliding_window, 4096);
  test::WriteFile(dir / "config.json", Small("\"num_key_value_heads\": 3"));
  try {
    ModelConfig::Load(dir.path());
    FAIL() << "Load of a bad config did not throw";
  } catch (const ModelError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(dir / "config.json"), std::string::npos) << msg;  // names the file
    EXPECT_NE(msg.find("must divide"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace sharedllm

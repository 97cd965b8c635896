#include "llm/config.h"

#include <nlohmann/json.hpp>

#include "llm/json_fields.h"

#include "llm/errors.h"
#include "llm/file_util.h"

namespace sharedllm {
namespace {

using nlohmann::json;

// Reads an optional field; wrong types become problems rather than exceptions.
template <typename T>
void Get(const json& j, const char* key, T* out, std::vector<std::string>* problems) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  try {
    *out = JsonGet<T>(*it);
  } catch (const json::exception&) {
    problems->push_back(std::string("field '") + key + "' has the wrong type: " + it->dump());
  }
}

// `field`: the config.json key the object came from, for messages.
RopeScaling ParseRopeScaling(const json& j, const std::string& field,
                             std::vector<std::string>* problems) {
  RopeScaling r;
  std::string type = "default";
  if (j.contains("rope_type")) Get(j, "rope_type", &type, problems);
  else Get(j, "type", &type, problems);
  if (type == "default") r.type = RopeType::kDefault;
  else if (type == "linear") r.type = RopeType::kLinear;
  else if (type == "dynamic") r.type = RopeType::kDynamic;
  else if (type == "yarn") r.type = RopeType::kYarn;
  else if (type == "llama3") r.type = RopeType::kLlama3;
  else problems->push_back(field + " type '" + type +
                           "' is not supported (default, linear, dynamic, yarn, llama3)");
  Get(j, "factor", &r.factor, problems);
  Get(j, "original_max_position_embeddings", &r.original_max_position_embeddings, problems);
  Get(j, "low_freq_factor", &r.low_freq_factor, problems);
  Get(j, "high_freq_factor", &r.high_freq_factor, problems);
  Get(j, "beta_fast", &r.beta_fast, problems);
  Get(j, "beta_slow", &r.beta_slow, problems);
  if (j.contains("attention_factor") && !j["attention_factor"].is_null()) {
    double a = 1.0;
    Get(j, "attention_factor", &a, problems);
    r.attention_factor = a;
  }
  if (r.type != RopeType::kDefault && !(r.factor >= 1.0)) {
    problems->push_back(field + ".factor must be >= 1, got " + std::to_string(r.factor));
  }
  return r;
}

const char* RopeTypeName(RopeType t) {
  switch (t) {
    case RopeType::kDefault: return "default";
    case RopeType::kLinear: return "linear";
    case RopeType::kDynamic: return "dynamic";
    case RopeType::kYarn: return "yarn";
    case RopeType::kLlama3: return "llama3";
  }
  return "default";
}

}  // namespace

ModelConfig ModelConfig::FromJsonText(const std::string& text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw ModelError(std::string("config.json is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw ModelError("config.json must hold a JSON object");
  std::vector<std::string> problems;
  ModelConfig c;
  std::vector<std::string> archs;
  Get(j, "architectures", &archs, &problems);
  Get(j, "model_type", &c.model_type, &problems);
  if (!archs.empty()) {
    c.architecture = archs.front();
  } else if (c.model_type == "mistral") {
    c.architecture = "MistralForCausalLM";
  } else if (c.model_type == "qwen2") {
    c.architecture = "Qwen2ForCausalLM";
  }
  if (c.architecture != "LlamaForCausalLM" && c.architecture != "MistralForCausalLM" &&
      c.architecture != "Qwen2ForCausalLM") {
    problems.push_back("architecture '" + c.architecture +
                       "' is not supported (LlamaForCausalLM, MistralForCausalLM, "
                       "Qwen2ForCausalLM)");
  }
  const char* required[] = {"vocab_size", "hidden_size", "intermediate_size",
                            "num_hidden_layers", "num_attention_heads"};
  for (const char* key : required) {
    if (!j.contains(key)) problems.push_back(std::string("missing required field '") + key + "'");
  }
  Get(j, "vocab_size", &c.vocab_size, &problems);
  Get(j, "hidden_size", &c.hidden_size, &problems);
  Get(j, "intermediate_size", &c.intermediate_size, &problems);
  Get(j, "num_hidden_layers", &c.num_hidden_layers, &problems);
  Get(j, "num_attention_heads", &c.num_attention_heads, &problems);
  c.num_key_value_heads = c.num_attention_heads;
  Get(j, "num_key_value_heads", &c.num_key_value_heads, &problems);
  if (c.num_attention_heads > 0) c.head_dim = c.hidden_size / c.num_attention_heads;
  Get(j, "head_dim", &c.head_dim, &problems);
  Get(j, "rms_norm_eps", &c.rms_norm_eps, &problems);
  Get(j, "rope_theta", &c.rope_theta, &problems);
  Get(j, "max_position_embeddings", &c.max_position_embeddings, &problems);
  if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) {
    c.rope_scaling = ParseRopeScaling(j["rope_scaling"], "rope_scaling", &problems);
  }
  // transformers >= 5 writes the rotary settings as one object, theta included, and no top-level
  // rope_theta / rope_scaling; where both forms are present this one is what transformers uses.
  if (j.contains("rope_parameters") && !j["rope_parameters"].is_null()) {
    const json& rp = j["rope_parameters"];
    if (!rp.is_object()) {
      problems.push_back("field 'rope_parameters' must be an object: " + rp.dump());
    } else if (!rp.contains("rope_type") && !rp.contains("rope_theta")) {
      // e.g. the per-layer-type form {"full_attention": {...}, ...} of some other architectures:
      // reading it as the defaults would load the model with the wrong rotary frequencies.
      problems.push_back("field 'rope_parameters' has neither rope_type nor rope_theta: " +
                         rp.dump());
    } else {
      Get(rp, "rope_theta", &c.rope_theta, &problems);
      c.rope_scaling = ParseRopeScaling(rp, "rope_parameters", &problems);
    }
  }
  Get(j, "tie_word_embeddings", &c.tie_word_embeddings, &problems);
  if (c.architecture == "Qwen2ForCausalLM") {
    // Qwen2 always has q/k/v biases and never an o_proj bias.
    c.qkv_bias = true;
    bool sliding = false;
    Get(j, "use_sliding_window", &sliding, &problems);
    if (sliding) problems.push_back("Qwen2 use_sliding_window=true is not supported");
  } else {
    bool attention_bias = false;
    Get(j, "attention_bias", &attention_bias, &problems);
    c.qkv_bias = c.o_bias = attention_bias;
    Get(j, "mlp_bias", &c.mlp_bias, &problems);
  }
  if (c.architecture == "MistralForCausalLM") Get(j, "sliding_window", &c.sliding_window, &problems);
  Get(j, "bos_token_id", &c.bos_token_id, &problems);
  if (j.contains("eos_token_id") && !j["eos_token_id"].is_null()) {
    if (j["eos_token_id"].is_array()) {
      Get(j, "eos_token_id", &c.eos_token_ids, &problems);
    } else {
      int64_t eos = -1;
      Get(j, "eos_token_id", &eos, &problems);
      c.eos_token_ids = {eos};
    }
  }
  Get(j, "torch_dtype", &c.torch_dtype, &problems);
  if (!j.contains("torch_dtype")) Get(j, "dtype", &c.torch_dtype, &problems);  // transformers >= 5
  if (problems.empty()) {
    try {
      c.Validate();
    } catch (const ModelError& e) {
      problems.push_back(e.what());
    }
  }
  if (!problems.empty()) {
    std::string msg = "invalid config.json:";
    for (const auto& p : problems) msg += "\n  - " + p;
    throw ModelError(msg);
  }
  return c;
}

ModelConfig ModelConfig::Load(const std::string& dir) {
  const std::string path = JoinPath(dir, "config.json");
  if (!FileExists(path)) {
    throw ModelError("no config.json in " + dir +
                     " (hint: --model takes a Hugging Face model directory)");
  }
  try {
    return FromJsonText(ReadTextFile(path));
  } catch (const ModelError& e) {
    throw ModelError(path + ": " + e.what());
  }
}

void ModelConfig::Validate() const {
  std::vector<std::string> p;
  if (vocab_size <= 0) p.push_back("vocab_size must be positive");
  if (hidden_size <= 0) p.push_back("hidden_size must be positive");
  if (intermediate_size <= 0) p.push_back("intermediate_size must be positive");
  if (num_hidden_layers <= 0) p.push_back("num_hidden_layers must be positive");
  if (num_attention_heads <= 0) p.push_back("num_attention_heads must be positive");
  if (num_key_value_heads <= 0 ||
      (num_attention_heads > 0 && num_attention_heads % num_key_value_heads != 0)) {
    p.push_back("num_key_value_heads (" + std::to_string(num_key_value_heads) +
                ") must divide num_attention_heads (" + std::to_string(num_attention_heads) + ")");
  }
  if (head_dim <= 0 || head_dim % 2 != 0) p.push_back("head_dim must be positive and even");
  if (rms_norm_eps <= 0) p.push_back("rms_norm_eps must be positive");
  if (rope_theta <= 0) p.push_back("rope_theta must be positive");
  if (max_position_embeddings <= 0) p.push_back("max_position_embeddings must be positive");
  if (sliding_window < 0) p.push_back("sliding_window must be >= 0");
  if (!p.empty()) {
    std::string msg = p.front();
    for (size_t i = 1; i < p.size(); ++i) msg += "; " + p[i];
    throw ModelError(msg);
  }
}

std::string ModelConfig::ToJsonText() const {
  json j;
  j["architectures"] = {architecture};
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["head_dim"] = head_dim;
  j["hidden_act"] = "silu";
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  j["max_position_embeddings"] = max_position_embeddings;
  if (rope_scaling.type == RopeType::kDefault) {
    j["rope_scaling"] = nullptr;
  } else {
    json r;
    r["rope_type"] = RopeTypeName(rope_scaling.type);
    r["factor"] = rope_scaling.factor;
    if (rope_scaling.original_max_position_embeddings > 0) {
      r["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
    }
    if (rope_scaling.type == RopeType::kLlama3) {
      r["low_freq_factor"] = rope_scaling.low_freq_factor;
      r["high_freq_factor"] = rope_scaling.high_freq_factor;
    }
    if (rope_scaling.type == RopeType::kYarn) {
      r["beta_fast"] = rope_scaling.beta_fast;
      r["beta_slow"] = rope_scaling.beta_slow;
      if (rope_scaling.attention_factor) r["attention_factor"] = *rope_scaling.attention_factor;
    }
    j["rope_scaling"] = r;
  }
  j["tie_word_embeddings"] = tie_word_embeddings;
  if (architecture == "Qwen2ForCausalLM") {
    j["use_sliding_window"] = false;
  } else {
    j["attention_bias"] = qkv_bias;
    j["mlp_bias"] = mlp_bias;
  }
  if (architecture == "MistralForCausalLM") {
    j["sliding_window"] = sliding_window > 0 ? json(sliding_window) : json(nullptr);
  }
  if (bos_token_id >= 0) j["bos_token_id"] = bos_token_id;
  if (eos_token_ids.size() == 1) j["eos_token_id"] = eos_token_ids[0];
  else if (!eos_token_ids.empty()) j["eos_token_id"] = eos_token_ids;
  j["torch_dtype"] = torch_dtype;
  return j.dump(2) + "\n";
}

int64_t ModelConfig::LayerParameters() const {
  const int64_t q = num_attention_heads * head_dim, kv = num_key_value_heads * head_dim;
  int64_t attn = hidden_size * q * 2 + hidden_size * kv * 2;
  if (qkv_bias) attn += q + 2 * kv;
  if (o_bias) attn += hidden_size;
  int64_t mlp = 3 * hidden_size * intermediate_size;
  if (mlp_bias) mlp += 2 * intermediate_size + hidden_size;
  return attn + mlp + 2 * hidden_size;
}

int64_t ModelConfig::NumParameters() const {
  const int64_t emb = vocab_size * hidden_size;
  return num_hidden_layers * LayerParameters() + hidden_size + emb * (tie_word_embeddings ? 1 : 2);
}

}  // namespace sharedllm

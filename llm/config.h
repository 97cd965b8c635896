// ModelConfig: the hyper-parameters of a LLaMA-family checkpoint, read from its Hugging Face
// `config.json`. Runtime choices (threads, dtype, device) live in RuntimeOptions, not here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sharedllm {

enum class RopeType { kDefault, kLinear, kDynamic, kYarn, kLlama3 };

// `rope_scaling` of config.json. Fields unused by a type keep their defaults.
struct RopeScaling {
  RopeType type = RopeType::kDefault;
  double factor = 1.0;                        // context extension factor, e.g. 2.0
  int64_t original_max_position_embeddings = 0;  // 0: use ModelConfig::max_position_embeddings
  double low_freq_factor = 1.0;               // llama3
  double high_freq_factor = 4.0;              // llama3
  double beta_fast = 32.0;                    // yarn: rotations where extrapolation ends
  double beta_slow = 1.0;                     // yarn: rotations where interpolation starts
  std::optional<double> attention_factor;     // yarn: cos/sin scale; default 0.1*ln(factor)+1
};

struct ModelConfig {
  std::string architecture = "LlamaForCausalLM";  // LlamaForCausalLM | MistralForCausalLM | Qwen2ForCausalLM
  std::string model_type = "llama";
  int64_t vocab_size = 0;             // e.g. 32000
  int64_t hidden_size = 0;            // model width, e.g. 4096
  int64_t intermediate_size = 0;      // SwiGLU inner width, e.g. 11008
  int64_t num_hidden_layers = 0;      // N, e.g. 32
  int64_t num_attention_heads = 0;    // query heads, e.g. 32
  int64_t num_key_value_heads = 0;    // GQA key/value heads (== heads for MHA), e.g. 8
  int64_t head_dim = 0;               // per-head width; default hidden_size / heads
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;        // rotary base
  int64_t max_position_embeddings = 2048;  // the trained window W, in tokens
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;   // lm_head shares embed_tokens.weight
  bool qkv_bias = false;              // q/k/v projections carry a bias (Qwen2, attention_bias)
  bool o_bias = false;                // o_proj carries a bias (Llama attention_bias)
  bool mlp_bias = false;              // gate/up/down carry a bias (Llama mlp_bias)
  int64_t sliding_window = 0;         // Mistral: a query sees at most this many keys; 0 = unlimited
  int64_t bos_token_id = -1;          // -1: none
  std::vector<int64_t> eos_token_ids; // generation stops at any of these
  std::string torch_dtype = "float32";

  // Parses a config.json text; throws ModelError listing every problem found.
  static ModelConfig FromJsonText(const std::string& text);
  // Reads `<dir>/config.json`.
  static ModelConfig Load(const std::string& dir);
  // Hugging Face-compatible config.json text.
  std::string ToJsonText() const;
  // Throws ModelError when the numbers are inconsistent (e.g. heads not dividing).
  void Validate() const;

  int64_t kv_groups() const { return num_attention_heads / num_key_value_heads; }
  // Parameter count, embeddings and lm_head included (tied counted once).
  int64_t NumParameters() const;
  // Parameters of one decoder layer (attention, MLP, its two norms).
  int64_t LayerParameters() const;
};

}  // namespace sharedllm

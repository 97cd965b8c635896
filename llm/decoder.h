// Autoregressive decoding split as in gpt-fast: Prefill (the prompt in one pass), DecodeOneToken
// (one step on the KV cache) and Generate (sampling loop with stop strings and streaming).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "llm/llama.h"
#include "llm/sampler.h"
#include "llm/tokenizer.h"

namespace sharedllm {

enum class FinishReason { kLength, kStop, kEos, kCancelled };
const char* FinishReasonName(FinishReason r);

struct GenerationResult {
  std::vector<int64_t> tokens;  // generated ids (stop strings removed from `text` only)
  std::string text;             // decoded generated text, cut before a stop string
  FinishReason finish = FinishReason::kLength;
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0;   // time to first token
  double decode_seconds = 0;    // the remaining tokens
};

// Receives each new piece of text as soon as it is final; returning false cancels generation.
using TextCallback = std::function<bool(const std::string& delta)>;

class Decoder {
 public:
  // With an injection (e.g. SharedLLM reading a context), every forward — prefill and each
  // decode step — adds its update.
  explicit Decoder(CausalLM lm, const LayerInjection* injection = nullptr)
      : lm_(std::move(lm)), injection_(injection) {}

  // ids: [T] at positions [cache.length(), +T) -> float32 logits [vocab] of the last position.
  at::Tensor Prefill(const std::vector<int64_t>& ids, KVCache& cache);
  // One token at position cache.length() -> float32 logits [vocab].
  at::Tensor DecodeOneToken(int64_t id, KVCache& cache);
  // Generates after `prompt`. With a tokenizer the text is decoded and streamed to `on_text`,
  // and stop strings apply; without one only ids are produced.
  GenerationResult Generate(const std::vector<int64_t>& prompt, const SamplingOptions& options,
                            const Tokenizer* tokenizer, const TextCallback& on_text = nullptr);

 private:
  CausalLM lm_;
  const LayerInjection* injection_;
};

// Length of the longest suffix of `text` that is a proper prefix of some stop string: text that
// might still become a stop string and must not be streamed yet.
size_t HeldBackForStop(const std::string& text, const std::vector<std::string>& stop);

}  // namespace sharedllm

#include "llm/decoder.h"

#include <chrono>
#include <set>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "llm/errors.h"

namespace sharedllm {
namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

at::Tensor IdsTensor(const std::vector<int64_t>& ids, const at::Device& device) {
  return at::tensor(ids, at::TensorOptions().dtype(at::kLong)).view({1, -1}).to(device);
}

// Bytes at the end of `s` that start an incomplete UTF-8 sequence (byte-fallback tokens can split
// a character across tokens).
size_t IncompleteUtf8Tail(const std::string& s) {
  const size_t n = s.size();
  for (size_t back = 1; back <= 4 && back <= n; ++back) {
    const unsigned char c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    size_t len = (c & 0x80) == 0 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : 4;
    return len > back ? back : 0;
  }
  return 0;
}

}  // namespace

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kLength: return "length";
    case FinishReason::kStop: return "stop";
    case FinishReason::kEos: return "eos";
    case FinishReason::kCancelled: return "cancelled";
  }
  return "unknown";
}

size_t HeldBackForStop(const std::string& text, const std::vector<std::string>& stop) {
  size_t held = 0;
  for (const auto& s : stop) {
    for (size_t len = std::min(s.size() - 1, text.size()); len > held; --len) {
      if (text.compare(text.size() - len, len, s, 0, len) == 0) {
        held = len;
        break;
      }
    }
  }
  return held;
}

at::Tensor Decoder::Prefill(const std::vector<int64_t>& ids, KVCache& cache) {
  Check(!ids.empty(), "prefill needs at least one token");
  c10::InferenceMode guard;
  auto device = lm_->model->embed_tokens->weight.device();
  auto hidden = lm_->ForwardHidden(IdsTensor(ids, device), &cache, injection_);  // [1, T, H]
  return lm_->Logits(hidden.select(1, hidden.size(1) - 1)).view({-1});
}

at::Tensor Decoder::DecodeOneToken(int64_t id, KVCache& cache) {
  return Prefill({id}, cache);
}

GenerationResult Decoder::Generate(const std::vector<int64_t>& prompt,
                                   const SamplingOptions& options, const Tokenizer* tokenizer,
                                   const TextCallback& on_text) {
  Check(!prompt.empty(), "the prompt is empty");
  Check(options.stop.empty() || tokenizer, "stop strings need a tokenizer");
  for (const auto& s : options.stop) Check(!s.empty(), "stop strings must not be empty");
  GenerationResult result;
  result.prompt_tokens = static_cast<int64_t>(prompt.size());
  std::set<int64_t> eos(lm_->config.eos_token_ids.begin(), lm_->config.eos_token_ids.end());
  if (tokenizer && tokenizer->eos_id() >= 0) eos.insert(tokenizer->eos_id());

  Sampler sampler(options);
  KVCache cache = lm_->NewCache();
  const auto start = std::chrono::steady_clock::now();
  at::Tensor logits = Prefill(prompt, cache);
  result.prefill_seconds = Seconds(start);
  const auto decode_start = std::chrono::steady_clock::now();
  size_t emitted = 0;  // bytes of the decoded text already streamed
  result.finish = FinishReason::kLength;
  for (int64_t step = 0; step < options.max_tokens; ++step) {
    const int64_t next = sampler.Sample(logits);
    if (options.stop_at_eos && eos.count(next)) {
      result.finish = FinishReason::kEos;
      break;
    }
    result.tokens.push_back(next);
    bool done = false;
    if (tokenizer) {
      std::string text = tokenizer->Decode(result.tokens);
      size_t safe = text.size() - IncompleteUtf8Tail(text);
      for (const auto& s : options.stop) {
        const size_t at = text.find(s);
        if (at != std::string::npos) {
          safe = std::min(safe, at);
          done = true;
        }
      }
      if (done) {
        text.resize(safe);
        result.finish = FinishReason::kStop;
      } else {
        safe -= HeldBackForStop(text.substr(0, safe), options.stop);
      }
      if (safe > emitted && on_text && !on_text(text.substr(emitted, safe - emitted))) {
        result.finish = FinishReason::kCancelled;
        done = true;
      }
      emitted = std::max(emitted, safe);
      result.text = text.substr(0, done ? safe : text.size());
    } else if (on_text && !on_text("")) {
      result.finish = FinishReason::kCancelled;
      done = true;
    }
    if (done || step + 1 == options.max_tokens) break;
    logits = DecodeOneToken(next, cache);
  }
  if (tokenizer && result.finish != FinishReason::kStop && result.finish != FinishReason::kCancelled) {
    // A character the model never completed becomes U+FFFD: streamed text is always valid UTF-8.
    if (const size_t tail = IncompleteUtf8Tail(result.text); tail > 0) {
      result.text.resize(result.text.size() - tail);
      result.text += "\xEF\xBF\xBD";
    }
    // Flush text held back for a stop string that never came.
    if (on_text && result.text.size() > emitted) on_text(result.text.substr(emitted));
  }
  result.decode_seconds = Seconds(decode_start);
  return result;
}

}  // namespace sharedllm

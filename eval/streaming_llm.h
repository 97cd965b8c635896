// StreamingLLM (Xiao et al., "Efficient Streaming Language Models with Attention Sinks",
// arXiv 2309.17453) on the base model, zero-shot: the key/value cache keeps the first `sinks`
// tokens (attention sinks) and the most recent tokens, never more than `window` entries in all,
// and rotary positions are assigned within the cache (the query at cache position
// min(t, window - 1), a recent key at its cache slot), as the paper's rolling cache does.
//
// Implementation: tokens are fed in blocks; each query reads the sink keys with the position
// difference (its cache position - sink index) and the recent keys with their true distance, which
// is the distance the rolling cache gives them. The result is the rolling cache's, token for token,
// with O(block x window) attention memory. With at most `window` tokens nothing is evicted and
// StreamingLLM is the plain model. Cross-attention (SharedLLM) is never used.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "llm/llama.h"
#include "llm/tokenizer.h"

namespace sharedllm {

class StreamingLLM {
 public:
  // `window` = the cache size (0: the base model's window, or its sliding window if narrower),
  // `sinks` = 4 in the paper.
  explicit StreamingLLM(CausalLM lm, int64_t window = 0, int64_t sinks = 4, int64_t block = 0);

  // Feeds `ids` (any number) after everything fed so far; returns the final-normed hidden states
  // of the new positions: [T, hidden].
  at::Tensor Feed(const std::vector<int64_t>& ids);
  // Tokens fed so far.
  int64_t seen() const { return seen_; }
  // Entries the cache holds now (sinks + recent), never more than window - 1 between calls (the
  // next token's own key makes it `window`).
  int64_t cache_entries() const;
  int64_t window() const { return window_; }

 private:
  at::Tensor FeedBlock(const std::vector<int64_t>& ids);

  CausalLM lm_;
  int64_t window_, sinks_, block_;
  int64_t seen_ = 0;
  // Per layer: the sink tokens' keys (rotated at their own positions) and values, and the recent
  // tokens' keys (rotated at their true positions) and values: [1, KVH, n, D].
  std::vector<at::Tensor> sink_k_, sink_v_, recent_k_, recent_v_;
  at::Tensor recent_pos_;  // int64 [n]: true positions of the recent entries
};

// Mean NLL of the last `scored` tokens of `ids` read by StreamingLLM.
double StreamingNll(CausalLM& lm, const std::vector<int64_t>& ids, int64_t scored,
                    int64_t window = 0, int64_t sinks = 4);
// nll[i] = -ln p(ids[i+1] | ids[0..i]) for every i (as TokenNll), read by StreamingLLM.
std::vector<double> StreamingTokenNll(CausalLM& lm, const std::vector<int64_t>& ids,
                                      int64_t window = 0, int64_t sinks = 4);

// Greedy generation after `prompt` with StreamingLLM; stops at EOS or after `max_tokens`.
std::string StreamingGenerate(CausalLM& lm, const std::vector<int64_t>& prompt, int64_t max_tokens,
                              const Tokenizer& tokenizer, int64_t window = 0, int64_t sinks = 4);

}  // namespace sharedllm

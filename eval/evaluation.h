// Evaluation protocols on one model (docs/RESULTS.md): CEPE/SharedLLM perplexity (n chunks to the
// compressor, W running tokens to the upper model, the last W/16 scored) and passkey retrieval
// (Landmark/LongLoRA format, first integer generated == key), each against the base model
// truncated to its window. Results are plain structs; the CLI writes them as JSON.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "sharedllm/loaded_model.h"
#include "sharedllm/node_records.h"
#include "training/token_shards.h"

namespace sharedllm {

struct PplPoint {
  double length_multiple = 1;  // L / W
  int64_t windows = 0;
  double sharedllm_ppl = 0;    // context through the tree, W running tokens
  double truncated_ppl = 0;    // base model, the last W tokens only
  // Base model with full attention over all L tokens, rotary scaled zero-shot by L / W
  // (0 when not measured at this length).
  double full_linear_ppl = 0;  // linear position interpolation (PI)
  double full_yarn_ppl = 0;    // YaRN
  double streaming_ppl = 0;    // StreamingLLM: 4 attention sinks + recent tokens, cache <= W
  // Standard error of log(sharedllm_ppl / truncated_ppl): the two score the same windows, so this
  // is the paired standard error of the per-window mean-NLL differences (0 below two windows).
  // A ratio is told apart from 1 only where it lies further than ~2 of these from it.
  double log_ratio_se = 0;
  // The same for log(streaming_ppl / truncated_ppl): StreamingLLM scores the same windows too.
  double streaming_log_ratio_se = 0;
  // The scored tokens split by CopyableTokens (llm/scoring.h) against the context read: the
  // fraction copyable, and each model's perplexity over the copyable tokens and over the others
  // (all windows pooled; 0 where there are none, and at 1x, which has no context).
  double copyable_fraction = 0;
  double sharedllm_copyable_ppl = 0, truncated_copyable_ppl = 0;
  double sharedllm_other_ppl = 0, truncated_other_ppl = 0;
  // Standard error of log(sharedllm_copyable_ppl / truncated_copyable_ppl), windows as the draws.
  double copyable_log_ratio_se = 0;
  // Full attention with YaRN on the same split (where measured, own context only).
  double full_yarn_copyable_ppl = 0, full_yarn_other_ppl = 0;
};

// Mean and standard error of the paired differences a[i] - b[i] (a and b the same length; the
// standard error is 0 with fewer than two pairs).
struct PairedDifference {
  double mean = 0;
  double standard_error = 0;
};
PairedDifference PairedMeanDifference(const std::vector<double>& a, const std::vector<double>& b);

// Per-token mean of differences summed per window: window i holds counts[i] tokens whose
// differences sum to sums[i]; the mean is Σ sums / Σ counts and its standard error treats the
// windows as the independent draws (a ratio estimator, delta method; 0 below two windows).
PairedDifference PooledMeanDifference(const std::vector<double>& sums, const std::vector<double>& counts);

// Options of EvaluatePerplexity.
struct PplOptions {
  // > 0: also measure the full-attention baselines at multiples up to this (attention over L
  // tokens costs O(L^2) memory).
  double full_attention_max = 0;
  // SharedLLM reads an equally long context from another document of the shard instead of the
  // text's own (the same windows and text scored): the gain a context of the same genre gives
  // without bearing on the text.
  bool foreign_context = false;
  // [lo, hi): each window's tokens with ids in the range renamed (RenameTokens, llm/scoring.h),
  // the text's the same at every length: a document whose identifiers no model knows from
  // training, only from its context. Empty: the text as it is.
  std::vector<int64_t> rename_ids;
  // Keys and values the way the tree store keeps them (sharedllm/node_records.h): each node's
  // keys/values are stored in this format and read back before the model reads them. Unset: as
  // computed.
  std::optional<KvFormat> kv_format;
};

// Perplexity at L = multiple × W for each multiple; windows drawn (seeded) from `shard`'s
// documents long enough for the longest multiple. StreamingLLM (eval/streaming_llm.h) reads all
// L tokens at every length (O(L W)).
std::vector<PplPoint> EvaluatePerplexity(LoadedModel& model, const TokenShard& shard,
                                         const std::vector<double>& multiples, int64_t windows,
                                         uint64_t seed, const PplOptions& options = {});

struct PasskeyPoint {
  double length_multiple = 1;
  double depth = 0;            // 0 = start of the haystack, 1 = its end
  int64_t trials = 0;
  int64_t sharedllm_correct = 0;
  int64_t truncated_correct = 0;
  // Per trial: the key and the first integer each model generated (-1: none), to read failures.
  std::vector<int64_t> keys, sharedllm_answers, truncated_answers;
  // Per trial: 1 when the search kept one copy of the key's digits whole inside one node at
  // stride 1 (full resolution), else 0 — to tell search misses from copying errors.
  std::vector<int64_t> key_full_resolution;
};

// Passkey retrieval with the evaluation filler ("The grass is green. ..."), seeded 5-digit keys.
// `kv_format`: as PplOptions::kv_format.
std::vector<PasskeyPoint> EvaluatePasskey(LoadedModel& model, const std::vector<double>& multiples,
                                          const std::vector<double>& depths, int64_t trials,
                                          uint64_t seed, std::optional<KvFormat> kv_format = std::nullopt);

// Whether the document tokens [begin, end) lie inside one of `selected` (SharedLLM::Select's
// nodes; a node's span is relative to its chunk, `chunk_begins[c]` is chunk c's first token)
// kept at stride 1 (`alphas[level - 1]` == 1).
bool SpanAtFullResolution(int64_t begin, int64_t end, const std::vector<const EncodedNode*>& selected,
                          const std::vector<int64_t>& chunk_begins, const std::vector<int64_t>& alphas);

// The first run of digits in `text` as a number, or -1.
int64_t FirstInteger(const std::string& text);

}  // namespace sharedllm

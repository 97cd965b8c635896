// Retrieval and aggregation over long input, generated offline and seeded (docs/RESULTS.md):
// RULER's offline tasks (Hsieh et al., arXiv 2404.06654) with its templates and
// `string_match_all` scoring — niah_single_1 (noise haystack), niah_multikey_2 and _3 (needle
// haystacks: words->numbers, uuids->uuids), vt (variable tracking, 1 chain of 4 hops), cwe
// (common words, 10 asked), fwe (frequent coded words, Zipf alpha 2, 3 asked) — and InfiniteBench
// Math.Find scaled to the model's lengths (largest / smallest / median of a list of integers,
// scored on the first number generated).
//
// Scaling to a small window (deviations from RULER, which targets 4K-128K tokens):
//   - generation budget: min(RULER's tokens_to_generate, W/4) (RULER: niah 128, vt 30, cwe 120,
//     fwe 50; Math.Find 8); context + question + budget fit the target length, as in RULER;
//   - cwe: RULER's frequencies (30 per common word, 3 per uncommon one) at long lengths, scaled
//     down with the list (common words take ~30 % of it, at least 2 repeats each) at short ones;
//   - word lists (needle keys, cwe words) are embedded here (RULER uses the wonderwords package);
//   - fwe's vocabulary is target/50 coded words, as RULER sizes it.
// The fillers (RULER's "The grass is green..." noise) and word lists differ from the training
// generators' (training/sft_data.cpp: training text, syllable words), and the seeds are mixed with a
// constant of their own.
#pragma once

#include <cstdint>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "llm/errors.h"
#include "sharedllm/loaded_model.h"
#include "llm/tokenizer.h"

namespace sharedllm {

struct TaskSample {
  std::string task;
  std::string context;   // the long input (template preamble + haystack): through the tree
  std::string question;  // query template + answer prefix: read by the upper model
  std::vector<std::string> answers;  // references (all must appear, string_match_all)
  int64_t max_tokens = 0;             // generation budget
};

// niah_single_1, niah_multikey_2, niah_multikey_3, vt, cwe, fwe.
const std::vector<std::string>& RulerTaskNames();
// Generation budget of `task` (RULER's, or 8 for math_find) capped at window / 4.
int64_t TaskMaxTokens(const std::string& task, int64_t window);

// Thrown by MakeTaskSample when the task's smallest instance is longer than the target.
struct TooShort : ModelError {
  using ModelError::ModelError;
};

// A sample of `task` (a RULER name or "math_find") whose context + question (+ BOS) encode to at
// most `target_tokens` and as close to it as the task's unit allows. Pure function of the seed.
TaskSample MakeTaskSample(const std::string& task, const Tokenizer& tokenizer, int64_t target_tokens,
                          uint64_t seed);

// The seed of trial `trial` of `task` at `multiple` x W in EvaluateTasks (evaluation streams of
// their own, never the training generators').
uint64_t TaskSampleSeed(uint64_t seed, const std::string& task, double multiple, int64_t trial);

// RULER's postprocessing of a prediction: control characters to newlines, surrounding space stripped.
std::string PostprocessPrediction(const std::string& prediction);
// RULER string_match_all for one sample: the fraction of references that occur in the prediction
// (case-insensitive), in [0, 1].
double StringMatchAll(const std::string& prediction, const std::vector<std::string>& references);
// InfiniteBench Math.Find: 1 when the first number in the prediction (\d+\.\d+ or \d+) equals
// the label, else 0.
double MathFindScore(const std::string& prediction, const std::string& label);
// The score of one prediction for `task` (string_match_all, or Math.Find's rule).
double TaskScore(const std::string& task, const std::string& prediction,
                 const std::vector<std::string>& references);

struct TaskPoint {
  std::string task;
  double length_multiple = 1;
  int64_t trials = 0;
  // Mean score in percent over the trials; streaming < 0 when not measured.
  double sharedllm_score = 0;
  double truncated_score = 0;
  double streaming_score = -1;
  double mean_tokens = 0;  // mean context + question tokens of the samples
  int64_t skipped_trials = 0;  // samples whose smallest instance did not fit (not in `trials`)
  std::string skipped;         // when no sample fit: why
};

// Each task at each length (L = multiple x W tokens of context + question + budget), `trials`
// samples: SharedLLM (the context through the tree, searched with the question), the base model
// truncated to its window (the end of the context + the question), and with `streaming` the base
// model with StreamingLLM over the whole prompt. Samples whose smallest instance does not fit the
// length (near 1x W, depending on the seed) are counted in `skipped_trials`; a (task, length) where
// none fits is reported with 0 trials and `skipped`. Greedy decoding. With `log`, every sample's
// references and predictions are written there.
std::vector<TaskPoint> EvaluateTasks(LoadedModel& model, const std::vector<std::string>& tasks,
                                     const std::vector<double>& multiples, int64_t trials,
                                     uint64_t seed, bool streaming, std::ostream* log = nullptr);

}  // namespace sharedllm

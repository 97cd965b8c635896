// Training: `base` (plain causal LM pre-training of a small model), `lm` (SharedLLM continual
// training: n chunks of context through the lower model, W running tokens scored), `sft`
// (SharedLLM on generated retrieval instructions, loss on the answer only). One loop: sample,
// forward, loss, backward, clip, AdamW with warm-up + cosine; checkpoints resume bit for bit
// because every sample is a pure function of (seed, step, micro-batch).
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace sharedllm {

struct TrainConfig {
  std::string mode = "base";         // base | lm | sft
  std::string init;                  // model directory to start from (lm/sft: a SharedLLM dir)
  std::string model_config;          // base without init: a config.json for a new random model
  std::string tokenizer;             // tokenizer.model to ship with the output (base)
  std::string out;                   // output directory: final model + checkpoint/ + train_log.jsonl
  std::vector<std::string> train_shards;  // token shard files (corpus/make_shards.py)
  // Optional, one per train shard: shard i gives weights[i] / sum of the training windows (and
  // sft fillers); empty: each shard in proportion to its tokens. See TokenPool.
  std::vector<double> train_shard_weights;
  std::vector<std::string> eval_shards;   // held-out shards for the eval loss
  int64_t seq_len = 256;             // W: running-text tokens per sample
  int64_t context_chunks = 4;        // lm/sft: n chunks of chunk_size context before the text
  // lm/sft: language-modelling samples draw n log-uniformly from [lm_chunks_min, context_chunks]
  // (every length of the perplexity evaluation, 2x..32x, equally often); 0: n = context_chunks.
  int64_t lm_chunks_min = 0;
  // lm/sft: language-modelling samples score only their last lm_scored_tokens running tokens, those
  // with a full window of local context, as the perplexity evaluation does; 0: all seq_len.
  int64_t lm_scored_tokens = 0;
  // lm/sft: distillation from full attention. Language-modelling samples learn (1 - lm_distill) x
  // cross-entropy + lm_distill x KL(teacher || model) over their scored tokens. The teacher is
  // the model without its context reading the last lm_distill_context tokens of the context and
  // the running text in one pass, full attention with YaRN over the window: what the document's
  // nearest part is worth to the next token, where it is worth nothing as well as where it is.
  // 0: cross-entropy only.
  double lm_distill = 0;
  int64_t lm_distill_context = -1;   // -1: seq_len tokens; 0: none (the truncated model)
  // lm/sft: the fraction of language-modelling training samples whose tokens with ids in
  // [lm_rename_ids[0], lm_rename_ids[1]) are renamed, one to one and alike in the context and the
  // running text (RenameTokens): a document whose identifiers the model cannot know from training,
  // only copy from its context. The eval loss reads the text as it is. 0: none.
  double lm_rename = 0;
  std::vector<int64_t> lm_rename_ids;
  int64_t batch_size = 8;            // samples per micro-batch
  int64_t grad_accum = 1;            // micro-batches per optimizer step
  int64_t steps = 1000;              // optimizer steps in all
  int64_t warmup_steps = 100;        // linear warm-up from 0
  double lr = 1e-3;                  // peak learning rate
  double min_lr_ratio = 0.1;         // cosine floor, as a fraction of lr
  double new_params_lr_scale = 1.0;  // lr multiplier of the cross-attention parameters
  double weight_decay = 0.1;
  double grad_clip = 1.0;            // max global gradient norm; 0: none
  bool bf16_autocast = false;        // matmuls in bfloat16 (weights and optimizer stay float32)
  bool lower_trainable = false;      // lm/sft: the lower model (shared bottom layers) trains too
  bool upper_trainable = true;       // lm/sft: the layers above the lower model, final norm, lm_head
  uint64_t seed = 0;
  int64_t log_every = 10;            // steps between progress lines
  int64_t eval_every = 200;          // steps between eval losses; 0: only at the end
  int64_t eval_batches = 4;          // micro-batches per eval
  int64_t checkpoint_every = 200;    // steps between checkpoints; 0: only at the end
  int threads = 0;                   // intra-op threads; 0: all cores
  std::string device = "cpu";        // cpu | cuda | cuda:N (checkpoints stay device-independent)
  double lm_mix = 0;                 // sft: probability that a micro-batch is language modelling
                                     // (keeps the model's perplexity while it learns retrieval)
  int64_t stop_after = 0;            // end this run (with a checkpoint) after this many steps;
                                     // 0: run to `steps`. For time-sliced runs.
  double time_budget = 0;            // seconds: end (saving the model as at `steps`) at the first
                                     // step boundary past it, the cosine decaying over
                                     // max(step / steps, elapsed / time_budget). 0: no limit.
  // sft: generated tasks (see sft_data.h), by name; empty: all.
  std::vector<std::string> sft_tasks;
  // lm/sft: parameters whose names contain any of these stay as loaded (e.g. "layers.1.cross_attn").
  std::vector<std::string> frozen;

  static TrainConfig FromJsonText(const std::string& text);
  static TrainConfig Load(const std::string& path);
  std::string ToJsonText() const;
};

struct TrainResult {
  int64_t steps = 0;
  double final_loss = 0;     // mean training loss of the last logged window
  double eval_loss = 0;      // last eval loss (0 when no eval shards)
  double seconds = 0;
  int64_t tokens = 0;        // scored tokens processed
};

// An integer in [lo, hi] drawn log-uniformly: every octave of lengths equally often
// (lm_chunks_min).
int64_t DrawLogUniform(std::mt19937_64& rng, int64_t lo, int64_t hi);

// A language-modelling sample: `context_tokens` tokens of context, then `running` tokens (seq_len
// + 1: inputs and shifted targets). `window(rng, count)` gives `count` consecutive training tokens
// from a random place. The context is the text just before the running tokens, one draw.
struct LmSample {
  std::vector<int64_t> context, running;
};
LmSample DrawLmSample(const std::function<std::vector<int64_t>(std::mt19937_64&, int64_t)>& window,
                      std::mt19937_64& rng, int64_t context_tokens, int64_t running);

// Runs (or resumes, when `out`/checkpoint exists) training; throws ModelError.
TrainResult Train(const TrainConfig& config);

}  // namespace sharedllm

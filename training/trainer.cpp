#include "training/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <random>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <ATen/autocast_mode.h>
#include <nlohmann/json.hpp>
#include <torch/version.h>

#include "training/adamw.h"
#include "llm/errors.h"
#include "llm/file_util.h"
#include "llm/llama.h"
#include "sharedllm/loaded_model.h"
#include "llm/scoring.h"
#include "sharedllm/sharedllm.h"
#include "sharedllm/config.h"
#include "training/sft_data.h"
#include "training/token_shards.h"
#include "llm/weights.h"

namespace sharedllm {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

// Random streams of training and evaluation samples.
constexpr uint64_t kTrainStream = 1, kEvalStream = 2;

// Every sample is a pure function of these, so a resumed run sees exactly the same data.
std::mt19937_64 SampleRng(uint64_t seed, int64_t step, int64_t micro, uint64_t stream) {
  std::seed_seq seq{seed, static_cast<uint64_t>(step), static_cast<uint64_t>(micro), stream};
  return std::mt19937_64(seq);
}

// `elapsed`: seconds trained so far; with a time budget the schedule also runs by time.
double LearningRate(const TrainConfig& c, int64_t step, double elapsed) {
  if (step < c.warmup_steps) return c.lr * (step + 1) / c.warmup_steps;
  double progress = c.steps > c.warmup_steps
                        ? double(step - c.warmup_steps) / double(c.steps - c.warmup_steps)
                        : 1.0;
  if (c.time_budget > 0) progress = std::max(progress, elapsed / c.time_budget);
  const double floor = c.lr * c.min_lr_ratio;
  return floor + 0.5 * (c.lr - floor) * (1 + std::cos(M_PI * std::min(1.0, progress)));
}

// bf16 autocast on the training device. The per-device API replaced set_cpu_enabled/set_enabled
// in libtorch 2.4; Debian ships 1.13, a GPU machine's PyTorch a 2.x.
void SetAutocast(const at::Device& device, bool on) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_enabled(device.type(), on);
  if (on) at::autocast::set_autocast_dtype(device.type(), at::kBFloat16);
#else
  if (device.is_cpu()) {
    at::autocast::set_cpu_enabled(on);
    if (on) at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
  } else {
    at::autocast::set_enabled(on);
    if (on) at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
  }
#endif
  if (!on) at::autocast::clear_cache();
}

at::Tensor IdsTensor(const std::vector<std::vector<int64_t>>& rows, int64_t pad) {
  size_t width = 0;
  for (const auto& r : rows) width = std::max(width, r.size());
  auto t = at::full({static_cast<int64_t>(rows.size()), static_cast<int64_t>(width)}, pad,
                    at::TensorOptions().dtype(at::kLong));
  for (size_t i = 0; i < rows.size(); ++i) {
    if (!rows[i].empty()) {
      t[i].narrow(0, 0, rows[i].size()).copy_(at::tensor(rows[i], at::TensorOptions().dtype(at::kLong)));
    }
  }
  return t;
}

// Drops the lines of the JSONL training log at `path` whose "step" is past `step` (a line without
// one is kept); rewrites the file only when something is dropped.
void TrimLog(const std::string& path, int64_t step) {
  if (!FileExists(path)) return;
  std::ifstream in(path);
  std::string kept;
  bool dropped = false;
  for (std::string line; std::getline(in, line);) {
    const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("step") && j["step"].is_number_integer() &&
        j["step"].get<int64_t>() > step) {
      dropped = true;
      continue;
    }
    kept += line + "\n";
  }
  in.close();
  if (!dropped) return;
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << kept;
    if (!out.flush()) throw ModelError("cannot write " + tmp);
  }
  std::filesystem::rename(tmp, path);
}

struct Batch {
  at::Tensor inputs;   // [B, T]
  at::Tensor targets;  // [B, T], -100 where not scored
  std::vector<std::vector<EncodedNode>> trees;  // lm/sft: per sample, the selected nodes
  at::Tensor teacher_inputs;  // lm_distill: [B, D + T], the context's last D tokens, then inputs
  int64_t num_chunks = 0;
  int64_t scored = 0;
};

class Run {
 public:
  explicit Run(const TrainConfig& c) : c_(c), device_(c.device) {
    Check(c.mode == "base" || c.mode == "lm" || c.mode == "sft",
          "mode must be base, lm or sft, not '" + c.mode + "'");
    Check(!c.out.empty(), "the training config needs \"out\"");
    Check(!c.train_shards.empty(), "the training config needs \"train_shards\"");
    Check(c.batch_size > 0 && c.grad_accum > 0 && c.steps > 0 && c.seq_len > 1,
          "batch_size, grad_accum, steps must be positive and seq_len > 1");
    Check(c.lm_mix >= 0 && c.lm_mix <= 1, "lm_mix must be in [0, 1]");
    Check(c.time_budget >= 0, "time_budget must be >= 0 seconds");
    Check(c.lm_mix == 0 || c.mode == "sft", "lm_mix mixes language modelling into sft only");
    Check(c.lm_chunks_min >= 0 && c.lm_chunks_min <= c.context_chunks,
          "lm_chunks_min must be in [0, context_chunks]");
    Check(c.lm_scored_tokens >= 0 && c.lm_scored_tokens <= c.seq_len,
          "lm_scored_tokens must be in [0, seq_len]");
    Check(c.lm_distill >= 0 && c.lm_distill <= 1, "lm_distill must be in [0, 1]");
    Check(c.lm_distill == 0 || c.mode != "base",
          "lm_distill distils the language modelling of a SharedLLM (lm or sft), not base training");
    Check(c.lm_rename >= 0 && c.lm_rename <= 1, "lm_rename must be in [0, 1]");
    Check(c.lm_rename == 0 || c.mode != "base",
          "lm_rename renames the language modelling of a SharedLLM (lm or sft), not base training");
    Check(c.lm_distill_context >= -1,
          "lm_distill_context must be >= 0 tokens, or -1 for seq_len");
    RuntimeOptions runtime;
    runtime.threads = c.threads;
    runtime.device = c.device;
    InitRuntime(runtime);
    // TF32 matmuls on a GPU (fp32 storage, 10-bit mantissa products), as PyTorch's "high".
    if (!device_.is_cpu()) at::globalContext().setFloat32MatmulPrecision("high");
    train_ = std::make_unique<TokenPool>(c.train_shards, c.train_shard_weights);
    eval_ = std::make_unique<TokenPool>(c.eval_shards);
    if (c.mode == "base") {
      if (!c.init.empty()) {
        model_ = LoadModel(c.init, runtime);
      } else {
        Check(!c.model_config.empty(), "base mode needs \"init\" or \"model_config\"");
        model_ = std::make_shared<LoadedModel>();
        model_->config = ModelConfig::FromJsonText(ReadTextFile(c.model_config));
        model_->lm = CausalLM(model_->config, at::TensorOptions().dtype(at::kFloat));
        model_->lm->InitRandom(c.seed, 0.02);
        model_->lm->to(device_);
      }
      if (!c.tokenizer.empty()) model_->tokenizer = LoadSentencePieceTokenizer(c.tokenizer);
      for (auto& p : model_->lm->parameters()) p.set_requires_grad(true);
    } else {
      Check(!c.init.empty(), c.mode + " mode needs \"init\": a SharedLLM directory (sharedllm init)");
      // Loaded to be changed: which parameters train is set here (and only here).
      ModelToChange change = LoadModelToChange(c.init, runtime);
      model_ = change.model;
      Check(change.shared != nullptr, c.init + " is not a SharedLLM directory (run sharedllm init)");
      change.shared->SetTrainable(c.lower_trainable, c.upper_trainable);
      for (const std::string& part : c.frozen) {
        bool matched = false;
        for (auto& p : model_->lm->named_parameters()) {
          if (p.key().find(part) == std::string::npos) continue;
          p.value().set_requires_grad(false);
          matched = true;
        }
        Check(matched, "frozen: no parameter name contains '" + part + "'");
      }
      if (c.lm_rename > 0) CheckRenameIds(c.lm_rename_ids, model_->config.vocab_size);
      Check(c.mode != "sft" || model_->tokenizer, "sft needs the model's tokenizer.model");
    }
    Check(train_->vocab_size() <= model_->config.vocab_size,
          "the shards' vocabulary (" + std::to_string(train_->vocab_size()) +
              ") exceeds the model's (" + std::to_string(model_->config.vocab_size) + ")");
    model_->lm->train();
    std::vector<AdamW::Param> params;
    for (auto& p : model_->lm->named_parameters()) {
      if (!p.value().requires_grad()) continue;
      params.push_back({p.key(), p.value(),
                        IsCrossAttentionParameter(p.key()) ? c.new_params_lr_scale : 1.0,
                        p.value().dim() >= 2});
    }
    Check(!params.empty(), "nothing to train");
    AdamWOptions opt;
    opt.weight_decay = c.weight_decay;
    optimizer_ = std::make_unique<AdamW>(std::move(params), opt);
    tasks_ = c.sft_tasks.empty() ? SftTaskNames() : c.sft_tasks;
  }

  TrainResult Go() {
    std::filesystem::create_directories(c_.out);
    const std::string ckpt = JoinPath(c_.out, "checkpoint");
    int64_t step = 0;
    TrainResult result;
    double elapsed_before = 0;
    if (FileExists(JoinPath(ckpt, "state.json"))) {
      const json state = json::parse(ReadTextFile(JoinPath(ckpt, "state.json")));
      step = state.at("step").get<int64_t>();
      result.tokens = state.value("tokens", int64_t{0});
      elapsed_before = state.value("seconds", 0.0);
      LoadParameters(*model_->lm, CheckpointReader::FromFile(JoinPath(ckpt, "model.safetensors")),
                     ckpt + "/model.safetensors");
      optimizer_->LoadState(CheckpointReader::FromFile(JoinPath(ckpt, "optimizer.safetensors")));
      std::fprintf(stderr, "resuming %s at step %lld\n", c_.out.c_str(), static_cast<long long>(step));
    }
    // A run killed after its last checkpoint logged steps it will now train again: keep only the
    // lines up to the step it resumes from (none on a fresh start).
    const std::string log_path = JoinPath(c_.out, "train_log.jsonl");
    TrimLog(log_path, step);
    std::ofstream log(log_path, std::ios::app);
    const auto start = Clock::now();
    // Seconds trained, this run and any run resumed from.
    auto elapsed = [&] { return elapsed_before + std::chrono::duration<double>(Clock::now() - start).count(); };
    double window_loss = 0;
    int64_t window_steps = 0, window_tokens = 0;
    auto window_start = Clock::now();
    const int64_t first_step = step;
    for (; step < c_.steps; ++step) {
      if (c_.stop_after > 0 && step - first_step == c_.stop_after) {
        result.steps = step;
        result.seconds = elapsed();
        SaveCheckpoint(ckpt, step, result.tokens, result.seconds);
        return result;  // interrupted on purpose: resume with the same config
      }
      const double lr = LearningRate(c_, step, elapsed());
      double step_loss = 0;
      for (int64_t micro = 0; micro < c_.grad_accum; ++micro) {
        Batch batch = MakeBatch(*train_, step, micro, kTrainStream);
        at::Tensor loss = Loss(batch);
        (loss / static_cast<double>(c_.grad_accum)).backward();
        step_loss += loss.item<double>() / c_.grad_accum;
        window_tokens += batch.scored;
        result.tokens += batch.scored;
      }
      const double grad_norm = optimizer_->ClipGradNorm(c_.grad_clip);
      optimizer_->Step(lr);
      optimizer_->ZeroGrad();
      window_loss += step_loss;
      ++window_steps;
      const bool out_of_time = c_.time_budget > 0 && elapsed() >= c_.time_budget;
      const bool last = step + 1 == c_.steps || out_of_time;
      if ((step + 1) % c_.log_every == 0 || last) {
        const double secs = std::chrono::duration<double>(Clock::now() - window_start).count();
        const double total = elapsed();
        const double tps = window_tokens / std::max(secs, 1e-9);
        double eta = secs / window_steps * (c_.steps - step - 1);
        if (c_.time_budget > 0) eta = std::min(eta, std::max(0.0, c_.time_budget - total));
        result.final_loss = window_loss / window_steps;
        std::fprintf(stderr, "step %lld/%lld loss %.4f lr %.2e grad %.2f %.0f tok/s elapsed %.0fs eta %.0fs\n",
                     static_cast<long long>(step + 1), static_cast<long long>(c_.steps),
                     result.final_loss, lr, grad_norm, tps, total, eta);
        log << json{{"step", step + 1}, {"loss", result.final_loss}, {"lr", lr},
                    {"grad_norm", grad_norm}, {"tokens", result.tokens},
                    {"tokens_per_second", tps}, {"seconds", total}}.dump() << "\n";
        log.flush();
        window_loss = 0;
        window_steps = 0;
        window_tokens = 0;
        window_start = Clock::now();
      }
      if (!eval_->empty() && ((c_.eval_every > 0 && (step + 1) % c_.eval_every == 0) || last)) {
        result.eval_loss = Evaluate();
        std::fprintf(stderr, "step %lld eval_loss %.4f\n", static_cast<long long>(step + 1), result.eval_loss);
        log << json{{"step", step + 1}, {"eval_loss", result.eval_loss}}.dump() << "\n";
        log.flush();
      }
      if ((c_.checkpoint_every > 0 && (step + 1) % c_.checkpoint_every == 0) || last) {
        const double total = elapsed();
        SaveCheckpoint(ckpt, step + 1, result.tokens, total);
      }
      if (out_of_time) {
        std::fprintf(stderr, "time budget of %.0f s spent after %lld steps\n", c_.time_budget,
                     static_cast<long long>(step + 1));
        ++step;
        break;
      }
    }
    result.steps = step;
    result.seconds = elapsed();
    SaveFinal();
    return result;
  }

 private:
  Batch MakeBatch(const TokenPool& pool, int64_t step, int64_t micro, uint64_t stream) {
    Batch b;
    std::vector<std::vector<int64_t>> inputs, targets, teacher;
    if (c_.mode == "base") {
      for (int64_t i = 0; i < c_.batch_size; ++i) {
        auto rng = SampleRng(c_.seed, step, micro * c_.batch_size + i, stream);
        auto w = pool.Window(rng, c_.seq_len + 1);
        inputs.emplace_back(w.begin(), w.end() - 1);
        targets.emplace_back(w.begin() + 1, w.end());
        b.scored += c_.seq_len;
      }
    } else {
      const SharedLLM& s = *model_->shared;
      const int64_t chunk = s.config().chunk_size;
      auto step_rng = SampleRng(c_.seed, step, micro, stream + 100);
      // sft may mix in language-modelling micro-batches (lm_mix).
      const bool lm = c_.mode == "lm" ||
                      (c_.lm_mix > 0 && std::uniform_real_distribution<double>(0, 1)(step_rng) < c_.lm_mix);
      // sft varies the context length per step (1..n chunks) so retrieval generalises over lengths;
      // language modelling takes n, or with lm_chunks_min a log-uniform draw up to it.
      int64_t n = c_.context_chunks;
      if (!lm) {
        n = std::uniform_int_distribution<int64_t>(1, c_.context_chunks)(step_rng);
      } else if (c_.lm_chunks_min > 0) {
        n = DrawLogUniform(step_rng, c_.lm_chunks_min, c_.context_chunks);
      }
      b.num_chunks = n;
      // Each sample keeps its own generator (its split noise is drawn after its data); the trees
      // of all samples are then built together.
      std::vector<std::mt19937_64> rngs;
      rngs.reserve(c_.batch_size);
      std::vector<std::vector<int64_t>> contexts(c_.batch_size);
      std::vector<at::Tensor> queries(c_.batch_size);
      const FillerSource window = [&pool](std::mt19937_64& r, int64_t count) {
        return pool.Window(r, count);
      };
      for (int64_t i = 0; i < c_.batch_size; ++i) {
        rngs.push_back(SampleRng(c_.seed, step, micro * c_.batch_size + i, stream));
        auto& rng = rngs.back();
        std::vector<int64_t>& context = contexts[i];
        at::Tensor& query = queries[i];
        if (lm) {
          LmSample sample = DrawLmSample(window, rng, n * chunk, c_.seq_len + 1);
          if (c_.lm_rename > 0 && stream == kTrainStream) {
            // Its own generator: the sample's draws (and so its tree) are those of a run without.
            auto rename_rng = SampleRng(c_.seed, step, micro * c_.batch_size + i, stream + 200);
            if (std::uniform_real_distribution<double>(0, 1)(rename_rng) < c_.lm_rename) {
              RenameTokens(sample.context, sample.running, c_.lm_rename_ids[0], c_.lm_rename_ids[1],
                           rename_rng);
            }
          }
          context = std::move(sample.context);
          inputs.emplace_back(sample.running.begin(), sample.running.end() - 1);
          targets.emplace_back(sample.running.begin() + 1, sample.running.end());
          const int64_t scored = c_.lm_scored_tokens > 0 ? c_.lm_scored_tokens : c_.seq_len;
          std::fill(targets.back().begin(), targets.back().end() - scored, int64_t{-100});
          b.scored += scored;
          if (c_.lm_distill > 0 && stream == kTrainStream) {
            const int64_t d = std::min<int64_t>(
                c_.lm_distill_context < 0 ? c_.seq_len : c_.lm_distill_context,
                static_cast<int64_t>(context.size()));
            std::vector<int64_t> seen(context.end() - d, context.end());
            seen.insert(seen.end(), inputs.back().begin(), inputs.back().end());
            teacher.push_back(std::move(seen));
          }
        } else {
          const std::string& task = tasks_[std::uniform_int_distribution<size_t>(0, tasks_.size() - 1)(rng)];
          SftSample sample = MakeSftSample(task, *model_->tokenizer, window, n * chunk, rng);
          context = std::move(sample.context);
          std::vector<int64_t> seq = sample.prompt;
          seq.insert(seq.end(), sample.answer.begin(), sample.answer.end());
          std::vector<int64_t> tgt(seq.size() - 1, -100);
          for (size_t t = sample.prompt.size() - 1; t + 1 < seq.size(); ++t) tgt[t] = seq[t + 1];
          seq.pop_back();
          inputs.push_back(seq);
          targets.push_back(tgt);
          b.scored += static_cast<int64_t>(sample.answer.size());
          c10::NoGradGuard no_grad;
          query = s.QueryVector(sample.prompt);
        }
      }
      std::vector<const std::vector<int64_t>*> context_ptrs;
      std::vector<std::mt19937_64*> rng_ptrs;
      for (int64_t i = 0; i < c_.batch_size; ++i) {
        context_ptrs.push_back(&contexts[i]);
        rng_ptrs.push_back(&rngs[i]);
      }
      // With a frozen lower model no graph is built through the compressor.
      b.trees = s.BuildDynamicTrees(context_ptrs, queries, rng_ptrs);
    }
    b.inputs = IdsTensor(inputs, 0).to(device_);
    b.targets = IdsTensor(targets, -100).to(device_);
    if (!teacher.empty()) b.teacher_inputs = IdsTensor(teacher, 0).to(device_);
    return b;
  }

  at::Tensor Loss(const Batch& b) {
    InjectionContext ctx;
    const InjectionContext* ctx_ptr = nullptr;
    if (!b.trees.empty()) {
      std::vector<std::vector<const EncodedNode*>> per_sample;
      for (const auto& tree : b.trees) {
        per_sample.emplace_back();
        for (const auto& n : tree) per_sample.back().push_back(&n);
      }
      ctx = model_->shared->MakeBatchContext(
          per_sample, std::vector<int64_t>(b.trees.size(), b.num_chunks));
      ctx_ptr = &ctx;
    }
    if (c_.bf16_autocast) SetAutocast(device_, true);
    at::Tensor logits = model_->lm->forward(b.inputs, nullptr, ctx_ptr);  // [B, T, V] float32
    if (c_.bf16_autocast) SetAutocast(device_, false);
    logits = logits.to(at::kFloat);
    const at::Tensor ce = at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}),
                                                 b.targets.reshape({-1}), {}, at::Reduction::Mean, -100);
    if (!b.teacher_inputs.defined()) return ce;
    const at::Tensor log_teacher = TeacherLogProbs(b);
    const at::Tensor scored = b.targets.ne(-100).to(at::kFloat);  // [B, T]
    const at::Tensor kl =
        (log_teacher.exp() * (log_teacher - at::log_softmax(logits, -1))).sum(-1);  // [B, T]
    return (1 - c_.lm_distill) * ce + c_.lm_distill * (kl * scored).sum() / scored.sum();
  }

  // lm_distill's teacher: log-probabilities [B, T, V] of the running tokens read after the last D
  // context tokens, by the model without its context, with YaRN where D + T passes the window.
  at::Tensor TeacherLogProbs(const Batch& b) {
    c10::NoGradGuard no_grad;
    const int64_t total = b.teacher_inputs.size(1), t = b.inputs.size(1);
    const double factor =
        static_cast<double>(total) / static_cast<double>(model_->config.max_position_embeddings);
    std::optional<ScopedRopeScaling> scaled;
    if (factor > 1) scaled.emplace(*model_->lm, RopeType::kYarn, factor);
    if (c_.bf16_autocast) SetAutocast(device_, true);
    const at::Tensor hidden = model_->lm->ForwardHidden(b.teacher_inputs);
    at::Tensor logits = model_->lm->Logits(hidden.narrow(1, total - t, t));
    if (c_.bf16_autocast) SetAutocast(device_, false);
    return at::log_softmax(logits.to(at::kFloat), -1);
  }

  double Evaluate() {
    c10::NoGradGuard no_grad;
    model_->lm->eval();
    double sum = 0;
    for (int64_t i = 0; i < c_.eval_batches; ++i) {
      sum += Loss(MakeBatch(*eval_, /*step=*/i, 0, kEvalStream)).item<double>();
    }
    model_->lm->train();
    return sum / c_.eval_batches;
  }

  void SaveCheckpoint(const std::string& dir, int64_t step, int64_t tokens, double seconds) {
    std::filesystem::create_directories(dir);
    WriteSafetensors(JoinPath(dir, "model.safetensors"), CollectParameters(*model_->lm));
    WriteSafetensors(JoinPath(dir, "optimizer.safetensors"), optimizer_->State());
    // state.json last: a checkpoint counts only once both tensor files are complete.
    WriteFileAtomic(JoinPath(dir, "state.json"),
                    json{{"step", step}, {"tokens", tokens}, {"seconds", seconds},
                         {"config", json::parse(c_.ToJsonText())}}.dump(2) + "\n");
  }

  void SaveFinal() {
    SaveModel(model_->lm, c_.out);
    if (model_->shared) SaveSharedLLM(*model_->shared, c_.out);
    std::string tok = c_.tokenizer;
    if (tok.empty() && !c_.init.empty()) tok = JoinPath(c_.init, "tokenizer.model");
    if (!tok.empty() && FileExists(tok)) {
      std::filesystem::copy_file(tok, JoinPath(c_.out, "tokenizer.model"),
                                 std::filesystem::copy_options::overwrite_existing);
    }
  }

  TrainConfig c_;
  at::Device device_;
  std::shared_ptr<LoadedModel> model_;
  std::unique_ptr<TokenPool> train_, eval_;
  std::unique_ptr<AdamW> optimizer_;
  std::vector<std::string> tasks_;
};

}  // namespace

TrainConfig TrainConfig::FromJsonText(const std::string& text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw ModelError(std::string("training config is not valid JSON: ") + e.what());
  }
  TrainConfig c;
  static const std::vector<std::string> known = {
      "mode", "init", "model_config", "tokenizer", "out", "train_shards", "train_shard_weights",
      "eval_shards", "seq_len",
      "context_chunks", "lm_chunks_min", "lm_scored_tokens",
      "lm_distill", "lm_distill_context", "lm_rename",
      "lm_rename_ids", "batch_size",
      "grad_accum", "steps", "warmup_steps", "lr", "min_lr_ratio", "new_params_lr_scale",
      "weight_decay", "grad_clip",
      "bf16_autocast", "lower_trainable", "upper_trainable", "seed", "log_every", "eval_every",
      "eval_batches",
      "checkpoint_every", "threads", "sft_tasks", "frozen",
      "stop_after", "device", "lm_mix", "time_budget"};
  // Model surgery is not training: the trainer trains the model it loads.
  static const std::vector<std::string> surgery = {
      "separate_compressor", "gate", "sink", "sink_logit", "num_injection_layers",
      "inherit_o_scale", "own_lower", "alphas"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (std::find(surgery.begin(), surgery.end(), it.key()) != surgery.end()) {
      throw ModelError("training config: '" + it.key() + "' changes the model, not its training; "
                       "make the changed model first with `sharedllm edit` and train that");
    }
    if (std::find(known.begin(), known.end(), it.key()) == known.end()) {
      throw ModelError("training config: unknown field '" + it.key() + "'");
    }
  }
  try {
#define GET(field) c.field = j.value(#field, c.field)
    GET(mode); GET(init); GET(model_config); GET(tokenizer); GET(out); GET(train_shards);
    GET(train_shard_weights);
    GET(eval_shards); GET(seq_len); GET(context_chunks); GET(lm_chunks_min);
    GET(lm_scored_tokens);
    GET(lm_distill); GET(lm_distill_context); GET(lm_rename);
    GET(lm_rename_ids);
    GET(batch_size); GET(grad_accum);
    GET(steps); GET(warmup_steps); GET(lr); GET(min_lr_ratio); GET(new_params_lr_scale);
    GET(weight_decay); GET(grad_clip); GET(bf16_autocast); GET(lower_trainable); GET(seed);
    GET(upper_trainable);
    GET(log_every); GET(eval_every); GET(eval_batches); GET(checkpoint_every); GET(threads);
    GET(sft_tasks); GET(frozen); GET(stop_after); GET(device); GET(lm_mix); GET(time_budget);
#undef GET
  } catch (const json::exception& e) {
    throw ModelError(std::string("training config has a field of the wrong type: ") + e.what());
  }
  return c;
}

TrainConfig TrainConfig::Load(const std::string& path) {
  try {
    return FromJsonText(ReadTextFile(path));
  } catch (const ModelError& e) {
    throw ModelError(path + ": " + e.what());
  }
}

std::string TrainConfig::ToJsonText() const {
  json j = {{"mode", mode}, {"init", init}, {"model_config", model_config},
            {"tokenizer", tokenizer}, {"out", out}, {"train_shards", train_shards},
            {"train_shard_weights", train_shard_weights},
            {"eval_shards", eval_shards}, {"seq_len", seq_len}, {"context_chunks", context_chunks},
            {"lm_chunks_min", lm_chunks_min}, {"lm_scored_tokens", lm_scored_tokens},
            {"lm_distill", lm_distill}, {"lm_distill_context", lm_distill_context},
            {"lm_rename", lm_rename}, {"lm_rename_ids", lm_rename_ids},
            {"batch_size", batch_size},
            {"grad_accum", grad_accum}, {"steps", steps},
            {"warmup_steps", warmup_steps}, {"lr", lr}, {"min_lr_ratio", min_lr_ratio},
            {"new_params_lr_scale", new_params_lr_scale}, {"weight_decay", weight_decay},
            {"grad_clip", grad_clip}, {"bf16_autocast", bf16_autocast},
            {"lower_trainable", lower_trainable}, {"upper_trainable", upper_trainable},
            {"seed", seed}, {"log_every", log_every},
            {"eval_every", eval_every}, {"eval_batches", eval_batches},
            {"checkpoint_every", checkpoint_every}, {"threads", threads}, {"sft_tasks", sft_tasks},
            {"frozen", frozen}, {"stop_after", stop_after}, {"device", device}, {"lm_mix", lm_mix},
            {"time_budget", time_budget}};
  return j.dump(2) + "\n";
}

LmSample DrawLmSample(const std::function<std::vector<int64_t>(std::mt19937_64&, int64_t)>& window,
                      std::mt19937_64& rng, int64_t context_tokens, int64_t running) {
  LmSample s;
  std::vector<int64_t> w = window(rng, context_tokens + running);
  s.context.assign(w.begin(), w.begin() + context_tokens);
  s.running.assign(w.begin() + context_tokens, w.end());
  return s;
}

int64_t DrawLogUniform(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  Check(lo >= 1 && lo <= hi, "DrawLogUniform needs 1 <= lo <= hi");
  // Uniform in [log lo, log(hi + 1)), floored: n has probability
  // log((n + 1) / n) / log((hi + 1) / lo).
  const double x = std::uniform_real_distribution<double>(
      std::log(static_cast<double>(lo)), std::log(static_cast<double>(hi) + 1))(rng);
  return std::clamp<int64_t>(static_cast<int64_t>(std::exp(x)), lo, hi);
}

TrainResult Train(const TrainConfig& config) { return Run(config).Go(); }

}  // namespace sharedllm

#include "eval/streaming_llm.h"

#include <cmath>
#include <limits>
#include <set>

#include <c10/core/InferenceMode.h>

#include "llm/errors.h"
#include "llm/rope.h"

namespace sharedllm {
namespace {

at::Tensor Hide(const at::Tensor& hidden) {
  auto mask = at::zeros(hidden.sizes(), at::TensorOptions().dtype(at::kFloat).device(hidden.device()));
  return mask.masked_fill(hidden, -std::numeric_limits<float>::infinity());
}

at::Tensor Cat(const at::Tensor& a, const at::Tensor& b, int64_t dim) {
  return a.defined() ? at::cat({a, b}, dim) : b;
}

}  // namespace

StreamingLLM::StreamingLLM(CausalLM lm, int64_t window, int64_t sinks, int64_t block)
    : lm_(std::move(lm)),
      window_(window > 0 ? window
              : lm_->config.sliding_window > 0
                  ? std::min(lm_->config.sliding_window, lm_->config.max_position_embeddings)
                  : lm_->config.max_position_embeddings),
      sinks_(sinks),
      block_(block > 0 ? block : window_),
      sink_k_(lm_->config.num_hidden_layers), sink_v_(lm_->config.num_hidden_layers),
      recent_k_(lm_->config.num_hidden_layers), recent_v_(lm_->config.num_hidden_layers) {
  Check(sinks_ >= 0 && sinks_ < window_, "StreamingLLM needs 0 <= sinks < window (" +
                                             std::to_string(sinks_) + ", " + std::to_string(window_) + ")");
  Check(lm_->config.sliding_window <= 0 || lm_->config.sliding_window >= window_,
        "StreamingLLM's cache cannot exceed the model's sliding window");
}

int64_t StreamingLLM::cache_entries() const {
  return std::min(sinks_, seen_) + (recent_pos_.defined() ? recent_pos_.numel() : 0);
}

at::Tensor StreamingLLM::Feed(const std::vector<int64_t>& ids) {
  Check(!ids.empty(), "StreamingLLM::Feed needs at least one token");
  c10::InferenceMode guard;
  std::vector<at::Tensor> out;
  for (size_t at = 0; at < ids.size(); at += block_) {
    const size_t end = std::min(ids.size(), at + static_cast<size_t>(block_));
    out.push_back(FeedBlock(std::vector<int64_t>(ids.begin() + at, ids.begin() + end)));
  }
  return out.size() == 1 ? out[0] : at::cat(out, 0);
}

at::Tensor StreamingLLM::FeedBlock(const std::vector<int64_t>& ids) {
  const ModelConfig& c = lm_->config;
  for (int64_t id : ids) {
    Check(id >= 0 && id < c.vocab_size, "token id " + std::to_string(id) + " is outside the vocabulary");
  }
  const auto device = lm_->model->embed_tokens->weight.device();
  const auto lopts = at::TensorOptions().dtype(at::kLong);
  const int64_t t = static_cast<int64_t>(ids.size());
  const int64_t s = seen_;
  const int64_t heads = c.num_attention_heads, kvh = c.num_key_value_heads, d = c.head_dim;
  const int64_t groups = heads / kvh;
  const int64_t keep = window_ - sinks_ - 1;  // recent entries carried to the next token
  const int64_t block_sinks = std::clamp<int64_t>(sinks_ - s, 0, t);  // tokens of this block < sinks

  // Rotary: every query at its true position (for the recent keys, whose true distance equals
  // their distance in the rolling cache) and at its cache position min(t, W-1) (for the sinks,
  // which sit at cache slots 0..sinks-1).
  auto q_pos = at::arange(s, s + t, lopts);
  auto [cos_true, sin_true] = lm_->rope.CosSin(q_pos, window_);
  auto [cos_cache, sin_cache] = lm_->rope.CosSin(at::clamp_max(q_pos, window_ - 1), window_);
  cos_true = cos_true.to(device), sin_true = sin_true.to(device);
  cos_cache = cos_cache.to(device), sin_cache = sin_cache.to(device);

  // Masks shared by all layers: [T, sinks so far], [T, recent entries].
  const int64_t n_sinks = std::min(sinks_, s + t);
  auto qp = q_pos.unsqueeze(1);
  auto sink_mask = Hide(at::arange(0, n_sinks, lopts).unsqueeze(0) > qp).to(device);
  auto block_recent_pos = at::arange(s + block_sinks, s + t, lopts);
  auto recent_pos = Cat(recent_pos_, block_recent_pos, 0);
  auto rp = recent_pos.unsqueeze(0);
  auto recent_mask = Hide((rp > qp).logical_or(qp - rp >= window_ - sinks_)).to(device);
  auto mask = at::cat({sink_mask, recent_mask}, 1);
  if (groups > 1) mask = mask.repeat({groups, 1});

  auto input = at::tensor(ids, lopts).view({1, t}).to(device);
  auto h = lm_->model->embed_tokens(input);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    auto& layer = lm_->model->layer(i);
    auto& attn = *layer.self_attn;
    auto x = layer.input_layernorm(h);
    auto q = attn.q_proj(x).view({1, t, heads, d}).transpose(1, 2);
    auto k = attn.k_proj(x).view({1, t, kvh, d}).transpose(1, 2);
    auto v = attn.v_proj(x).view({1, t, kvh, d}).transpose(1, 2);
    auto q_true = ApplyRotary(q, cos_true, sin_true).reshape({1, kvh, groups * t, d});
    auto q_cache = ApplyRotary(q, cos_cache, sin_cache).reshape({1, kvh, groups * t, d});
    k = ApplyRotary(k, cos_true, sin_true);  // sinks: true position == cache slot
    if (block_sinks > 0) {
      sink_k_[i] = Cat(sink_k_[i], k.narrow(2, 0, block_sinks), 2);
      sink_v_[i] = Cat(sink_v_[i], v.narrow(2, 0, block_sinks), 2);
    }
    auto rk = Cat(recent_k_[i], k.narrow(2, block_sinks, t - block_sinks), 2);
    auto rv = Cat(recent_v_[i], v.narrow(2, block_sinks, t - block_sinks), 2);
    at::Tensor scores = at::matmul(q_true, rk.transpose(-1, -2));
    at::Tensor values = rv;
    if (n_sinks > 0) {
      scores = at::cat({at::matmul(q_cache, sink_k_[i].transpose(-1, -2)), scores}, -1);
      values = at::cat({sink_v_[i], rv}, 2);
    }
    scores = scores.to(at::kFloat) / std::sqrt(static_cast<double>(d)) + mask;
    auto probs = at::softmax(scores, -1).to(values.scalar_type());
    auto out = at::matmul(probs, values).view({1, heads, t, d});
    h = h + attn.o_proj(out.transpose(1, 2).reshape({1, t, heads * d}));
    h = h + layer.mlp(layer.post_attention_layernorm(h));
    const int64_t n = rk.size(2), kept = std::min(keep, n);
    recent_k_[i] = rk.narrow(2, n - kept, kept).clone();
    recent_v_[i] = rv.narrow(2, n - kept, kept).clone();
  }
  const int64_t n = recent_pos.numel(), kept = std::min(keep, n);
  recent_pos_ = recent_pos.narrow(0, n - kept, kept).clone();
  seen_ += t;
  return lm_->model->norm(h).squeeze(0);
}

namespace {

// NLL of ids[i+1] given the hidden state at position i, for rows `hidden` that predict `targets`.
std::vector<double> Nll(CausalLM& lm, const at::Tensor& hidden, const std::vector<int64_t>& targets) {
  auto logp = at::log_softmax(lm->Logits(hidden).to(at::kDouble), -1);
  auto tgt = at::tensor(targets, at::TensorOptions().dtype(at::kLong)).to(logp.device());
  auto nll = -logp.gather(1, tgt.unsqueeze(1)).squeeze(1).to(at::kCPU).contiguous();
  return std::vector<double>(nll.data_ptr<double>(), nll.data_ptr<double>() + nll.numel());
}

}  // namespace

std::vector<double> StreamingTokenNll(CausalLM& lm, const std::vector<int64_t>& ids,
                                      int64_t window, int64_t sinks) {
  Check(ids.size() >= 2, "scoring needs at least two tokens");
  c10::InferenceMode guard;
  StreamingLLM s(lm, window, sinks);
  auto hidden = s.Feed(std::vector<int64_t>(ids.begin(), ids.end() - 1));
  return Nll(lm, hidden, std::vector<int64_t>(ids.begin() + 1, ids.end()));
}

double StreamingNll(CausalLM& lm, const std::vector<int64_t>& ids, int64_t scored, int64_t window,
                    int64_t sinks) {
  const int64_t n = static_cast<int64_t>(ids.size());
  Check(scored >= 1 && scored < n, "StreamingNll: scored must be in 1..len-1");
  c10::InferenceMode guard;
  StreamingLLM s(lm, window, sinks);
  // Only the last `scored` predicting positions need logits (the vocabulary matmul dominates).
  const int64_t first = n - 1 - scored;
  if (first > 0) s.Feed(std::vector<int64_t>(ids.begin(), ids.begin() + first));
  auto hidden = s.Feed(std::vector<int64_t>(ids.begin() + first, ids.end() - 1));
  const auto nll = Nll(lm, hidden, std::vector<int64_t>(ids.begin() + first + 1, ids.end()));
  double sum = 0;
  for (double x : nll) sum += x;
  return sum / scored;
}

std::string StreamingGenerate(CausalLM& lm, const std::vector<int64_t>& prompt, int64_t max_tokens,
                              const Tokenizer& tokenizer, int64_t window, int64_t sinks) {
  c10::InferenceMode guard;
  std::set<int64_t> eos(lm->config.eos_token_ids.begin(), lm->config.eos_token_ids.end());
  if (tokenizer.eos_id() >= 0) eos.insert(tokenizer.eos_id());
  StreamingLLM s(lm, window, sinks);
  auto hidden = s.Feed(prompt);
  std::vector<int64_t> out;
  for (int64_t i = 0; i < max_tokens; ++i) {
    const int64_t next = lm->Logits(hidden[hidden.size(0) - 1]).argmax().item<int64_t>();
    if (eos.count(next)) break;
    out.push_back(next);
    if (i + 1 < max_tokens) hidden = s.Feed({next});
  }
  return tokenizer.Decode(out);
}

}  // namespace sharedllm

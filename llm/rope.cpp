#include "llm/rope.h"

#include <cmath>

#include <ATen/ATen.h>

namespace sharedllm {
namespace {

constexpr double kPi = 3.14159265358979323846;

// theta^(-2i/d) for i in [0, d/2): float64 [d/2].
at::Tensor BaseInverseFrequencies(double theta, int64_t dim) {
  auto idx = at::arange(0, dim, 2, at::TensorOptions().dtype(at::kDouble));
  return 1.0 / at::pow(theta, idx / static_cast<double>(dim));
}

int64_t OriginalContext(const ModelConfig& c) {
  return c.rope_scaling.original_max_position_embeddings > 0
             ? c.rope_scaling.original_max_position_embeddings
             : c.max_position_embeddings;
}

// YaRN (Peng et al. 2023): interpolate low frequencies, extrapolate high ones, ramp between.
at::Tensor YarnInverseFrequencies(const ModelConfig& c) {
  const RopeScaling& r = c.rope_scaling;
  const int64_t dim = c.head_dim;
  const double base = c.rope_theta;
  const double orig = static_cast<double>(OriginalContext(c));
  // The dimension whose wavelength completes `rotations` turns over the original context.
  auto correction_dim = [&](double rotations) {
    return dim * std::log(orig / (rotations * 2 * kPi)) / (2 * std::log(base));
  };
  double low = std::max(std::floor(correction_dim(r.beta_fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(r.beta_slow)), static_cast<double>(dim - 1));
  if (low == high) high += 0.001;  // avoids a division by zero, as HF does
  auto ramp = ((at::arange(dim / 2, at::TensorOptions().dtype(at::kDouble)) - low) / (high - low))
                  .clamp(0.0, 1.0);
  auto extrapolation = BaseInverseFrequencies(base, dim);
  auto interpolation = extrapolation / r.factor;
  auto extrapolation_weight = 1.0 - ramp;
  return interpolation * (1.0 - extrapolation_weight) + extrapolation * extrapolation_weight;
}

// Llama 3.1: divide low frequencies by `factor`, keep high ones, smooth in between.
at::Tensor Llama3InverseFrequencies(const ModelConfig& c) {
  const RopeScaling& r = c.rope_scaling;
  auto inv = BaseInverseFrequencies(c.rope_theta, c.head_dim);
  const double old_len = static_cast<double>(OriginalContext(c));
  const double low_freq_wavelen = old_len / r.low_freq_factor;
  const double high_freq_wavelen = old_len / r.high_freq_factor;
  auto wavelen = 2 * kPi / inv;
  auto scaled = at::where(wavelen > low_freq_wavelen, inv / r.factor, inv);
  auto smooth = (old_len / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
  auto smoothed = (1 - smooth) * scaled / r.factor + smooth * scaled;
  auto medium = (wavelen >= high_freq_wavelen).logical_and(wavelen <= low_freq_wavelen);
  return at::where(medium, smoothed, scaled);
}

}  // namespace

RotaryEmbedding::RotaryEmbedding(const ModelConfig& config) : config_(config) {
  const RopeScaling& r = config.rope_scaling;
  switch (r.type) {
    case RopeType::kDefault:
    case RopeType::kDynamic:
      inv_freq_ = BaseInverseFrequencies(config.rope_theta, config.head_dim);
      break;
    case RopeType::kLinear:
      inv_freq_ = BaseInverseFrequencies(config.rope_theta, config.head_dim) / r.factor;
      break;
    case RopeType::kYarn:
      inv_freq_ = YarnInverseFrequencies(config);
      attention_scale_ = r.attention_factor ? *r.attention_factor
                                            : (r.factor <= 1 ? 1.0 : 0.1 * std::log(r.factor) + 1.0);
      break;
    case RopeType::kLlama3:
      inv_freq_ = Llama3InverseFrequencies(config);
      break;
  }
}

at::Tensor RotaryEmbedding::InverseFrequencies(int64_t seq_len) const {
  if (config_.rope_scaling.type != RopeType::kDynamic) return inv_freq_;
  // Dynamic NTK: the base grows once the sequence outgrows the trained window.
  const double max_pos = static_cast<double>(config_.max_position_embeddings);
  const double len = std::max(static_cast<double>(seq_len), max_pos);
  const double factor = config_.rope_scaling.factor;
  const double dim = static_cast<double>(config_.head_dim);
  const double base =
      config_.rope_theta * std::pow(factor * len / max_pos - (factor - 1), dim / (dim - 2));
  return BaseInverseFrequencies(base, config_.head_dim);
}

std::pair<at::Tensor, at::Tensor> RotaryEmbedding::CosSin(const at::Tensor& positions,
                                                         int64_t seq_len) const {
  auto inv = InverseFrequencies(seq_len);                              // [D/2]
  auto freqs = positions.to(at::kDouble).unsqueeze(1) * inv.unsqueeze(0);  // [T, D/2]
  auto emb = at::cat({freqs, freqs}, -1);                              // [T, D]
  auto cos = (emb.cos() * attention_scale_).to(at::kFloat);
  auto sin = (emb.sin() * attention_scale_).to(at::kFloat);
  return {cos, sin};
}

at::Tensor ApplyRotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  auto x1 = x.narrow(-1, 0, half);
  auto x2 = x.narrow(-1, half, half);
  auto rotated = at::cat({-x2, x1}, -1);
  auto c = cos.to(x.scalar_type());
  auto s = sin.to(x.scalar_type());
  return x * c + rotated * s;
}

}  // namespace sharedllm

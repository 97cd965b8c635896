#include "training/adamw.h"

#include <cmath>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "llm/errors.h"

namespace sharedllm {

AdamW::AdamW(std::vector<Param> params, AdamWOptions options)
    : params_(std::move(params)), options_(options) {
  for (const auto& p : params_) {
    m_.push_back(at::zeros_like(p.tensor, at::TensorOptions().dtype(at::kFloat)));
    v_.push_back(at::zeros_like(p.tensor, at::TensorOptions().dtype(at::kFloat)));
  }
}

void AdamW::ZeroGrad() {
  for (auto& p : params_) {
    if (p.tensor.grad().defined()) p.tensor.mutable_grad() = at::Tensor();
  }
}

double AdamW::ClipGradNorm(double max_norm) {
  double sq = 0;
  for (auto& p : params_) {
    if (p.tensor.grad().defined()) sq += p.tensor.grad().to(at::kDouble).pow(2).sum().item<double>();
  }
  const double norm = std::sqrt(sq);
  if (max_norm > 0 && norm > max_norm) {
    const double scale = max_norm / (norm + 1e-6);
    for (auto& p : params_) {
      if (p.tensor.grad().defined()) p.tensor.mutable_grad().mul_(scale);
    }
  }
  return norm;
}

void AdamW::Step(double lr) {
  c10::NoGradGuard no_grad;
  ++step_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double c1 = 1 - std::pow(b1, static_cast<double>(step_));
  const double c2 = 1 - std::pow(b2, static_cast<double>(step_));
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i];
    if (!p.tensor.grad().defined()) continue;
    const double plr = lr * p.lr_scale;
    auto g = p.tensor.grad().to(at::kFloat);
    m_[i].mul_(b1).add_(g, 1 - b1);
    v_[i].mul_(b2).addcmul_(g, g, 1 - b2);
    auto update = (m_[i] / c1) / ((v_[i] / c2).sqrt_().add_(options_.eps));
    if (p.decay && options_.weight_decay > 0) p.tensor.mul_(1 - plr * options_.weight_decay);
    p.tensor.sub_(update.to(p.tensor.scalar_type()), plr);
  }
}

NamedTensors AdamW::State() const {
  NamedTensors out;
  out.emplace_back("step", at::full({1}, step_, at::TensorOptions().dtype(at::kLong)));
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back("exp_avg." + params_[i].name, m_[i]);
    out.emplace_back("exp_avg_sq." + params_[i].name, v_[i]);
  }
  return out;
}

void AdamW::LoadState(const CheckpointReader& reader) {
  Check(reader.contains("step"), "optimizer state has no step");
  std::vector<std::string> problems;
  for (size_t i = 0; i < params_.size(); ++i) {
    for (auto* pair : {&m_, &v_}) {
      const std::string key = (pair == &m_ ? "exp_avg." : "exp_avg_sq.") + params_[i].name;
      if (!reader.contains(key)) {
        problems.push_back("missing " + key);
      } else if (reader.shape(key) != (*pair)[i].sizes().vec()) {
        problems.push_back("mis-shaped " + key);
      } else {
        (*pair)[i].copy_(reader.tensor(key));
      }
    }
  }
  if (!problems.empty()) {
    std::string msg = "optimizer state does not match the trainable parameters:";
    for (const auto& p : problems) msg += "\n  " + p;
    throw ModelError(msg);
  }
  step_ = reader.tensor("step").item<int64_t>();
}

}  // namespace sharedllm

#include "optim/adamw.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>

#include "tensor/create.h"
#include "tensor/parallel_policy.h"
#include "tensor/view.h"

namespace qt::optim {

namespace {

constexpr int64_t kChunkElements = 1 << 14;  // elements per work item

// The per-step scalars, computed in double and rounded once to the parameter's type T (as
// PyTorch passes Python floats to its kernels).
template <typename T>
struct AdamWScalars {
  T decay;                   // 1 - lr * wd
  T beta1, one_minus_beta1;  // m = beta1 m + (1 - beta1) g
  T beta2, one_minus_beta2;  // v = beta2 v + (1 - beta2) g g
  T bias_correction2_sqrt;   // sqrt(1 - beta2^t)
  T eps;
  T negative_step_size;  // -lr / (1 - beta1^t)
};

// The fused update of elements [0, n) of one chunk. Same operation order as PyTorch's
// mul_ / add_ / addcmul_ / sqrt / div / add_ / addcdiv_ sequence. (GCC keeps this loop scalar
// because std::sqrt may set errno unless -fno-math-errno; at ~10 flops per parameter per step the
// update is negligible next to the forward and backward passes.)
template <typename T>
void adamw_update_chunk(T* __restrict parameter, T* __restrict m, T* __restrict v,
                        const T* __restrict grad, int64_t n, const AdamWScalars<T> s) {
  for (int64_t i = 0; i < n; ++i) {
    const T g = grad[i];
    const T decayed = parameter[i] * s.decay;
    const T m_new = m[i] * s.beta1 + s.one_minus_beta1 * g;
    const T v_new = v[i] * s.beta2 + s.one_minus_beta2 * g * g;
    const T denom = std::sqrt(v_new) / s.bias_correction2_sqrt + s.eps;
    m[i] = m_new;
    v[i] = v_new;
    parameter[i] = decayed + s.negative_step_size * m_new / denom;
  }
}

template <typename T>
void adamw_update(const Tensor& parameter, AdamWState& state, const Tensor& grad,
                  const AdamWOptions& options, double lr, double weight_decay) {
  const double t = static_cast<double>(state.step);
  const double bias_correction1 = 1.0 - std::pow(options.beta1, t);
  const double bias_correction2 = 1.0 - std::pow(options.beta2, t);
  const AdamWScalars<T> s{static_cast<T>(1.0 - lr * weight_decay),
                          static_cast<T>(options.beta1),
                          static_cast<T>(1.0 - options.beta1),
                          static_cast<T>(options.beta2),
                          static_cast<T>(1.0 - options.beta2),
                          static_cast<T>(std::sqrt(bias_correction2)),
                          static_cast<T>(options.eps),
                          static_cast<T>(-lr / bias_correction1)};
  T* p = parameter.data<T>();
  T* m = state.m.data<T>();
  T* v = state.v.data<T>();
  const T* g = grad.data<T>();
  const int64_t n = parameter.numel();
  const int64_t chunks = (n + kChunkElements - 1) / kChunkElements;
#pragma omp parallel for schedule(static) if (qt::worth_parallel(n, qt::WorkCost::light) && \
                                              chunks > 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t begin = chunk * kChunkElements;
    const int64_t length = std::min(n, begin + kChunkElements) - begin;
    adamw_update_chunk(p + begin, m + begin, v + begin, g + begin, length, s);
  }
}

}  // namespace

AdamW::AdamW(std::vector<ParameterGroup> groups, AdamWOptions options)
    : Optimizer(std::move(groups), "AdamW"), options_(options) {
  QT_CHECK(options.beta1 >= 0 && options.beta1 < 1 && options.beta2 >= 0 && options.beta2 < 1,
           "AdamW: betas must be in [0, 1), got ({}, {})", options.beta1, options.beta2);
  QT_CHECK(options.eps >= 0 && std::isfinite(options.eps),
           "AdamW: eps must be finite and >= 0, got {}", options.eps);
  for (const ParameterGroup& group : groups_) states_.emplace_back(group.parameters.size());
}

void AdamW::step(double lr) {
  QT_CHECK(std::isfinite(lr) && lr >= 0, "AdamW::step: lr must be finite and >= 0, got {}", lr);
  for (size_t g = 0; g < groups_.size(); ++g) {
    const ParameterGroup& group = groups_[g];
    const double group_lr = lr * group.lr_scale;
    for (size_t i = 0; i < group.parameters.size(); ++i) {
      const Tensor& parameter = group.parameters[i];
      const Tensor grad_handle = parameter.grad();
      if (!grad_handle.defined()) continue;  // no gradient: skipped, as in PyTorch
      const Tensor grad = ops::contiguous(grad_handle);
      AdamWState& state = states_[g][i];
      if (state.step == 0) {
        state.m = ops::zeros(parameter.shape(), parameter.dtype());
        state.v = ops::zeros(parameter.shape(), parameter.dtype());
      }
      ++state.step;
      if (parameter.dtype() == DType::f32)
        adamw_update<float>(parameter, state, grad, options_, group_lr, group.weight_decay);
      else
        adamw_update<double>(parameter, state, grad, options_, group_lr, group.weight_decay);
    }
  }
}

const AdamWState& AdamW::state(const std::string& name) const {
  const auto [g, i] = locate_parameter(groups_, name, "AdamW::state");
  return states_[g][i];
}

NamedTensors AdamW::state_tensors() const {
  NamedTensors out;
  for (size_t g = 0; g < groups_.size(); ++g) {
    for (size_t i = 0; i < groups_[g].names.size(); ++i) {
      const AdamWState& state = states_[g][i];
      if (state.step == 0) continue;
      const std::string& name = groups_[g].names[i];
      out.emplace_back("m." + name, state.m);
      out.emplace_back("v." + name, state.v);
      out.emplace_back("step." + name, ops::scalar(static_cast<double>(state.step), DType::i64));
    }
  }
  return out;
}

void AdamW::load_state_tensors(const NamedTensors& state) {
  // Where each parameter lives, and what the state names for it.
  std::map<std::string, std::pair<size_t, size_t>> index_of;
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t i = 0; i < groups_[g].names.size(); ++i) index_of[groups_[g].names[i]] = {g, i};

  struct Entries {
    Tensor m, v, step;
  };
  std::map<std::string, Entries> found;
  std::vector<std::string> problems;
  for (const auto& [key, tensor] : state) {
    const size_t dot = key.find('.');
    const std::string kind = dot == std::string::npos ? key : key.substr(0, dot);
    const std::string name = dot == std::string::npos ? "" : key.substr(dot + 1);
    if ((kind != "m" && kind != "v" && kind != "step") || !index_of.count(name)) {
      problems.push_back(fmt::format("unexpected entry '{}'", key));
      continue;
    }
    Entries& entries = found[name];
    Tensor& slot = kind == "m" ? entries.m : kind == "v" ? entries.v : entries.step;
    if (slot.defined()) problems.push_back(fmt::format("duplicate entry '{}'", key));
    if (!tensor.defined()) {
      problems.push_back(fmt::format("entry '{}' is undefined", key));
      continue;
    }
    const auto [g, i] = index_of.at(name);
    const Tensor& parameter = groups_[g].parameters[i];
    if (kind == "step") {
      if (tensor.dtype() != DType::i64 || tensor.numel() != 1)
        problems.push_back(fmt::format("'{}' must be one i64, got {} {}", key,
                                       dtype_name(tensor.dtype()), shape_str(tensor.shape())));
      else if (tensor.item() < 1)
        problems.push_back(fmt::format("'{}' = {} (must be >= 1)", key, tensor.item()));
    } else if (tensor.shape() != parameter.shape() || tensor.dtype() != parameter.dtype()) {
      problems.push_back(fmt::format("'{}' is {} {}, the parameter is {} {}", key,
                                     dtype_name(tensor.dtype()), shape_str(tensor.shape()),
                                     dtype_name(parameter.dtype()), shape_str(parameter.shape())));
    }
    slot = tensor;
  }
  for (const auto& [name, entries] : found)
    if (!entries.m.defined() || !entries.v.defined() || !entries.step.defined())
      problems.push_back(fmt::format("parameter '{}' needs all of m, v and step", name));
  if (!problems.empty())
    fail("AdamW::load_state_tensors: {} problem(s): {}", problems.size(),
         fmt::join(problems, "; "));

  for (auto& group_states : states_)
    for (AdamWState& s : group_states) s = AdamWState{};
  for (const auto& [name, entries] : found) {
    const auto [g, i] = index_of.at(name);
    AdamWState& s = states_[g][i];
    s.m = ops::clone(entries.m);
    s.v = ops::clone(entries.v);
    s.step = static_cast<int64_t>(entries.step.item());
  }
}

}  // namespace qt::optim

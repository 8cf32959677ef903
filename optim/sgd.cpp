#include "optim/sgd.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>

#include "tensor/parallel_policy.h"
#include "tensor/view.h"

namespace qt::optim {

namespace {

constexpr int64_t kChunkElements = 1 << 14;

template <typename T>
struct SGDScalars {
  T weight_decay;
  T momentum;
  T one_minus_dampening;
  T negative_lr;
  bool use_weight_decay;  // PyTorch adds wd * p only when wd != 0 (matters for p = inf)
  bool use_momentum;
  bool first_update;  // the buffer is set to d, not blended
  bool nesterov;
};

// One chunk of the fused update (operation order as PyTorch's add / mul_ / add_ sequence).
template <typename T>
void sgd_update_chunk(T* __restrict parameter, T* __restrict buffer, const T* __restrict grad,
                      int64_t n, const SGDScalars<T> s) {
  for (int64_t i = 0; i < n; ++i) {
    T d = s.use_weight_decay ? grad[i] + s.weight_decay * parameter[i] : grad[i];
    if (s.use_momentum) {
      const T b = s.first_update ? d : buffer[i] * s.momentum + s.one_minus_dampening * d;
      buffer[i] = b;
      d = s.nesterov ? d + s.momentum * b : b;
    }
    parameter[i] = parameter[i] + s.negative_lr * d;
  }
}

template <typename T>
void sgd_update(const Tensor& parameter, const Tensor& buffer, const Tensor& grad,
                const SGDOptions& options, double lr, double weight_decay, bool first_update) {
  const SGDScalars<T> s{static_cast<T>(weight_decay),
                        static_cast<T>(options.momentum),
                        static_cast<T>(1.0 - options.dampening),
                        static_cast<T>(-lr),
                        weight_decay != 0.0,
                        options.momentum != 0.0,
                        first_update,
                        options.nesterov};
  T* p = parameter.data<T>();
  T* b = buffer.defined() ? buffer.data<T>() : nullptr;
  const T* g = grad.data<T>();
  const int64_t n = parameter.numel();
  const int64_t chunks = (n + kChunkElements - 1) / kChunkElements;
#pragma omp parallel for schedule(static) if (qt::worth_parallel(n, qt::WorkCost::light) && \
                                              chunks > 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t begin = chunk * kChunkElements;
    const int64_t length = std::min(n, begin + kChunkElements) - begin;
    sgd_update_chunk(p + begin, b ? b + begin : nullptr, g + begin, length, s);
  }
}

}  // namespace

SGD::SGD(std::vector<ParameterGroup> groups, SGDOptions options)
    : Optimizer(std::move(groups), "SGD"), options_(options) {
  QT_CHECK(std::isfinite(options.momentum) && options.momentum >= 0,
           "SGD: momentum must be finite and >= 0, got {}", options.momentum);
  QT_CHECK(std::isfinite(options.dampening), "SGD: dampening must be finite, got {}",
           options.dampening);
  QT_CHECK(!options.nesterov || (options.momentum > 0 && options.dampening == 0),
           "SGD: nesterov needs momentum > 0 and dampening 0 (got momentum {}, dampening {})",
           options.momentum, options.dampening);
  for (const ParameterGroup& group : groups_) buffers_.emplace_back(group.parameters.size());
}

void SGD::step(double lr) {
  QT_CHECK(std::isfinite(lr) && lr >= 0, "SGD::step: lr must be finite and >= 0, got {}", lr);
  for (size_t g = 0; g < groups_.size(); ++g) {
    const ParameterGroup& group = groups_[g];
    for (size_t i = 0; i < group.parameters.size(); ++i) {
      const Tensor& parameter = group.parameters[i];
      const Tensor grad_handle = parameter.grad();
      if (!grad_handle.defined()) continue;
      const Tensor grad = ops::contiguous(grad_handle);
      Tensor& buffer = buffers_[g][i];
      const bool first_update = !buffer.defined();
      if (options_.momentum != 0.0 && first_update)
        buffer = Tensor::empty(parameter.shape(), parameter.dtype());
      const double group_lr = lr * group.lr_scale;
      if (parameter.dtype() == DType::f32)
        sgd_update<float>(parameter, buffer, grad, options_, group_lr, group.weight_decay,
                          first_update);
      else
        sgd_update<double>(parameter, buffer, grad, options_, group_lr, group.weight_decay,
                           first_update);
    }
  }
}

const Tensor& SGD::momentum_buffer(const std::string& name) const {
  const auto [g, i] = locate_parameter(groups_, name, "SGD::momentum_buffer");
  return buffers_[g][i];
}

NamedTensors SGD::state_tensors() const {
  NamedTensors out;
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t i = 0; i < groups_[g].names.size(); ++i)
      if (buffers_[g][i].defined())
        out.emplace_back("momentum." + groups_[g].names[i], buffers_[g][i]);
  return out;
}

void SGD::load_state_tensors(const NamedTensors& state) {
  std::map<std::string, std::pair<size_t, size_t>> index_of;
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t i = 0; i < groups_[g].names.size(); ++i) index_of[groups_[g].names[i]] = {g, i};
  std::map<std::string, Tensor> found;
  std::vector<std::string> problems;
  const std::string prefix = "momentum.";
  for (const auto& [key, tensor] : state) {
    const std::string name = key.rfind(prefix, 0) == 0 ? key.substr(prefix.size()) : "";
    if (!index_of.count(name)) {
      problems.push_back(fmt::format("unexpected entry '{}'", key));
      continue;
    }
    if (found.count(name)) problems.push_back(fmt::format("duplicate entry '{}'", key));
    const auto [g, i] = index_of.at(name);
    const Tensor& parameter = groups_[g].parameters[i];
    if (!tensor.defined()) {
      problems.push_back(fmt::format("entry '{}' is undefined", key));
    } else if (tensor.shape() != parameter.shape() || tensor.dtype() != parameter.dtype()) {
      problems.push_back(fmt::format("'{}' is {} {}, the parameter is {} {}", key,
                                     dtype_name(tensor.dtype()), shape_str(tensor.shape()),
                                     dtype_name(parameter.dtype()), shape_str(parameter.shape())));
    }
    found[name] = tensor;
  }
  if (!found.empty() && options_.momentum == 0.0)
    problems.push_back("momentum buffers given but this SGD has momentum 0");
  if (!problems.empty())
    fail("SGD::load_state_tensors: {} problem(s): {}", problems.size(), fmt::join(problems, "; "));
  for (auto& group_buffers : buffers_)
    for (Tensor& b : group_buffers) b = Tensor();
  for (const auto& [name, tensor] : found) {
    const auto [g, i] = index_of.at(name);
    buffers_[g][i] = ops::clone(tensor);
  }
}

}  // namespace qt::optim

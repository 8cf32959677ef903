#include "optim/clip_grad.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "tensor/parallel_policy.h"
#include "tensor/view.h"

namespace qt::optim {

namespace {

constexpr int64_t kChunkElements = 1 << 14;  // elements per partial sum

// Sum of squares of one chunk in double: four interleaved accumulators (lane k takes i % 4 == k)
// so that the loop vectorizes, combined in a fixed order.
template <typename T>
double sum_of_squares_chunk(const T* __restrict data, int64_t n) {
  double lanes[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int k = 0; k < 4; ++k) {
      const double x = static_cast<double>(data[i + k]);
      lanes[k] += x * x;
    }
  for (; i < n; ++i) {
    const double x = static_cast<double>(data[i]);
    lanes[0] += x * x;
  }
  return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
}

// Sum of squares of one contiguous tensor: per-chunk partials (computed on any thread) added in
// chunk order.
template <typename T>
double sum_of_squares(const T* data, int64_t n) {
  const int64_t chunks = (n + kChunkElements - 1) / kChunkElements;
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
#pragma omp parallel for schedule(static) if (qt::worth_parallel(n, qt::WorkCost::light) && \
                                              chunks > 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t begin = chunk * kChunkElements;
    partial[chunk] =
        sum_of_squares_chunk(data + begin, std::min(n, begin + kChunkElements) - begin);
  }
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

template <typename T>
void scale_in_place(T* data, int64_t n, T factor) {
  const int64_t chunks = (n + kChunkElements - 1) / kChunkElements;
#pragma omp parallel for schedule(static) if (qt::worth_parallel(n, qt::WorkCost::light) && \
                                              chunks > 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    T* __restrict block = data + chunk * kChunkElements;
    const int64_t length = std::min(n, (chunk + 1) * kChunkElements) - chunk * kChunkElements;
    for (int64_t i = 0; i < length; ++i) block[i] *= factor;
  }
}

// The gradient of `parameter` as a dense tensor that IS its .grad (made contiguous and stored back
// if needed, so that in-place scaling reaches the gradient); undefined if there is none.
Tensor dense_grad(const Tensor& parameter, const char* op) {
  check_defined(parameter, op);
  Tensor grad = parameter.grad();
  if (!grad.defined()) return grad;
  check_floating(grad, op);
  if (!grad.is_contiguous()) {
    grad = ops::contiguous(grad);
    parameter.set_grad(grad);
  }
  return grad;
}

}  // namespace

double gradient_norm(const std::vector<Tensor>& parameters) {
  double total = 0;
  for (const Tensor& parameter : parameters) {
    const Tensor grad = dense_grad(parameter, "gradient_norm");
    if (!grad.defined()) continue;
    total += grad.dtype() == DType::f32 ? sum_of_squares(grad.data<float>(), grad.numel())
                                        : sum_of_squares(grad.data<double>(), grad.numel());
  }
  return std::sqrt(total);
}

void scale_gradients(const std::vector<Tensor>& parameters, double factor) {
  QT_CHECK(std::isfinite(factor), "scale_gradients: factor must be finite, got {}", factor);
  for (const Tensor& parameter : parameters) {
    const Tensor grad = dense_grad(parameter, "scale_gradients");
    if (!grad.defined()) continue;
    if (grad.dtype() == DType::f32)
      scale_in_place(grad.data<float>(), grad.numel(), static_cast<float>(factor));
    else
      scale_in_place(grad.data<double>(), grad.numel(), factor);
  }
}

double clip_grad_norm(const std::vector<Tensor>& parameters, double max_norm) {
  QT_CHECK(std::isfinite(max_norm) && max_norm > 0,
           "clip_grad_norm: max_norm must be finite and > 0, got {}", max_norm);
  const double norm = gradient_norm(parameters);
  if (!std::isfinite(norm)) return norm;  // the caller decides (see the header)
  const double scale = max_norm / (norm + 1e-6);
  if (scale < 1.0) scale_gradients(parameters, scale);
  return norm;
}

std::vector<Tensor> all_parameters(const std::vector<ParameterGroup>& groups) {
  std::vector<Tensor> out;
  for (const ParameterGroup& group : groups)
    out.insert(out.end(), group.parameters.begin(), group.parameters.end());
  return out;
}

}  // namespace qt::optim

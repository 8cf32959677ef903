// softmax, log_softmax and their backward passes along one axis.
//
// Every op works on rows: the axis is moved last and the tensor made contiguous (free when the axis
// already is the last one of a contiguous tensor, the common case in attention and classifiers),
// each row of length n is processed independently, and the result is moved back. Rows are split
// among OpenMP threads; each row is computed by one fixed loop, so the result does not depend on
// the number of threads. Row sums are accumulated in double; f32 exponentials use a vectorizable
// polynomial exp (exp_f32 below, within 1.5 ulp), f64 ones the library exp.
//
// Stability: with m = max_j x_j,
//   softmax(x)_i     = exp(x_i - m) / sum_j exp(x_j - m)        (every exp argument is <= 0)
//   log_softmax(x)_i = (x_i - m) - log(sum_j exp(x_j - m))       (the sum is >= 1: log is safe)
//
// Special rows (same as PyTorch): a row that is entirely -inf (fully masked) has m = -inf and
// x_i - m = -inf - (-inf) = NaN, so its softmax and log_softmax are NaN everywhere; a row holding
// +inf or NaN also gives NaN. Nothing crashes; callers that mask whole rows must handle the NaNs.
#include "tensor/softmax.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>

#include "tensor/parallel_policy.h"
#include "tensor/row_kernels.h"
#include "tensor/view.h"

namespace qt::ops {

namespace {

using namespace qt::row_kernels;

// ---------------------------------------------------------------------------------------------
// The row kernels. Each makes a few simple passes over the row (each one a vectorizable loop).

// softmax_row (row_kernels.h): y = exp(x - m) / sum exp(x - m).

template <typename T>
void log_softmax_row(const T* x, T* y, int64_t n) {
  const T m = row_max(x, n);
  for (int64_t i = 0; i < n; ++i) y[i] = exp_of(x[i] - m);  // scratch: the unnormalized softmax
  // log_softmax_i = (x_i - m) - log(total), in this order: x_i - m is small for the entries that
  // matter, so the result keeps full relative precision even for logits around 1e4 (forming
  // m + log(total) first would round it to the coarse spacing of floats near m).
  const T log_total = static_cast<T>(std::log(row_sum(y, static_cast<const T*>(nullptr), n)));
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - m) - log_total;
}

// softmax backward: dx_i = y_i * (dy_i - sum_j dy_j y_j)
template <typename T>
void softmax_backward_row(const T* dy, const T* y, T* dx, int64_t n) {
  const T dot = static_cast<T>(row_sum(dy, y, n));
  for (int64_t i = 0; i < n; ++i) dx[i] = y[i] * (dy[i] - dot);
}

// log_softmax backward: dx_i = dy_i - exp(y_i) * sum_j dy_j   (exp(y) is the softmax)
template <typename T>
void log_softmax_backward_row(const T* dy, const T* y, T* dx, int64_t n) {
  const T total = static_cast<T>(row_sum(dy, static_cast<const T*>(nullptr), n));
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] - exp_of(y[i]) * total;
}

// The axis-last permutation of a tensor of rank `rank` (other axes in order) and its inverse.
std::vector<int64_t> axis_last_order(int64_t rank, int64_t axis) {
  std::vector<int64_t> order;
  for (int64_t a = 0; a < rank; ++a)
    if (a != axis) order.push_back(a);
  order.push_back(axis);
  return order;
}

std::vector<int64_t> inverse_order(const std::vector<int64_t>& order) {
  std::vector<int64_t> inverse(order.size());
  for (size_t i = 0; i < order.size(); ++i) inverse[order[i]] = static_cast<int64_t>(i);
  return inverse;
}

// Runs `row_kernel(first_row, second_row, output_row, n)` over every row along `axis` of one or
// two same-shape tensors (second_row is null with one input) and returns the output with the
// inputs' shape, contiguous.
template <typename RowKernel>
Tensor map_rows(const std::vector<Tensor>& inputs, int64_t axis, RowKernel row_kernel) {
  const Tensor& first = inputs.front();
  const int64_t rank = first.dim();
  const bool axis_is_last = axis == rank - 1;
  const std::vector<int64_t> order = axis_last_order(rank, axis);
  std::vector<Tensor> rows_inputs;
  for (const Tensor& t : inputs)
    rows_inputs.push_back(contiguous(axis_is_last ? t : permute(t, order)));
  Tensor out = Tensor::empty(rows_inputs.front().shape(), first.dtype());
  const int64_t n = first.shape()[axis];  // rank >= 1 here: callers reshape rank-0 inputs
  const int64_t rows = n == 0 ? 0 : first.numel() / n;
  dispatch_dtype(first.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_floating_point_v<T>) {
      std::vector<const T*> in_data;
      for (const Tensor& t : rows_inputs) in_data.push_back(t.data<T>());
      T* out_data = out.data<T>();
#pragma omp parallel for schedule(static) if (qt::worth_parallel(rows * n, qt::WorkCost::heavy))
      for (int64_t row = 0; row < rows; ++row) {
        const int64_t start = row * n;
        const T* second = in_data.size() > 1 ? in_data[1] + start : nullptr;
        row_kernel(in_data[0] + start, second, out_data + start, n);
      }
    }
  });
  if (axis_is_last) return out;
  return contiguous(permute(out, inverse_order(order)));
}

// Common checks; returns the normalized axis. Rank-0 tensors are treated as one row of length 1.
int64_t check_softmax_input(const Tensor& x, int64_t axis, const char* op) {
  check_floating(x, op);
  if (x.dim() == 0) {
    QT_CHECK(axis == 0 || axis == -1, "{}: axis {} is out of range for a rank-0 tensor", op, axis);
    return 0;
  }
  return normalize_axis(axis, x.dim(), op);
}

void check_backward_inputs(const Tensor& grad, const Tensor& y, const char* op) {
  check_floating(grad, op);
  check_same_dtype(grad, y, op);
  QT_CHECK(grad.shape() == y.shape(), "{}: gradient shape {} differs from output shape {}", op,
           shape_str(grad.shape()), shape_str(y.shape()));
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t axis) {
  axis = check_softmax_input(x, axis, "softmax");
  if (x.dim() == 0) return reshape(softmax(reshape(x, {1}), 0), {});
  return map_rows({x}, axis, [](const auto* in, const auto*, auto* out, int64_t n) {
    softmax_row(in, out, n);
  });
}

Tensor log_softmax(const Tensor& x, int64_t axis) {
  axis = check_softmax_input(x, axis, "log_softmax");
  if (x.dim() == 0) return reshape(log_softmax(reshape(x, {1}), 0), {});
  return map_rows({x}, axis, [](const auto* in, const auto*, auto* out, int64_t n) {
    log_softmax_row(in, out, n);
  });
}

Tensor softmax_backward(const Tensor& grad, const Tensor& y, int64_t axis) {
  check_backward_inputs(grad, y, "softmax_backward");
  axis = check_softmax_input(y, axis, "softmax_backward");
  if (y.dim() == 0) {
    return reshape(softmax_backward(reshape(grad, {1}), reshape(y, {1}), 0), {});
  }
  return map_rows({grad, y}, axis, [](const auto* dy, const auto* out, auto* dx, int64_t n) {
    softmax_backward_row(dy, out, dx, n);
  });
}

Tensor log_softmax_backward(const Tensor& grad, const Tensor& y, int64_t axis) {
  check_backward_inputs(grad, y, "log_softmax_backward");
  axis = check_softmax_input(y, axis, "log_softmax_backward");
  if (y.dim() == 0) {
    return reshape(log_softmax_backward(reshape(grad, {1}), reshape(y, {1}), 0), {});
  }
  return map_rows({grad, y}, axis, [](const auto* dy, const auto* out, auto* dx, int64_t n) {
    log_softmax_backward_row(dy, out, dx, n);
  });
}

}  // namespace qt::ops

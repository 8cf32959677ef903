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

#include "tensor/view.h"

namespace qt::ops {

namespace {

constexpr int64_t kParallelThreshold = 1 << 14;  // elements; smaller tensors stay single-threaded
constexpr int kLanes = 8;  // independent accumulators in row reductions (vector lanes)

// ---------------------------------------------------------------------------------------------
// e^t for f32 without branches, so that a loop over it vectorizes (std::exp does not: it is an
// opaque library call, ~10x slower here). Cephes' expf scheme:
//   n = round(t / ln2),  r = t - n ln2  (|r| <= ln2/2; ln2 split in a high part with few mantissa
//   bits, so n * kLn2High is exact, and a low correction),
//   e^r ~ 1 + r + r^2 p(r)  (p of degree 5),   e^t = e^r * 2^n,
// with 2^n built directly in the exponent bits. The rounding of t / ln2 uses the "shifter" trick:
// adding 1.5 * 2^23 leaves round(t / ln2) (plus a bias) in the low mantissa bits. Measured against
// double-precision exp over [-86.98, 88.72]: at most 1.5 ulp, < 1 ulp except near the lower end.
// Edge cases: t < -86.98 (e^t < 2.1e-38, where 2^(n-1) would stop being a normal float) and -inf
// give 0; t > 88.8 and +inf give +inf; NaN gives NaN. The clamps are bit-mask selects on the
// integer patterns, never float compares inside a branch (which would block vectorization).
uint32_t bits_of(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}
float float_of(uint32_t b) {
  float v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}
// All ones when `condition` holds, else 0: a lane mask for bitwise selects.
uint32_t mask_if(bool condition) {
  return 0u - static_cast<uint32_t>(condition);
}

float exp_f32(float t) {
  constexpr float kLowest = -86.98f;  // below: flushed to 0
  constexpr float kHighest =
      88.8f;  // above ln(FLT_MAX) = 88.72: clamped, the product overflows to inf
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2High = 0.693359375f;
  constexpr float kLn2Low = -2.12194440e-4f;
  constexpr float kShifter = 12582912.0f + 126.0f;  // 1.5 * 2^23, plus the exponent bias 127 - 1
  const uint32_t t_bits = bits_of(t);
  // Comparisons on the bit patterns: negative floats grow as unsigned integers with their
  // magnitude up to -inf (0xFF800000); positive ones up to +inf (0x7F800000); NaNs lie beyond.
  const uint32_t too_low = mask_if(t_bits > bits_of(kLowest)) & mask_if(t_bits <= 0xFF800000u);
  const uint32_t too_high = mask_if(t_bits > bits_of(kHighest)) & mask_if(t_bits <= 0x7F800000u);
  const float clamped = float_of((t_bits & ~(too_low | too_high)) | (bits_of(kLowest) & too_low) |
                                 (bits_of(kHighest) & too_high));
  const float shifted = clamped * kLog2e + kShifter;
  const float n = shifted - kShifter;
  const float r = (clamped - n * kLn2High) - n * kLn2Low;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float exp_r = p * (r * r) + r + 1.0f;
  // The low 9 mantissa bits of `shifted` hold n + 126: moved into the exponent field they make
  // 2^(n-1). (n - 1 rather than n keeps n = 128, i.e. t up to ln(FLT_MAX), representable.)
  const float half_scale = float_of(bits_of(shifted) << 23);
  return float_of(bits_of(exp_r * half_scale * 2.0f) & ~too_low);
}

// f64 is the reference precision: the library exp, correctly rounded or nearly so.
double exp_of(double t) {
  return std::exp(t);
}
float exp_of(float t) {
  return exp_f32(t);
}

// ---------------------------------------------------------------------------------------------
// Row reductions with kLanes independent accumulators (lane k takes i % kLanes == k), combined in a
// fixed order, so that the compiler can keep them in vector registers.

// Largest element (-inf for an empty or all -inf row). NaNs are not searched for: a NaN anywhere
// makes the exp sum NaN, which poisons the whole row anyway.
template <typename T>
T row_max(const T* x, int64_t n) {
  T lanes[kLanes];
  for (T& lane : lanes) lane = -std::numeric_limits<T>::infinity();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int k = 0; k < kLanes; ++k) lanes[k] = x[i + k] > lanes[k] ? x[i + k] : lanes[k];
  for (; i < n; ++i) lanes[0] = x[i] > lanes[0] ? x[i] : lanes[0];
  T m = lanes[0];
  for (int k = 1; k < kLanes; ++k) m = lanes[k] > m ? lanes[k] : m;
  return m;
}

// sum_i a_i (b == nullptr) or sum_i a_i b_i, accumulated in double.
template <typename T>
double row_sum(const T* a, const T* b, int64_t n) {
  double lanes[kLanes] = {};
  int64_t i = 0;
  if (b == nullptr) {
    for (; i + kLanes <= n; i += kLanes)
      for (int k = 0; k < kLanes; ++k) lanes[k] += static_cast<double>(a[i + k]);
    for (; i < n; ++i) lanes[0] += static_cast<double>(a[i]);
  } else {
    for (; i + kLanes <= n; i += kLanes)
      for (int k = 0; k < kLanes; ++k)
        lanes[k] += static_cast<double>(a[i + k]) * static_cast<double>(b[i + k]);
    for (; i < n; ++i) lanes[0] += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  }
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
         ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

// ---------------------------------------------------------------------------------------------
// The row kernels. Each makes a few simple passes over the row (each one a vectorizable loop).

template <typename T>
void softmax_row(const T* x, T* y, int64_t n) {
  const T m = row_max(x, n);
  for (int64_t i = 0; i < n; ++i) y[i] = exp_of(x[i] - m);
  const T inverse = static_cast<T>(1.0 / row_sum(y, static_cast<const T*>(nullptr), n));
  for (int64_t i = 0; i < n; ++i) y[i] *= inverse;
}

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
#pragma omp parallel for schedule(static) if (rows * n > kParallelThreshold)
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

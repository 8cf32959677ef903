// Fused LayerNorm over the last dimension, forward and hand-written backward (see nn/layer_norm.h).
//
// x [..., D] is seen as R rows of length D. Per row r:
//   mu    = (1/D) sum_i x_i                          (accumulated in double)
//   var   = (1/D) sum_i (x_i - mu)^2                 (second pass over the row, in double: no
//                                                     cancellation even when |mu| >> std)
//   rstd  = 1 / sqrt(var + eps)
//   xhat  = (x_i - mu) * rstd,   y_i = gamma_i * xhat_i + beta_i
// mu and rstd are saved per row (f64) for the backward pass, which recomputes xhat from x.
//
// Accuracy of x - mu in f32 when the offset is large (x ~ 1e4, std ~ 1): mu is carried as two
// floats, mu = mu_high + mu_low (mu_high = float(mu), mu_low = float(mu - mu_high)), and
//   x - mu = (x - mu_high) - mu_low.
// A float subtraction is correctly rounded, so (x - mu_high) is accurate to half an ulp of the
// *centered* value, not of x; a single float(mu) would shift the whole row by up to half an ulp of
// 1e4 (~5e-4). The loops stay in float and vectorize. In f64 mu_low is 0.
//
// Backward, with g_i = dy_i * gamma_i:
//   dx_i   = rstd * (g_i - mean(g) - xhat_i * mean(g * xhat))
//   dgamma = sum over rows of dy * xhat,   dbeta = sum over rows of dy.
// Rows are processed in fixed chunks of kChunkRows; each chunk adds its rows' dgamma/dbeta into
// its own partial sums, and the partials are added in chunk order afterwards. The chunking does not
// depend on the thread count, so the result is bit-identical with any number of threads.
#include "nn/layer_norm.h"

#include "nn/activation_tap.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "autograd/functions.h"
#include "tensor/parallel_policy.h"
#include "tensor/row_kernels.h"
#include "tensor/threads.h"

namespace qt::nn {

namespace {

constexpr int64_t kChunkRows = 32;
using row_kernels::lane_sum;
using row_kernels::LaneSum;

// sum_i a_i in double (the lane sum of tensor/row_kernels.h).
template <typename T>
double row_sum(const T* a, int64_t n) {
  return lane_sum(n, [a](int64_t i) { return static_cast<double>(a[i]); });
}

// sum_i (a_i - center)^2 in double.
template <typename T>
double row_squared_deviation(const T* a, int64_t n, double center) {
  return lane_sum(n, [a, center](int64_t i) {
    const double d = static_cast<double>(a[i]) - center;
    return d * d;
  });
}

// The row mean split into a high part in T and the low remainder (see the file comment).
template <typename T>
struct SplitMean {
  T high, low;
  explicit SplitMean(double mean)
      : high(static_cast<T>(mean)), low(static_cast<T>(mean - static_cast<double>(high))) {}
};

template <typename T>
void forward_rows(const T* x, const T* gamma, const T* beta, T* y, double* mean, double* rstd,
                  int64_t rows, int64_t dim, double eps) {
#pragma omp parallel for schedule(static) if (qt::worth_parallel(rows * dim, qt::WorkCost::heavy))
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = x + r * dim;
    T* out = y + r * dim;
    const double mu = row_sum(row, dim) / static_cast<double>(dim);
    const double variance = row_squared_deviation(row, dim, mu) / static_cast<double>(dim);
    const double inv_std = 1.0 / std::sqrt(variance + eps);
    mean[r] = mu;
    rstd[r] = inv_std;
    const SplitMean<T> m(mu);
    const T s = static_cast<T>(inv_std);
    for (int64_t i = 0; i < dim; ++i) out[i] = ((row[i] - m.high) - m.low) * s * gamma[i] + beta[i];
  }
}

// dx for all rows and, when wanted, the dgamma/dbeta partials of each fixed chunk of rows.
template <typename T>
void backward_rows(const T* dy, const T* x, const T* gamma, const double* mean, const double* rstd,
                   int64_t rows, int64_t dim, T* dx, T* dgamma_partials, T* dbeta_partials) {
  const int64_t chunks = (rows + kChunkRows - 1) / kChunkRows;
#pragma omp parallel if (qt::worth_parallel(rows * dim, qt::WorkCost::heavy))
  {
    std::vector<T> g(static_cast<size_t>(dim)), xhat(static_cast<size_t>(dim));  // per thread
#pragma omp for schedule(static)
    for (int64_t c = 0; c < chunks; ++c) {
      T* dgamma = dgamma_partials ? dgamma_partials + c * dim : nullptr;
      T* dbeta = dbeta_partials ? dbeta_partials + c * dim : nullptr;
      const int64_t end = std::min(rows, (c + 1) * kChunkRows);
      for (int64_t r = c * kChunkRows; r < end; ++r) {
        const T* dy_row = dy + r * dim;
        const T* x_row = x + r * dim;
        const SplitMean<T> m(mean[r]);
        const T s = static_cast<T>(rstd[r]);
        for (int64_t i = 0; i < dim; ++i) {
          xhat[i] = ((x_row[i] - m.high) - m.low) * s;
          g[i] = dy_row[i] * gamma[i];
        }
        if (dgamma)
          for (int64_t i = 0; i < dim; ++i) dgamma[i] += dy_row[i] * xhat[i];
        if (dbeta)
          for (int64_t i = 0; i < dim; ++i) dbeta[i] += dy_row[i];
        if (dx == nullptr) continue;
        // mean(g) and mean(g * xhat), accumulated in double with fixed lanes (combined in lane
        // order: LaneSum::total_in_lane_order).
        LaneSum sum_g, sum_gx;
        sum_g.add(dim, [&](int64_t i) { return static_cast<double>(g[i]); });
        sum_gx.add(dim, [&](int64_t i) {
          return static_cast<double>(g[i]) * static_cast<double>(xhat[i]);
        });
        const double total_g = sum_g.total_in_lane_order();
        const double total_gx = sum_gx.total_in_lane_order();
        const T mean_g = static_cast<T>(total_g / static_cast<double>(dim));
        const T mean_gx = static_cast<T>(total_gx / static_cast<double>(dim));
        T* dx_row = dx + r * dim;
        for (int64_t j = 0; j < dim; ++j) dx_row[j] = s * (g[j] - mean_g - xhat[j] * mean_gx);
      }
    }
  }
}

// sum over chunks of partials[c, :], in chunk order.
template <typename T>
Tensor combine_partials(const std::vector<T>& partials, int64_t chunks, int64_t dim, DType dtype) {
  Tensor out = Tensor::empty({dim}, dtype);
  T* result = out.data<T>();
  std::fill(result, result + dim, T(0));
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t i = 0; i < dim; ++i) result[i] += partials[c * dim + i];
  return out;
}

void check_layer_norm_inputs(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  check_defined(x, "layer_norm");
  check_defined(gamma, "layer_norm");
  check_defined(beta, "layer_norm");
  check_floating(x, "layer_norm");
  check_same_dtype(x, gamma, "layer_norm");
  check_same_dtype(x, beta, "layer_norm");
  QT_CHECK(x.dim() >= 1 && x.shape().back() > 0, "layer_norm: input {} needs a non-empty last dim",
           shape_str(x.shape()));
  const int64_t dim = x.shape().back();
  QT_CHECK(gamma.shape() == Shape{dim} && beta.shape() == Shape{dim},
           "layer_norm: weight {} and bias {} must both be [{}] for input {}",
           shape_str(gamma.shape()), shape_str(beta.shape()), dim, shape_str(x.shape()));
  QT_CHECK(eps > 0 && std::isfinite(eps), "layer_norm: eps = {} must be positive and finite", eps);
}

}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  check_layer_norm_inputs(x, gamma, beta, eps);
  num_threads();  // applies the thread setting before the first parallel region
  const int64_t dim = x.shape().back(), rows = x.numel() / dim;
  const Tensor input = ops::contiguous(x.detach());
  const Tensor weight = ops::contiguous(gamma.detach()), shift = ops::contiguous(beta.detach());
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  Tensor mean = Tensor::empty({rows}, DType::f64), rstd = Tensor::empty({rows}, DType::f64);
  dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_floating_point_v<T>)
      forward_rows<T>(input.data<T>(), weight.data<T>(), shift.data<T>(), y.data<T>(),
                      mean.data<double>(), rstd.data<double>(), rows, dim, eps);
  });
  if (!any_requires_grad({x, gamma, beta})) return y;

  return record(y, "layer_norm", {x, gamma, beta},
                [input, weight, mean, rstd, rows, dim](
                    const Tensor& grad, const std::vector<bool>& needs) -> std::vector<Tensor> {
                  const Tensor dy = ops::contiguous(grad);
                  std::vector<Tensor> grads(3);
                  dispatch_dtype(dy.dtype(), [&](auto tag) {
                    using T = decltype(tag);
                    if constexpr (std::is_floating_point_v<T>) {
                      const int64_t chunks = (rows + kChunkRows - 1) / kChunkRows;
                      std::vector<T> dgamma, dbeta;
                      if (needs[1]) dgamma.assign(static_cast<size_t>(chunks * dim), T(0));
                      if (needs[2]) dbeta.assign(static_cast<size_t>(chunks * dim), T(0));
                      if (needs[0]) grads[0] = Tensor::empty(input.shape(), dy.dtype());
                      backward_rows<T>(
                          dy.data<T>(), input.data<T>(), weight.data<T>(), mean.data<double>(),
                          rstd.data<double>(), rows, dim, needs[0] ? grads[0].data<T>() : nullptr,
                          needs[1] ? dgamma.data() : nullptr, needs[2] ? dbeta.data() : nullptr);
                      if (needs[1]) grads[1] = combine_partials(dgamma, chunks, dim, dy.dtype());
                      if (needs[2]) grads[2] = combine_partials(dbeta, chunks, dim, dy.dtype());
                    }
                  });
                  return grads;
                });
}

LayerNorm::LayerNorm(int64_t dim, double eps) : dim(dim), eps(eps) {
  QT_CHECK(dim > 0, "LayerNorm: dim must be positive, got {}", dim);
  QT_CHECK(eps > 0 && std::isfinite(eps), "LayerNorm: eps = {} must be positive and finite", eps);
  weight = register_parameter("weight", ops::ones({dim}));
  bias = register_parameter("bias", ops::zeros({dim}));
}

Tensor LayerNorm::forward(const Tensor& x) const {
  return tap(*this, "output", layer_norm(x, weight, bias, eps));
}

}  // namespace qt::nn

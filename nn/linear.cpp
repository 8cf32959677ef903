// Linear layer as one fused differentiable op (see nn/linear.h).
//
// The leading dimensions of x are flattened into rows: x is an [R, in] matrix (R = product of the
// leading sizes), W is [out, in], and
//
//   forward:   Y[R, out]  = X W^T + 1 b^T        one GEMM with op(B) = W^T (Trans::yes on W)
//   backward:  dX[R, in]  = dY W                 one GEMM
//              dW[out,in] = dY^T X               one GEMM: the sum over all R rows is its K loop
//              db[out]    = sum_r dY[r, :]       column sums, fixed row chunks (below)
//
// The GEMMs run directly on the tensors' buffers (OpenBLAS sgemm for f32, dgemm for f64 so that
// gradient checks can run in double); a contiguous x is never copied. The bias is written into Y
// first and the GEMM accumulates onto it (beta = 1), so adding it costs no extra pass over Y.
//
// Determinism of db: rows are cut into fixed chunks of kBiasChunkRows (independent of the thread
// count); each chunk's column sums are computed by one thread in row order, then the chunk partials
// are added in chunk order. The result is bit-identical with any number of threads.
#include "nn/linear.h"

#include "nn/activation_tap.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "autograd/functions.h"
#include "tensor/blas/gemm.h"
#include "tensor/parallel_policy.h"
#include "tensor/threads.h"

namespace qt::nn {

namespace {

constexpr int64_t kBiasChunkRows = 256;

using blas::Trans;

// C = alpha op(A) op(B) + beta C in the tensor's precision.
void gemm(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  blas::sgemm(trans_a, trans_b, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}
void gemm(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, const double* A,
          int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  blas::dgemm(trans_a, trans_b, M, N, K, 1.0, A, lda, B, ldb, beta, C, ldc);
}

// The number of rows R when x [..., in] is seen as an [R, in] matrix.
int64_t row_count(const Tensor& x) {
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) rows *= x.shape()[d];
  return rows;
}

void check_linear_inputs(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_defined(x, "linear");
  check_defined(weight, "linear");
  check_floating(x, "linear");
  check_same_dtype(x, weight, "linear");
  QT_CHECK(weight.dim() == 2, "linear: weight must be [out, in], got shape {}",
           shape_str(weight.shape()));
  QT_CHECK(x.dim() >= 1 && x.shape().back() == weight.shape()[1],
           "linear: input {} does not match weight {} (the last dim of the input must be in = {})",
           shape_str(x.shape()), shape_str(weight.shape()), weight.shape()[1]);
  if (bias.defined()) {
    check_same_dtype(x, bias, "linear");
    QT_CHECK(bias.dim() == 1 && bias.shape()[0] == weight.shape()[0],
             "linear: bias {} does not match weight {} (expected [{}])", shape_str(bias.shape()),
             shape_str(weight.shape()), weight.shape()[0]);
  }
}

// Y = X W^T (+ b) for X [rows, in] and W [out, in], both contiguous.
template <typename T>
Tensor linear_forward(const Tensor& x2d, const Tensor& weight, const Tensor& bias) {
  const int64_t rows = x2d.shape()[0], in = weight.shape()[1], out = weight.shape()[0];
  Tensor y = Tensor::empty({rows, out}, x2d.dtype());
  T* y_data = y.data<T>();
  T beta = 0;
  if (bias.defined()) {
    const Tensor b = ops::contiguous(bias);
    const T* b_data = b.data<T>();
#pragma omp parallel for schedule( \
    static) if (qt::worth_parallel(rows * out, qt::WorkCost::standard))
    for (int64_t r = 0; r < rows; ++r) std::copy(b_data, b_data + out, y_data + r * out);
    beta = 1;
  } else if (in == 0) {
    std::fill(y_data, y_data + rows * out, T(0));  // an empty sum; the GEMM is skipped
  }
  if (in > 0)
    gemm(Trans::no, Trans::yes, rows, out, in, x2d.data<T>(), in, weight.data<T>(), in, beta,
         y_data, out);
  return y;
}

// db[j] = sum_r dY[r, j] with fixed row chunks combined in chunk order (see the file comment).
template <typename T>
Tensor bias_gradient(const T* dy, int64_t rows, int64_t out, DType dtype) {
  const int64_t chunks = std::max<int64_t>(1, (rows + kBiasChunkRows - 1) / kBiasChunkRows);
  std::vector<T> partials(static_cast<size_t>(chunks * out), T(0));
#pragma omp parallel for schedule( \
    static) if (qt::worth_parallel(rows * out, qt::WorkCost::standard))
  for (int64_t c = 0; c < chunks; ++c) {
    T* partial = partials.data() + c * out;
    const int64_t end = std::min(rows, (c + 1) * kBiasChunkRows);
    for (int64_t r = c * kBiasChunkRows; r < end; ++r) {
      const T* row = dy + r * out;
      for (int64_t j = 0; j < out; ++j) partial[j] += row[j];
    }
  }
  Tensor db = Tensor::empty({out}, dtype);
  T* result = db.data<T>();
  std::copy(partials.begin(), partials.begin() + out, result);
  for (int64_t c = 1; c < chunks; ++c) {
    const T* partial = partials.data() + c * out;
    for (int64_t j = 0; j < out; ++j) result[j] += partial[j];
  }
  return db;
}

// The three gradients from dY [rows, out] (contiguous); each is computed only when needed.
template <typename T>
std::vector<Tensor> linear_backward(const Tensor& dy2d, const Tensor& x2d, const Tensor& weight,
                                    const Shape& x_shape, const std::vector<bool>& needs) {
  const int64_t rows = dy2d.shape()[0], out = dy2d.shape()[1];
  const int64_t in = x_shape.back();
  const T* dy = dy2d.data<T>();
  std::vector<Tensor> grads(3);
  if (needs[0]) {
    // dX[rows, in] = dY[rows, out] W[out, in]
    Tensor dx = Tensor::empty(x_shape, dy2d.dtype());
    if (out > 0) {
      gemm(Trans::no, Trans::no, rows, in, out, dy, out, weight.data<T>(), in, T(0), dx.data<T>(),
           in);
    } else {
      ops::fill_(dx, 0.0);
    }
    grads[0] = dx;
  }
  if (needs[1]) {
    // dW[out, in] = dY^T X: op(A) = dY^T with dY stored [rows, out] (lda = out).
    Tensor dw = Tensor::empty({out, in}, dy2d.dtype());
    if (rows > 0) {
      gemm(Trans::yes, Trans::no, out, in, rows, dy, out, x2d.data<T>(), in, T(0), dw.data<T>(),
           in);
    } else {
      ops::fill_(dw, 0.0);
    }
    grads[1] = dw;
  }
  if (needs[2]) grads[2] = bias_gradient<T>(dy, rows, out, dy2d.dtype());
  return grads;
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_linear_inputs(x, weight, bias);
  num_threads();  // applies the thread setting before the first parallel region
  const int64_t rows = row_count(x), in = weight.shape()[1], out = weight.shape()[0];
  // Free views when x and W are contiguous (the usual case); a copy otherwise.
  const Tensor x2d = ops::view(ops::contiguous(x.detach()), {rows, in});
  const Tensor w = ops::contiguous(weight.detach());

  Tensor y2d = dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_floating_point_v<T>) {
      return linear_forward<T>(x2d, w, bias);
    } else {
      return Tensor();  // unreachable: check_floating above
    }
  });
  Shape y_shape = x.shape();
  y_shape.back() = out;
  Tensor y = ops::view(y2d, y_shape);
  if (!any_requires_grad({x, weight, bias})) return y;

  // dX needs only W, dW only X: keep each one only when the other side wants a gradient.
  const Tensor x_saved = weight.requires_grad() ? x2d : Tensor();
  const Tensor w_saved = x.requires_grad() ? w : Tensor();
  return record(y, "linear", {x, weight, bias},
                [x_saved, w_saved, x_shape = x.shape(), rows, out](
                    const Tensor& grad, const std::vector<bool>& needs) -> std::vector<Tensor> {
                  const Tensor dy2d = ops::view(ops::contiguous(grad), {rows, out});
                  return dispatch_dtype(dy2d.dtype(), [&](auto tag) -> std::vector<Tensor> {
                    using T = decltype(tag);
                    if constexpr (std::is_floating_point_v<T>) {
                      return linear_backward<T>(dy2d, x_saved, w_saved, x_shape, needs);
                    } else {
                      return {};
                    }
                  });
                });
}

Linear::Linear(int64_t in_features, int64_t out_features, bool bias, InitRng& rng)
    : in_features(in_features), out_features(out_features) {
  QT_CHECK(in_features > 0 && out_features > 0,
           "Linear: in_features and out_features must be positive, got {} and {}", in_features,
           out_features);
  weight =
      register_parameter("weight", rng.linear_default({out_features, in_features}, in_features));
  if (bias)
    this->bias = register_parameter("bias", rng.linear_default({out_features}, in_features));
}

Tensor Linear::forward(const Tensor& x) const {
  return tap(*this, "output", linear(x, weight, bias));
}

}  // namespace qt::nn

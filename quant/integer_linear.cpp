// Integer linear layers and attention matmuls (see the header for the offset algebra and bounds).
#include "quant/integer_linear.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "tensor/blas/gemm.h"
#include "tensor/error.h"
#include "tensor/parallel_policy.h"

namespace qt::quant {
namespace {

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
constexpr int64_t kInt32Min = std::numeric_limits<int32_t>::min();
// Q K^T and P V: |acc| <= 255 * 255 * K must fit int32.
constexpr int64_t kMaxMatmulK = kInt32Max / (255 * 255);

int32_t checked_int32(int64_t x, const char* what, const char* op) {
  QT_CHECK(x >= kInt32Min && x <= kInt32Max, "{}: {} = {} does not fit int32", op, what, x);
  return static_cast<int32_t>(x);
}

// Checks the call and returns the input row stride (0 -> in_features).
int64_t check_rows(const IntegerLinear& layer, const void* x, int64_t rows, const void* y,
                   int64_t x_stride, const char* op) {
  QT_CHECK(rows >= 0, "{}: negative row count {}", op, rows);
  const int64_t stride = x_stride == 0 ? layer.in_features : x_stride;
  QT_CHECK(stride >= layer.in_features, "{}: input row stride {} < in_features {}", op, stride,
           layer.in_features);
  QT_CHECK(static_cast<int64_t>(layer.weight.size()) == layer.out_features * layer.in_features &&
               static_cast<int64_t>(layer.output.size()) == layer.out_features &&
               static_cast<int64_t>(layer.folded_bias.size()) == layer.out_features,
           "{}: the layer is not built by make_integer_linear (weight {} for [{}, {}])", op,
           layer.weight.size(), layer.out_features, layer.in_features);
  if (rows > 0) QT_CHECK(x != nullptr && y != nullptr, "{}: null input or output", op);
  return stride;
}

}  // namespace

int32_t quantize_bias(double bias, double input_scale, double weight_scale) {
  QT_CHECK(input_scale > 0 && weight_scale > 0 && std::isfinite(bias),
           "quantize_bias: need positive scales and a finite bias (bias {}, S_a {}, S_w {})", bias,
           input_scale, weight_scale);
  const double q = std::nearbyint(bias / (input_scale * weight_scale));
  QT_CHECK(std::fabs(q) <= static_cast<double>(kInt32Max),
           "quantize_bias: bias {} at scale {} is {} codes, beyond int32", bias,
           input_scale * weight_scale, q);
  return static_cast<int32_t>(q);
}

IntegerLinear make_integer_linear(const int8_t* weight, int64_t out_features, int64_t in_features,
                                  const int32_t* bias, double input_scale, int32_t input_zero_point,
                                  const std::vector<double>& weight_scales, double output_scale,
                                  int32_t output_zero_point, Requant mode) {
  const char* op = "make_integer_linear";
  QT_CHECK(out_features > 0 && in_features > 0, "{}: empty layer [{}, {}]", op, out_features,
           in_features);
  QT_CHECK(weight != nullptr, "{}: null weight", op);
  QT_CHECK(in_features < 65793,
           "{}: in_features = {} exceeds the int8 GEMM's limit (K < 65793, so that 255 * 128 * K "
           "fits int32)",
           op, in_features);
  const auto scales = static_cast<int64_t>(weight_scales.size());
  QT_CHECK(scales == 1 || scales == out_features,
           "{}: {} weight scales for {} output channels (need 1 per tensor or {} per channel)", op,
           scales, out_features, out_features);
  QT_CHECK(input_scale > 0 && output_scale > 0, "{}: scales must be positive (S_a {}, S_o {})", op,
           input_scale, output_scale);
  check_u8_zero_point(input_zero_point, "input", op);
  check_u8_zero_point(output_zero_point, "output", op);
  IntegerLinear layer;
  layer.in_features = in_features;
  layer.out_features = out_features;
  layer.input_zero_point = input_zero_point;
  layer.weight.assign(weight, weight + out_features * in_features);
  layer.bias.assign(out_features, 0);
  if (bias != nullptr) layer.bias.assign(bias, bias + out_features);
  layer.folded_bias.resize(out_features);
  layer.output.resize(out_features);
  for (int64_t n = 0; n < out_features; ++n) {
    const double s_w = weight_scales[scales == 1 ? 0 : n];
    QT_CHECK(s_w > 0, "{}: weight scale {} of channel {} is not positive", op, s_w, n);
    int64_t row_sum = 0;
    for (int64_t k = 0; k < in_features; ++k) row_sum += layer.weight[n * in_features + k];
    const int64_t bound = 255 * 128 * in_features + std::llabs(int64_t{layer.bias[n]});
    QT_CHECK(bound <= kInt32Max,
             "{}: channel {}: the accumulator bound 255 * 128 * K + |bias| = {} exceeds int32 "
             "(K = {}, bias {})",
             op, n, bound, in_features, layer.bias[n]);
    layer.folded_bias[n] =
        checked_int32(layer.bias[n] - int64_t{input_zero_point} * row_sum, "folded bias", op);
    layer.output[n] = make_requantizer(input_scale * s_w / output_scale, output_zero_point, kU8Min,
                                       kU8Max, mode, op);
  }
  return layer;
}

void integer_linear_accumulators(const IntegerLinear& layer, const uint8_t* x, int64_t rows,
                                 int32_t* acc, int64_t x_stride) {
  const int64_t lda = check_rows(layer, x, rows, acc, x_stride, "integer_linear");
  if (rows == 0) return;
  const int64_t N = layer.out_features, K = layer.in_features;
  blas::gemm_u8s8s32(rows, N, K, x, lda, layer.weight.data(), K, acc, N);
  // acc = sum a w + folded_bias = sum (a - Z_a) w + bias: exact (bounded at construction).
#pragma omp parallel for schedule(static) if (worth_parallel(rows * N, WorkCost::light))
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t n = 0; n < N; ++n) acc[m * N + n] += layer.folded_bias[n];
}

namespace {
template <bool kRelu>
void linear_forward(const IntegerLinear& layer, const uint8_t* x, int64_t rows, uint8_t* y,
                    int64_t x_stride) {
  const int64_t N = layer.out_features;
  std::vector<int32_t> acc(static_cast<size_t>(std::max<int64_t>(rows, 0) * N));  // once per call
  integer_linear_accumulators(layer, x, rows, acc.data(), x_stride);
  requantize_columns(acc.data(), rows, N, layer.output.data(), kRelu, y);
}
}  // namespace

void integer_linear(const IntegerLinear& layer, const uint8_t* x, int64_t rows, uint8_t* y,
                    int64_t x_stride) {
  linear_forward<false>(layer, x, rows, y, x_stride);
}

void integer_linear_relu(const IntegerLinear& layer, const uint8_t* x, int64_t rows, uint8_t* y,
                         int64_t x_stride) {
  linear_forward<true>(layer, x, rows, y, x_stride);
}

void integer_linear_ref(const IntegerLinear& layer, const uint8_t* x, int64_t rows, uint8_t* y,
                        int64_t x_stride) {
  const int64_t lda = check_rows(layer, x, rows, y, x_stride, "integer_linear_ref");
  const int64_t N = layer.out_features, K = layer.in_features;
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t n = 0; n < N; ++n) {
      int64_t acc = layer.bias[n];
      for (int64_t k = 0; k < K; ++k)
        acc += (int64_t{x[m * lda + k]} - layer.input_zero_point) * layer.weight[n * K + k];
      y[m * N + n] = static_cast<uint8_t>(
          layer.output[n](checked_int32(acc, "accumulator", "integer_linear_ref")));
    }
}

namespace {
void check_matmul(int64_t batch, int64_t M, int64_t N, int64_t K, const U8Matrix& A,
                  const U8Matrix& B, BLayout layout, const int32_t* C, const char* op) {
  QT_CHECK(batch >= 0 && M >= 0 && N >= 0 && K >= 0,
           "{}: negative size (batch {}, M {}, N {}, K {})", op, batch, M, N, K);
  QT_CHECK(K <= kMaxMatmulK,
           "{}: K = {} is too large: |sum (a - Z_a)(b - Z_b)| <= 255^2 K must fit int32 (K <= {})",
           op, K, kMaxMatmulK);
  check_u8_zero_point(A.zero_point, "A", op);
  check_u8_zero_point(B.zero_point, "B", op);
  QT_CHECK(A.ld >= K, "{}: A's leading dimension {} < K = {}", op, A.ld, K);
  QT_CHECK(B.ld >= (layout == BLayout::nk ? K : N), "{}: B's leading dimension {} < {} ({})", op,
           B.ld, layout == BLayout::nk ? K : N, layout == BLayout::nk ? "[N, K]" : "[K, N]");
  if (batch > 0 && M > 0 && N > 0) {
    QT_CHECK(C != nullptr, "{}: null output", op);
    if (K > 0) QT_CHECK(A.data != nullptr && B.data != nullptr, "{}: null operand", op);
  }
}

uint8_t b_element(const U8Matrix& B, BLayout layout, int64_t batch, int64_t n, int64_t k) {
  return B.data[batch * B.batch_stride + (layout == BLayout::nk ? n * B.ld + k : k * B.ld + n)];
}
}  // namespace

void integer_matmul_u8u8(int64_t batch, int64_t M, int64_t N, int64_t K, const U8Matrix& A,
                         const U8Matrix& B, BLayout b_layout, int32_t* C) {
  check_matmul(batch, M, N, K, A, B, b_layout, C, "integer_matmul_u8u8");
  if (batch == 0 || M == 0 || N == 0) return;
  if (K == 0) {  // an empty sum
    std::fill(C, C + batch * M * N, 0);
    return;
  }
  // Scratch, once per call: B - 128 as s8 in [N, K] layout, and the row sums.
  std::vector<int8_t> b_shifted(static_cast<size_t>(N * std::max<int64_t>(K, 1)));
  std::vector<int64_t> a_sum(M), b_sum(N);
  const int64_t za = A.zero_point, zb = B.zero_point;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t n = 0; n < N; ++n) {
      int64_t sum = 0;
      for (int64_t k = 0; k < K; ++k) {
        const uint8_t v = b_element(B, b_layout, b, n, k);
        sum += v;
        b_shifted[n * K + k] = static_cast<int8_t>(int32_t{v} - 128);
      }
      b_sum[n] = sum;
    }
    const uint8_t* a = A.data + b * A.batch_stride;
    for (int64_t m = 0; m < M; ++m) {
      int64_t sum = 0;
      for (int64_t k = 0; k < K; ++k) sum += a[m * A.ld + k];
      a_sum[m] = sum;
    }
    int32_t* c = C + b * M * N;
    blas::gemm_u8s8s32(M, N, K, a, A.ld, b_shifted.data(), std::max<int64_t>(K, 1), c, N);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        // Exact in int64; the total is sum (a - Z_a)(b - Z_b), inside int32 by the K bound.
        const int64_t acc = c[m * N + n] + (128 - zb) * a_sum[m] - za * b_sum[n] + K * za * zb;
        c[m * N + n] = static_cast<int32_t>(acc);
      }
  }
}

void integer_matmul_u8u8_ref(int64_t batch, int64_t M, int64_t N, int64_t K, const U8Matrix& A,
                             const U8Matrix& B, BLayout b_layout, int32_t* C) {
  check_matmul(batch, M, N, K, A, B, b_layout, C, "integer_matmul_u8u8_ref");
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        int64_t acc = 0;
        for (int64_t k = 0; k < K; ++k)
          acc += (int64_t{A.data[b * A.batch_stride + m * A.ld + k]} - A.zero_point) *
                 (int64_t{b_element(B, b_layout, b, n, k)} - B.zero_point);
        C[b * M * N + m * N + n] = checked_int32(acc, "accumulator", "integer_matmul_u8u8_ref");
      }
}

}  // namespace qt::quant

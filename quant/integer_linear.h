// Integer linear layers and the attention matmuls (anchors §2.2 items 7-8; gemmlowp
// doc/low-precision.md "Efficient handling of offsets", TFLite reference/integer_ops/
// fully_connected.h).
//
// ---- integer_linear: u8 activations (scale S_a, zero point Z_a) x s8 symmetric weights (scale
// S_w per tensor or per output channel n, zero point 0) + int32 bias (scale S_a S_w[n], zero point
// 0) -> u8 output (S_o, Z_o). The float64 function it computes:
//
//   y[m, n] = clamp( round( (S_a S_w[n] / S_o) * acc[m, n] ) + Z_o, 0, 255 )
//   acc[m, n] = sum_k (a[m, k] - Z_a) w[n, k] + bias[n]          (an exact integer)
//
// The offset trick: acc = sum_k a[m, k] w[n, k] + folded_bias[n] with folded_bias[n] = bias[n] -
// Z_a sum_k w[n, k], precomputed once by make_integer_linear, so the inner loop is the pure
// u8 x s8 dot product of blas::gemm_u8s8s32 (AVX-512 VNNI vpdpbusd where available). The
// requantization uses one quantized multiplier per output channel (or one for all).
//
// Bit widths / overflow (checked by make_integer_linear, so the forward cannot overflow):
//   K < 65793 (the GEMM's own limit: |sum_k a w| <= 255 * 128 * K fits int32), and
//   |acc| <= 255 * 128 * K + |bias[n]| must be <= 2^31 - 1 for every n; then folded_bias and the
//   epilogue sum acc = gemm + folded_bias are exact in int32 as well.
//
// ---- integer_matmul_u8u8: the attention products Q K^T and P V, both operands asymmetric u8:
//
//   acc[m, n] = sum_k (a[m, k] - Z_a)(b[n, k] - Z_b)                (b stored [N, K], e.g. K rows)
//
// rewritten for the u8 x s8 GEMM with b' = b - 128 (an s8, exact):
//
//   acc = sum_k a b'  +  (128 - Z_b) sum_k a[m, k]  -  Z_a sum_k b[n, k]  +  K Z_a Z_b
//
// where the row sums of A and B are computed once per call. |acc| <= 255 * 255 * K, so K <= 33025
// (checked). P V with V stored [K, N] is transposed into the [N, K] buffer while forming b'.
#pragma once

#include <cstdint>
#include <vector>

#include "quant/integer_requantize.h"

namespace qt::quant {

struct IntegerLinear {
  int64_t in_features = 0, out_features = 0;
  std::vector<int8_t> weight;        // [out, in] row-major, symmetric s8
  std::vector<int32_t> folded_bias;  // [out]: bias[n] - Z_a sum_k weight[n, k]
  std::vector<int32_t> bias;         // [out]: the int32 bias as given (for the _ref path)
  int32_t input_zero_point = 0;      // Z_a in [0, 255]
  std::vector<Requantizer> output;   // [out]: multiplier S_a S_w[n] / S_o, zero point Z_o, u8 grid
};

// weight: [out, in] s8 codes; bias: [out] int32 codes at scale S_a S_w[n], or nullptr for none;
// weight_scales: 1 entry (per tensor) or `out` entries (per channel). Throws for sizes that do not
// match, non-positive scales, zero points outside [0, 255], or a layer whose accumulator could
// exceed int32 (the bound above, naming the channel).
IntegerLinear make_integer_linear(const int8_t* weight, int64_t out_features, int64_t in_features,
                                  const int32_t* bias, double input_scale, int32_t input_zero_point,
                                  const std::vector<double>& weight_scales, double output_scale,
                                  int32_t output_zero_point, Requant mode);

// int32 bias for a real bias b at scale S_a S_w: round half to even of b / (S_a S_w), checked to
// fit int32 (conversion helper, float64).
int32_t quantize_bias(double bias, double input_scale, double weight_scale);

// y[rows, out] (u8, dense) from x[rows, in] (u8, row m at x + m * x_stride; x_stride 0 means dense,
// in; a larger stride reads a column slice, e.g. one head's d_h features for a per-head gate).
// Fast path: gemm_u8s8s32 plus the folded-bias epilogue; any thread count gives the same bits.
void integer_linear(const IntegerLinear& layer, const uint8_t* x, int64_t rows, uint8_t* y,
                    int64_t x_stride = 0);
// The exact accumulators acc[rows, out] (int32), before requantization (for a fused ReLU, GELU or
// gate that reads the accumulator).
void integer_linear_accumulators(const IntegerLinear& layer, const uint8_t* x, int64_t rows,
                                 int32_t* acc, int64_t x_stride = 0);
// Plain loops over sum_k (a - Z_a) w + bias in int64 (checked to fit int32): the reference the
// fast path must equal bit for bit.
void integer_linear_ref(const IntegerLinear& layer, const uint8_t* x, int64_t rows, uint8_t* y,
                        int64_t x_stride = 0);

// ReLU fused into the output stage: y = requantize(max(acc, 0)), exact because ReLU commutes with
// the positive scale S_a S_w: relu(S acc) = S max(acc, 0). (OPT's fc1 + ReLU.)
void integer_linear_relu(const IntegerLinear& layer, const uint8_t* x, int64_t rows, uint8_t* y,
                         int64_t x_stride = 0);

// One u8 operand of integer_matmul_u8u8: element (i, k) of batch b at data[b * batch_stride +
// i * ld + k] (or, for B with b_layout == kn, element (k, n) at data[b * batch_stride + k * ld +
// n]).
struct U8Matrix {
  const uint8_t* data = nullptr;
  int64_t ld = 0, batch_stride = 0;
  int32_t zero_point = 0;
};
enum class BLayout { nk, kn };  // B stored [N, K] (Q K^T: the K matrix) or [K, N] (P V: V)

// acc[b][m, n] = sum_k (a - Z_a)(b - Z_b), exact int32, C row-major [M, N] per batch with batch
// stride M * N. Fast path through gemm_u8s8s32.
void integer_matmul_u8u8(int64_t batch, int64_t M, int64_t N, int64_t K, const U8Matrix& A,
                         const U8Matrix& B, BLayout b_layout, int32_t* C);
// Plain int64 loops (reference).
void integer_matmul_u8u8_ref(int64_t batch, int64_t M, int64_t N, int64_t K, const U8Matrix& A,
                             const U8Matrix& B, BLayout b_layout, int32_t* C);

}  // namespace qt::quant

// Integer LayerNorm over the last axis (C channels), integer operations only: int64 sums, the
// bit-by-bit integer square root (quant/integer_sqrt.h), one integer division per element and the
// output requantization. The float64 function it computes, for input codes q with scale S_in:
//
//   x_i = S_in (q_i - Z_in),  mu = mean(x),  var = mean((x - mu)^2)     (population variance)
//   y_i = clamp( round( (gamma_i (x_i - mu) / sqrt(var + eps) + beta_i) / S_out ) + Z_out, 0, 255 )
//
// with gamma_i = S_g g_i the quantized weight (s8 codes g, symmetric scale S_g; method.md §4.3:
// LN gamma is weight-quantized) and beta_i real. Integer steps, per row:
//
//   S  = sum q_i,  Q = sum q_i^2                               int64
//   V  = C Q - S^2  (= C^2 var / S_in^2, exact, >= 0)           int64
//   W  = V + E,     E = round(eps C^2 / S_in^2)                 (eps folded in, once per layer)
//   y_i = C q_i - S (= C (x_i - mu) / S_in, exact)              int64; Z_in cancels
//   so (x_i - mu) / sqrt(var + eps) = y_i / sqrt(W) exactly. In fixed point:
//   s  = the shift that puts W 4^s in [2^59, 2^61) (s >= 0);  D = isqrt(W 4^s) ~ 2^30
//   z_i = round(y_i 2^(15 + s) / D)  (~ 2^15 y_i / sqrt(W); ties away from zero; integer division)
//   a_i = g_i z_i + b_i,  b_i = round_half_even(beta_i 2^15 / S_g)   (int32, built once)
//   out = requantize(a_i, M = S_g / (2^15 S_out)) + Z_out, clamped to u8
//
// Bit widths and bounds (asserted): |q_i| <= 2^15 (u8 or int16 codes), 1 <= C <= 4096, so
// |S| <= 2^27, Q <= 2^42, V <= 2^54 (reached by a row of alternating +-2^15), |y_i| <= 2^28; E <=
// 2^60 (checked when built). Because y_i^2 <= sum_j y_j^2 = C V <= C W, |y_i| 2^s <= sqrt(C) (D +
// 1), so the numerator |y_i| 2^(15 + s) <= 2^6 2^30.5 2^15 < 2^52 fits int64 and |z_i| <= 2^15
// sqrt(C) <= 2^21; |g_i z_i| <= 2^28 and |b_i| <= 2^30 (checked when built), so |a_i| < 2^31:
// int32. A row with W = 0 (constant input and eps = 0; float gives 0/0) normalises to z = 0, out =
// beta.
//
// Errors (measured in the tests): the integer steps contribute |gamma| 2^-16 / S_out LSB (the
// rounding of z) plus the ~2^-30 relative error of D; the rest is the final rounding (0.5 LSB
// single rounding, 1 LSB double rounding).
#pragma once

#include <cstdint>
#include <vector>

#include "quant/integer_requantize.h"

namespace qt::quant {

inline constexpr int kLayerNormFractionBits = 15;
inline constexpr int64_t kLayerNormMaxChannels = 4096;
inline constexpr int32_t kLayerNormMaxInput = 1 << 15;

struct IntegerLayerNorm {
  int64_t channels = 0;
  std::vector<int8_t> gamma;  // g_i, s8 codes of gamma (scale S_g)
  std::vector<int32_t> beta;  // b_i = round(beta_i 2^15 / S_g)
  int64_t eps_term = 0;       // E = round(eps C^2 / S_in^2)
  Requantizer output;         // M = S_g / (2^15 S_out), Z_out, u8
};

// beta may be nullptr (zero). Throws for C out of [1, 4096], non-positive scales, eps < 0, an eps
// term beyond 2^60, or a beta that does not fit (naming the channel).
IntegerLayerNorm make_integer_layer_norm(int64_t channels, const int8_t* gamma, double gamma_scale,
                                         const double* beta, double input_scale, double eps,
                                         double output_scale, int32_t output_zero_point,
                                         Requant mode);

// out[rows, C] (u8) from input codes x[rows, C] (any zero point; |x| <= 2^15 is checked).
void integer_layer_norm(const IntegerLayerNorm& ln, const int32_t* x, int64_t rows, uint8_t* out);
void integer_layer_norm(const IntegerLayerNorm& ln, const int16_t* x, int64_t rows, uint8_t* out);
void integer_layer_norm(const IntegerLayerNorm& ln, const uint8_t* x, int64_t rows, uint8_t* out);

}  // namespace qt::quant

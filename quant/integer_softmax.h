// Integer softmax and clipped softmax over rows (paper Eq. 4, method.md §1; nn/clipped_softmax.h),
// integer operations only. The float64 function, for input codes x (scale S_in; u8 attention
// scores as the paper quantizes them, or int32) and a keep mask:
//
//   p_j = exp(S_in (x_j - max)) / sum_k exp(S_in (x_k - max))      over kept j (max over kept)
//   y_j = clip( (zeta - gamma) p_j + gamma, 0, 1 )                  (gamma = 0, zeta = 1: softmax)
//   out_j = round_half_even(255 y_j)                                 masked j: out_j = 0
//
// Output grid (fixed): u8 with scale 1/255 and zero point 0, the grid the repo's asymmetric
// min-max quantizer gives the range [0, 1] exactly (Delta = (1 - 0) / 255, z = 0). 1/255 rather
// than TFLite's 1/256 because clipped softmax produces exact ones (zeta > 1) as well as exact
// zeros, and 1.0 must be representable. A fully masked row gives all zeros.
//
// Integer steps (per row):
//   d_j = max - x_j >= 0                                    int64 (< 2^32)
//   m_j = round_half_up(d_j S_in 2^26)                      the exponent in Q5.26, via a quantized
//                                                           multiplier of S_in 2^26 (S_in < 16)
//   e_j = exp(-m_j / 2^26) in Q0.31                         integer_exp_q31 below; m_j >= 2^31
//                                                           (exp <= e^-32 < 2^-46) gives 0
//   sum = sum_j e_j                                         int64, n <= 2^20 so sum < 2^51
//   P_j = round(e_j 2^30 / sum)                             Q0.30, one integer division
//   v_j = A P_j + G 2^30,  A = round(255 (zeta - gamma) 2^20),  G = round(255 gamma 2^20)
//   out_j = round_half_even(clamp(v_j, 0, 255 2^50) / 2^50)  the stretch and the clip to [0, 1]
//                                                           folded into one integer stage
//   Bounds: zeta - gamma <= 8 and -8 <= gamma <= 0 (checked), so A <= 2^31, |A P_j| <= 2^61,
//   |G 2^30| <= 2^61: int64.
//
// The exponential (integer_exp_q31): a gemmlowp-style fixed-point exp, not I-BERT's i-exp. With
// m = sum_j bit_j 2^j, exp(-m / 2^26) = prod_{j: bit_j set} exp(-2^(j - 26)): a product of up to 31
// Q0.31 constants E_j = round(exp(-2^(j-26)) 2^31) (the "barrel shifter" gemmlowp applies to the
// integer bits of its input, applied here to all 31 bits, so no polynomial is needed). Each product
// rounds half up, (p E_j + 2^30) >> 31, so the result is within 16 units of Q0.31 (31 roundings of
// half a unit) of the exact value; exp(0) is exactly 2^31. The constants for j = 24..30 equal
// gemmlowp's exp(-1/4) .. exp(-16) (1672461947 .. 242; tested). Why not i-exp: its second-order
// polynomial has ~1e-3 relative error (0.25 LSB at 8 bits), while here the exp is exact to ~2^-27
// and the output error is the final rounding alone, which is what a checker should be able to
// state. The constants are computed once (expl) like any multiplier; the forward is integers only.
//
// Errors (measured in the tests): |out - 255 y| <= 0.5 + 2^-10 LSB for softmax and clipped softmax.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "quant/integer_requantize.h"

namespace qt::quant {

inline constexpr double kSoftmaxOutputScale = 1.0 / 255;
inline constexpr int kSoftmaxExponentBits = 26;  // m in Q5.26
inline constexpr int64_t kSoftmaxMaxRow = int64_t{1} << 20;

// E_j = round(exp(-2^(j - 26)) 2^31), j = 0..30.
const std::array<int64_t, 31>& exp_constants_q31();
// exp(-m / 2^26) in Q0.31 for m >= 0 (0 for m >= 2^31).
int64_t integer_exp_q31(int64_t m);

struct IntegerSoftmax {
  QuantizedMultiplier exponent;  // S_in 2^26
  int64_t stretch = 0;           // A = round(255 (zeta - gamma) 2^20)
  int64_t offset = 0;            // G = round(255 gamma 2^20)
  // e(d) = integer_exp_q31(round(d M)) for the 256 distances d = max - x of u8 scores, computed
  // once by make_integer_softmax (the same integers the forward would compute per row; empty in a
  // hand-built IntegerSoftmax, then the forward tabulates them per call).
  std::vector<int64_t> exp_of_distance;
};

// gamma = 0, zeta = 1 is the plain softmax. Throws for S_in outside (0, 16), gamma > 0, zeta < 1,
// or the bounds above.
IntegerSoftmax make_integer_softmax(double input_scale, double gamma = 0, double zeta = 1);

// out[rows, n] (u8, scale 1/255) from x[rows, n]; keep (nullable): u8 flags, keep[r * keep_stride +
// j] != 0 keeps key j of row r (keep_stride 0: one mask for every row, n: a mask per row, e.g.
// causal). n <= 2^20.
void integer_softmax(const IntegerSoftmax& softmax, const int32_t* x, int64_t rows, int64_t n,
                     const uint8_t* keep, int64_t keep_stride, uint8_t* out);
void integer_softmax(const IntegerSoftmax& softmax, const uint8_t* x, int64_t rows, int64_t n,
                     const uint8_t* keep, int64_t keep_stride, uint8_t* out);

}  // namespace qt::quant

// Float math functions written so that a loop calling them vectorizes: no library calls, no
// branches (selects only), no tables. Both sides of every select are computed unconditionally
// in the source: GCC (with its default -ftrapping-math) does not turn `c ? a : f(b)` into a
// select when f might raise a floating-point exception, and leaves the loop scalar. glibc's expf /
// erff are scalar calls, and in a bert-mini training step the GELU's erff alone took ~10% of the
// time (perf, 1 thread, AVX2 machine); the same loop over these functions runs at SIMD width.
//
// Accuracy (measured against float64 std::exp / std::erf in tests/test_vector_math.cpp, which
// prints the error histogram in units of the float result's ulp):
//   exp_f32              < 1 ulp on [-87.3, 88] (measured 0.92)
//   gaussian_cdf_f32     relative error < 1e-6 on [-9, 9] (Phi(-9) = 1e-19; measured 4.2e-7),
//                        absolute < 2e-7 (3 ulp of values near 1)
//   gelu_f32             relative error < 1e-6 on [-12, 12] (measured 4.0e-7)
//   gelu_derivative_f32  error < 1e-6 (|d| + 0.2): relative where |d| is large, absolute near its
//                        zero at x = -0.75, where Phi(x) and x phi(x) cancel in any float formula
// glibc's erff is within 1 ulp; these are within a few. Float training and inference use them;
// the float64 kernels (gradient checks, references) keep std::exp / std::erf.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace qt::vmath {

// e^(hi + lo), for an argument carried as an unevaluated sum hi + lo with |lo| << |hi| (lo = 0:
// plain e^hi). Range reduction hi = n ln2 + r with n = round(hi / ln2) and |r| <= ln2 / 2, r
// computed in two steps (Cody-Waite: ln2 = ln2_hi + ln2_lo, n * ln2_hi exact for |n| < 2^9, and
// hi - n * ln2_hi exact), then lo added to r: so the argument's own rounding error, which e^y
// multiplies into a relative error of |y| * 2^-24 (6e-6 at y = -100), can be passed in lo and
// is not lost. e^r by its degree-7 Taylor polynomial (truncation error r^8 / 8! <= 5.3e-9
// relative, under 0.05 ulp) in Horner form, times 2^n built in the exponent bits. round() is the
// 1.5 * 2^23 trick (adding it leaves no fraction bits). Domain: hi in [-87.33, 88]
// (e^-87.33 = FLT_MIN); below it the result is 0, above it hi is clamped to 88 (callers here only
// pass arguments <= 0). NaN gives a finite value, so callers that can see NaN must let it
// propagate through their other operands.
inline float exp_f32(float hi, float lo = 0.0f) {
  const float lowest = -87.33654f;
  float c = hi > lowest ? hi : lowest;  // NaN -> lowest: keeps the int conversion below defined
  c = c < 88.0f ? c : 88.0f;
  const float round_magic = 12582912.0f;  // 1.5 * 2^23
  const float n = (c * 1.44269504088896341f + round_magic) - round_magic;
  const float r = ((c - n * 0.693145751953125f) - n * 1.428606765330187e-06f) + lo;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float two_to_n = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  const float value = p * two_to_n;
  return hi < lowest ? 0.0f : value;
}

// -x^2 / 2 as hi + lo exactly (up to lo's own rounding): x * x rounded, its error by one fma.
struct HalfSquare {
  float hi, lo;
};
inline HalfSquare minus_half_square(float x) {
  const float square = x * x;
  const float error = std::fma(x, x, -square);
  return {-0.5f * square, -0.5f * error};
}

// Phi(x) = P(N(0, 1) <= x) = erfc(-x / sqrt 2) / 2, through erfc of z = |x| / sqrt 2 >= 0:
//   erfc(z) = t exp(-z^2 + P(t)),  t = 1 / (1 + z / 2),
// P the degree-9 Chebyshev fit of Numerical Recipes (2nd ed., §6.2, erfcc), whose relative error
// is below 1.2e-7 for every z >= 0. Then Phi(x) = erfc(z) / 2 for x < 0 (small values keep their
// relative accuracy, unlike 1 - erf) and 1 - erfc(z) / 2 for x >= 0. NaN propagates (through t).
inline float gaussian_cdf_f32(float x) {
  const float z = std::fabs(x) * 0.70710678118654752f;
  const float t = 1.0f / (1.0f + 0.5f * z);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  // -z^2 + p = -x^2 / 2 + p, its rounding errors carried into exp_f32's lo (Knuth's two-sum)
  const HalfSquare q = minus_half_square(x);
  const float sum = q.hi + p;
  const float b = sum - q.hi;
  const float sum_error = (q.hi - (sum - b)) + (p - b);
  const float half_erfc = 0.5f * t * exp_f32(sum, sum_error + q.lo);
  const float upper = 1.0f - half_erfc;
  return x < 0.0f ? half_erfc : upper;
}

// gelu(x) = x Phi(x) (the exact erf form, as BERT).
inline float gelu_f32(float x) {
  return x * gaussian_cdf_f32(x);
}

// d gelu / dx = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
inline float gelu_derivative_f32(float x) {
  const HalfSquare q = minus_half_square(x);
  return gaussian_cdf_f32(x) + x * (0.39894228040143268f * exp_f32(q.hi, q.lo));
}

}  // namespace qt::vmath

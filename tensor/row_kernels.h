// Branch-free row kernels shared by the softmax family (tensor/softmax.cpp, the fused attention
// core, the fused cross-entropy): a vectorizable e^t for f32 and row max / row sum with a fixed
// number of accumulators, so that results never depend on the thread count.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace qt::row_kernels {

inline constexpr int kLanes = 8;  // independent accumulators in row reductions (vector lanes)

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
inline uint32_t bits_of(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}
inline float float_of(uint32_t b) {
  float v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}
// All ones when `condition` holds, else 0: a lane mask for bitwise selects.
inline uint32_t mask_if(bool condition) {
  return 0u - static_cast<uint32_t>(condition);
}

inline float exp_f32(float t) {
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
  // Every a * b + c is an explicit fused multiply-add (one rounding), so the result does not
  // depend on whether the compiler would have contracted it (the -O3 build did, the -O1 sanitizer
  // build did not) and the
  // AVX-512 softmax row can reproduce it bit for bit.
  const float shifted = std::fma(clamped, kLog2e, kShifter);
  const float n = shifted - kShifter;
  const float r = std::fma(-n, kLn2Low, std::fma(-n, kLn2High, clamped));
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  const float exp_r = std::fma(p, r * r, r) + 1.0f;
  // The low 9 mantissa bits of `shifted` hold n + 126: moved into the exponent field they make
  // 2^(n-1). (n - 1 rather than n keeps n = 128, i.e. t up to ln(FLT_MAX), representable.)
  const float half_scale = float_of(bits_of(shifted) << 23);
  return float_of(bits_of(exp_r * half_scale * 2.0f) & ~too_low);
}

// f64 is the reference precision: the library exp, correctly rounded or nearly so.
inline double exp_of(double t) {
  return std::exp(t);
}
inline float exp_of(float t) {
  return exp_f32(t);
}

// ---------------------------------------------------------------------------------------------
// Row reductions with kLanes independent accumulators (lane k takes i % kLanes == k; the tail rule
// and the combine order are fixed, see LaneSum), so that the compiler can keep them in vector
// registers.

// Largest element (-inf for an empty or all -inf row). NaNs are not searched for: a NaN anywhere
// makes the exp sum NaN, which poisons the whole row anyway.
template <typename T>
inline T row_max(const T* x, int64_t n) {
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

// The one deterministic lane sum of the framework's row kernels (softmax, LayerNorm, the fused
// attention, cross-entropy): kLanes double accumulators, term i of each full group of kLanes going
// to lane i % kLanes, so that the compiler keeps the lanes in vector registers. Everything about
// the order is fixed — which lane a term joins, and how the lanes are combined — so a sum never
// depends on the thread count or the CPU. Two tail rules and two combine orders exist, each kept
// by the kernels whose results (and PyTorch fixtures) were built with it:
//   LaneTail::first_lane   the n % kLanes leftover terms all join lane 0 (softmax, LayerNorm,
//                          attention);
//   LaneTail::by_index     leftover term i joins lane i % kLanes (cross-entropy, which sums a row
//                          in blocks into the same lanes);
//   total()                the tree ((0 + 1) + (2 + 3)) + ((4 + 5) + (6 + 7));
//   total_in_lane_order()  0 + lane 0 + lane 1 + ... + lane 7 (the LayerNorm backward).
enum class LaneTail { first_lane, by_index };

struct LaneSum {
  double lanes[kLanes] = {};

  // Adds term(i) for i in [0, n) (term returns double).
  template <typename Term>
  void add(int64_t n, Term&& term, LaneTail tail = LaneTail::first_lane) {
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes)
      for (int k = 0; k < kLanes; ++k) lanes[k] += term(i + k);
    if (tail == LaneTail::first_lane)
      for (; i < n; ++i) lanes[0] += term(i);
    else
      for (; i < n; ++i) lanes[i % kLanes] += term(i);
  }
  double total() const {
    return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
           ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  }
  double total_in_lane_order() const {
    double sum = 0;
    for (int k = 0; k < kLanes; ++k) sum += lanes[k];
    return sum;
  }
};

// sum_i term(i) for i in [0, n): lane tail first_lane, tree combine.
template <typename Term>
inline double lane_sum(int64_t n, Term&& term) {
  LaneSum sum;
  sum.add(n, term);
  return sum.total();
}

// sum_i a_i (b == nullptr) or sum_i a_i b_i, accumulated in double.
template <typename T>
inline double row_sum(const T* a, const T* b, int64_t n) {
  if (b == nullptr) return lane_sum(n, [a](int64_t i) { return static_cast<double>(a[i]); });
  return lane_sum(
      n, [a, b](int64_t i) { return static_cast<double>(a[i]) * static_cast<double>(b[i]); });
}

// ---------------------------------------------------------------------------------------------
// One softmax row: y = softmax(x) over n elements (y may be x: in place). With m = max_j x_j,
//   y_i = exp(x_i - m) / sum_j exp(x_j - m)
// (every exp argument is <= 0; the sum is accumulated in double). An all -inf row gives NaN.
template <typename T>
inline void softmax_row_portable(const T* x, T* y, int64_t n) {
  const T m = row_max(x, n);
  for (int64_t i = 0; i < n; ++i) y[i] = exp_of(x[i] - m);
  const T inverse = static_cast<T>(1.0 / row_sum(y, static_cast<const T*>(nullptr), n));
  for (int64_t i = 0; i < n; ++i) y[i] *= inverse;
}

// f32: the AVX-512 kernel below where the CPU has it (cpu::avx512_usable), else the portable
// loops. Both give bit-identical results (tested), so the choice never changes a number.
void softmax_row(const float* x, float* y, int64_t n);
inline void softmax_row(const double* x, double* y, int64_t n) {
  softmax_row_portable(x, y, n);
}

namespace detail {
// row_kernels_avx512.cpp: the same arithmetic as softmax_row_portable<float>, 16 lanes at a time
// and the exp and sum passes merged into one. Call only when cpu::avx512_usable().
void softmax_row_avx512(const float* x, float* y, int64_t n);
}  // namespace detail

}  // namespace qt::row_kernels

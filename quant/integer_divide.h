// Exact division by a divisor that stays fixed for many numerators (a LayerNorm row's standard
// deviation, a softmax row's sum): floor(n / d) as one 64 x 64 -> 128 multiply-high, a subtract
// and two shifts instead of a 64-bit `div` per element (about 4x fewer cycles on Zen 5). The
// integers are those of `n / d`; only the speed differs.
//
// Method (Granlund & Montgomery 1994, "Division by invariant integers using multiplication",
// Figure 4.1, for N = 64-bit unsigned n and 1 <= d <= 2^63):
//   l = ceil(log2 d)                                     (bit_width(d - 1); 0 for d = 1)
//   m = floor(2^64 (2^l - d) / d) + 1                    (< 2^64 because 2^l < 2d)
//   t = floor(m n / 2^64)                                (<= n)
//   q = (t + ((n - t) >> min(l, 1))) >> max(l - 1, 0)   = floor(n / d) for every n < 2^64.
// The subtract-and-halve step keeps t + (n - t) / 2 inside 64 bits, so no step overflows.
// Tested against `/` on random (n, d), on n = k d - 1, k d, k d + 1, and at d = 1, 2, 2^63.
#pragma once

#include <bit>
#include <cstdint>

#include "tensor/error.h"

namespace qt::quant {

struct ExactDivider {
  uint64_t magic = 1;  // m
  int shift1 = 0;      // min(l, 1)
  int shift2 = 0;      // max(l - 1, 0)
};

// Throws unless 1 <= d <= 2^63.
inline ExactDivider make_exact_divider(uint64_t d) {
  QT_CHECK(d >= 1 && d <= (uint64_t{1} << 63),
           "make_exact_divider: divisor {} is outside [1, 2^63]", d);
  __extension__ using u128 = unsigned __int128;
  const int l = std::bit_width(d - 1);
  ExactDivider v;
  v.magic = static_cast<uint64_t>((static_cast<u128>((uint64_t{1} << l) - d) << 64) / d) + 1;
  v.shift1 = l < 1 ? l : 1;
  v.shift2 = l > 1 ? l - 1 : 0;
  return v;
}

// floor(n / d) for the d the divider was made from.
inline uint64_t divide(uint64_t n, const ExactDivider& v) {
  __extension__ using u128 = unsigned __int128;
  const auto t = static_cast<uint64_t>((static_cast<u128>(v.magic) * n) >> 64);
  return (t + ((n - t) >> v.shift1)) >> v.shift2;
}

// The softmax's probability P = floor((e 2^30 + floor(S / 2)) / S), for 0 <= e <= 2^31 and
// 2^31 <= S <= 2^52 (a row's sum of Q0.31 exponentials, the largest being 2^31), with one division
// per row and none per element (two 64-bit multiplies and a compare instead; no 128-bit product):
//   R = floor(2^62 / S)  (<= 2^31, so e R <= 2^62 fits),
//   z = (e R + 2^31) / 2^32 = x + a - b  with x = (e 2^30 + floor(S/2)) / S,
//       a = 1/2 - floor(S/2)/S in [0, 2^-32] and b = e (2^62 / S - R) / 2^32 in [0, 1/2),
//   so p0 = floor(z) is floor(x) - 1, floor(x) or floor(x) + 1. The remainder N - p0 S lies in
//   [-S, 2S), |.| < 2^54, so it is exact in wrapping uint64 arithmetic, and one step each way
//   gives floor(x) exactly. Tested against `/` (tests/test_integer_divide.cpp: quotient_q30 vs
//   the division on random e, S and on e next to every quotient boundary).
struct SumReciprocal {
  uint64_t sum = 1, reciprocal = 0, half = 0;  // S, R, floor(S / 2)
};
// Precondition (the caller's invariant, not checked: it runs inside parallel loops):
// 2^31 <= sum <= 2^52.
inline SumReciprocal make_sum_reciprocal(uint64_t sum) {
  return {sum, (uint64_t{1} << 62) / sum, sum / 2};
}
inline uint64_t quotient_q30(uint64_t e, const SumReciprocal& r) {
  const uint64_t numerator = (e << 30) + r.half;
  uint64_t p = (e * r.reciprocal + (uint64_t{1} << 31)) >> 32;
  const auto remainder = static_cast<int64_t>(numerator - p * r.sum);
  return p + (remainder >= static_cast<int64_t>(r.sum) ? 1 : 0) - (remainder < 0 ? 1 : 0);
}

}  // namespace qt::quant

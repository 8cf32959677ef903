// The AVX-512 softmax row (compiled with AVX-512 flags; only called after cpu::avx512_usable()).
// It must give exactly the numbers of softmax_row_portable<float> in row_kernels.h, which the
// compiler vectorizes 8 lanes wide for x86-64-v3, so every operation mirrors that code:
//   - max: vmaxps(x, lane) is `x > lane ? x : lane`, the portable comparison; max is exact in any
//     order (a +0 / -0 tie can pick either zero, and x - m is then the same number);
//   - exp: exp_f32's operations one for one, with its multiply-adds as the FMAs the compiler
//     forms from them (a * b + c becomes one rounding);
//   - sum: 8 double accumulators, lane k taking the elements i with i % 8 == k in increasing i,
//     combined in the portable order, then the remainder (< 8) into lane 0.
// This file uses none of row_kernels.h's inline functions: a copy of one compiled here, with
// AVX-512 flags, could be the one the linker keeps for the portable callers too.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "tensor/row_kernels.h"

// GCC 12 warns about the deliberately undefined pass-through operand inside its own headers'
// unmasked AVX-512 intrinsics (_mm512_slli_epi32 and friends) once they are inlined: a false
// positive of GCC 12, silenced for this file only.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace qt::row_kernels::detail {
namespace {

uint32_t bits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

// exp_f32 (row_kernels.h) on 16 lanes; the comments name its statements.
inline __m512 exp16(__m512 t) {
  constexpr float kLowest = -86.98f, kHighest = 88.8f;
  const __m512i t_bits = _mm512_castps_si512(t);
  // too_low / too_high: unsigned comparisons of the bit patterns
  const __mmask16 too_low =
      _mm512_cmpgt_epu32_mask(t_bits, _mm512_set1_epi32(static_cast<int>(bits(kLowest)))) &
      _mm512_cmple_epu32_mask(t_bits, _mm512_set1_epi32(static_cast<int>(0xFF800000u)));
  const __mmask16 too_high =
      _mm512_cmpgt_epu32_mask(t_bits, _mm512_set1_epi32(static_cast<int>(bits(kHighest)))) &
      _mm512_cmple_epu32_mask(t_bits, _mm512_set1_epi32(static_cast<int>(0x7F800000u)));
  // clamped (the two masks never overlap: one needs the sign bit, the other not)
  __m512 clamped = _mm512_mask_blend_ps(too_low, t, _mm512_set1_ps(kLowest));
  clamped = _mm512_mask_blend_ps(too_high, clamped, _mm512_set1_ps(kHighest));
  // shifted = clamped * kLog2e + kShifter;  n = shifted - kShifter
  const __m512 shifter = _mm512_set1_ps(12582912.0f + 126.0f);
  const __m512 shifted = _mm512_fmadd_ps(clamped, _mm512_set1_ps(1.44269504088896341f), shifter);
  const __m512 n = _mm512_sub_ps(shifted, shifter);
  // r = (clamped - n * kLn2High) - n * kLn2Low
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), clamped);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  // p(r), Horner
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  // exp_r = p * (r * r) + r + 1
  const __m512 exp_r =
      _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  // half_scale = 2^(n-1) from the low bits of shifted; result = exp_r * half_scale * 2, 0 if
  // too_low
  const __m512 half_scale =
      _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(shifted), 23));
  const __m512 result = _mm512_mul_ps(_mm512_mul_ps(exp_r, half_scale), _mm512_set1_ps(2.0f));
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~too_low), result);
}

// The first `count` (< 16) lanes set.
inline __mmask16 first_lanes(int64_t count) {
  return static_cast<__mmask16>((1u << count) - 1u);
}

}  // namespace

void softmax_row_avx512(const float* x, float* y, int64_t n) {
  // m = max_j x_j
  __m512 lanes_max = _mm512_set1_ps(-__builtin_inff());
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) lanes_max = _mm512_max_ps(_mm512_loadu_ps(x + i), lanes_max);
  if (i < n) {
    const __mmask16 tail = first_lanes(n - i);
    lanes_max = _mm512_mask_max_ps(lanes_max, tail, _mm512_maskz_loadu_ps(tail, x + i), lanes_max);
  }
  const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(lanes_max));

  // y_i = exp(x_i - m), summed in double: lanes 0-7 of each 16 then lanes 8-15 (i % 8 order)
  __m512d sum = _mm512_setzero_pd();
  for (i = 0; i + 16 <= n; i += 16) {
    const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), m));
    _mm512_storeu_ps(y + i, e);
    sum = _mm512_add_pd(sum, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
    sum = _mm512_add_pd(
        sum, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
  }
  double lanes[8];
  const int64_t rest = n - i;
  if (rest > 0) {
    const __mmask16 tail = first_lanes(rest);
    const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + i), m));
    _mm512_mask_storeu_ps(y + i, tail, e);
    if (rest >= 8) {  // one more full group of 8
      sum = _mm512_add_pd(sum, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
      i += 8;
    }
  }
  _mm512_storeu_pd(lanes, sum);
  for (; i < n; ++i) lanes[0] += static_cast<double>(y[i]);
  const double total = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
                       ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));

  // y_i *= 1 / total (rounded to float once, as the portable loop)
  const __m512 inverse = _mm512_set1_ps(static_cast<float>(1.0 / total));
  for (i = 0; i + 16 <= n; i += 16)
    _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_loadu_ps(y + i), inverse));
  if (i < n) {
    const __mmask16 tail = first_lanes(n - i);
    _mm512_mask_storeu_ps(y + i, tail, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, y + i), inverse));
  }
}

}  // namespace qt::row_kernels::detail

// The AVX-512 chains of tensor/cpu_peak.h (compiled with AVX-512 and VNNI flags; called only when
// cpu::avx512_usable() and the CPU has VNNI).
#include <immintrin.h>

#include <cstdint>

namespace qt::cpu::detail {

// 24 chains: more than latency x ports for both instructions on current cores (4-6 cycles x 2
// per cycle), so the ports, not a chain, bound the loop; 26 of the 32 zmm registers.
constexpr int kChains = 24;

// 24 chains x 16 lanes x 2 operations = 768 fp32 operations per iteration. The result keeps the
// chains live (the compiler may not drop them).
float fma_chains_avx512(int64_t iterations) {
  __m512 acc[kChains];
  for (int k = 0; k < kChains; ++k) acc[k] = _mm512_set1_ps(1.0f + 0.001f * static_cast<float>(k));
  const __m512 scale = _mm512_set1_ps(0.9999999f), shift = _mm512_set1_ps(1e-7f);
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 24  // the chains must stay in registers
    for (int k = 0; k < kChains; ++k) acc[k] = _mm512_fmadd_ps(acc[k], scale, shift);
  }
  __m512 total = acc[0];
  for (int k = 1; k < kChains; ++k) total = _mm512_add_ps(total, acc[k]);
  float lanes[16];  // (gcc 12's _mm512_reduce_add_ps trips -Wuninitialized in its own header)
  _mm512_storeu_ps(lanes, total);
  float sum = 0;
  for (float v : lanes) sum += v;
  return sum;
}

// 24 chains x 64 products x 2 operations = 3,072 int8 operations per iteration (int32 lanes grow
// by 4 per iteration: no overflow below 5e8 iterations).
int32_t vnni_chains_avx512(int64_t iterations) {
  __m512i acc[kChains];
  for (int k = 0; k < kChains; ++k) acc[k] = _mm512_set1_epi32(k);
  const __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(1);
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 24
    for (int k = 0; k < kChains; ++k) acc[k] = _mm512_dpbusd_epi32(acc[k], a, b);
  }
  __m512i total = acc[0];
  for (int k = 1; k < kChains; ++k) total = _mm512_add_epi32(total, acc[k]);
  int32_t lanes[16];
  _mm512_storeu_si512(lanes, total);
  int32_t sum = 0;
  for (int32_t v : lanes) sum += v;
  return sum;
}

}  // namespace qt::cpu::detail

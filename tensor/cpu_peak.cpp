// Measured arithmetic peaks (see the header).
#include "tensor/cpu_peak.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "tensor/cpu_features.h"
#include "tensor/error.h"

namespace qt::cpu {
namespace detail {
float fma_chains_avx512(int64_t iterations);
int32_t vnni_chains_avx512(int64_t iterations);

// The AVX2 chains (this file is compiled for x86-64-v3): 12 x 8 lanes x 2 = 192 operations
// (12 of the 16 ymm registers).
float fma_chains_avx2(int64_t iterations) {
  __m256 acc[12];
  for (int k = 0; k < 12; ++k) acc[k] = _mm256_set1_ps(1.0f + 0.001f * static_cast<float>(k));
  const __m256 scale = _mm256_set1_ps(0.9999999f), shift = _mm256_set1_ps(1e-7f);
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
    for (int k = 0; k < 12; ++k) acc[k] = _mm256_fmadd_ps(acc[k], scale, shift);
  }
  __m256 total = acc[0];
  for (int k = 1; k < 12; ++k) total = _mm256_add_ps(total, acc[k]);
  float lanes[8];
  _mm256_storeu_ps(lanes, total);
  float sum = 0;
  for (float v : lanes) sum += v;
  return sum;
}
}  // namespace detail

namespace {

volatile double sink = 0;  // keeps the chains' results alive

// Runs `chains(iterations)` on every thread at once; returns the wall seconds.
template <typename Chains>
double run_on_threads(int threads, int64_t iterations, Chains chains) {
  const auto start = std::chrono::steady_clock::now();
  double total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
  total += static_cast<double>(chains(iterations));
  sink = sink + total;
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void check_arguments(int threads, int repeats, double seconds_per_run) {
  QT_CHECK(threads >= 1 && repeats >= 1 && seconds_per_run > 0,
           "measure peak: need threads >= 1, repeats >= 1 and a positive duration");
}

template <typename Chains>
PeakMeasurement measure(int threads, int repeats, double seconds_per_run, double ops_per_iteration,
                        Chains chains, const char* instruction) {
  check_arguments(threads, repeats, seconds_per_run);
  // Calibrate the iteration count to about seconds_per_run.
  int64_t iterations = 1 << 16;
  for (double t = run_on_threads(threads, iterations, chains); t < 0.02;
       t = run_on_threads(threads, iterations, chains))
    iterations *= 4;
  const double once = run_on_threads(threads, iterations, chains);
  iterations = std::max<int64_t>(
      iterations, static_cast<int64_t>(static_cast<double>(iterations) * seconds_per_run / once));
  PeakMeasurement m;
  m.instruction = instruction;
  m.threads = threads;
  m.seconds = 1e30;
  for (int r = 0; r < repeats; ++r)
    m.seconds = std::min(m.seconds, run_on_threads(threads, iterations, chains));
  m.gops = static_cast<double>(threads) * static_cast<double>(iterations) * ops_per_iteration /
           m.seconds / 1e9;
  return m;
}

}  // namespace

PeakMeasurement measure_fp32_fma_peak(int threads, int repeats, double seconds_per_run) {
  if (avx512_usable())
    return measure(threads, repeats, seconds_per_run, 768, detail::fma_chains_avx512,
                   "vfmadd231ps zmm");
  return measure(threads, repeats, seconds_per_run, 192, detail::fma_chains_avx2,
                 "vfmadd231ps ymm");
}

PeakMeasurement measure_int8_vnni_peak(int threads, int repeats, double seconds_per_run) {
  check_arguments(threads, repeats, seconds_per_run);
  if (!avx512_usable() || !__builtin_cpu_supports("avx512vnni")) {
    PeakMeasurement none;
    none.instruction = "none (no AVX-512 VNNI on this CPU)";
    none.threads = threads;
    return none;
  }
  return measure(threads, repeats, seconds_per_run, 3072, detail::vnni_chains_avx512,
                 "vpdpbusd zmm");
}

}  // namespace qt::cpu

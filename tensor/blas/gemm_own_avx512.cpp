// The AVX-512 micro-kernel of the own GEMM (compiled with -mavx512f ...; only called after
// __builtin_cpu_supports("avx512f") said yes). Read gemm_own.cpp first: it explains the blocking
// and the packed layouts this kernel consumes.
//
// Register tile: MR = 12 rows x NR = 32 columns of C, held in 24 zmm accumulators (2 zmm of 16
// floats per row). One step k of the inner loop
//   - loads one row of the B micro-panel: 32 floats = 2 zmm          (b0, b1)
//   - broadcasts each of the 12 A values of column k to a zmm         (a)
//   - does 12 x 2 = 24 fused multiply-adds, 24 * 16 * 2 = 768 flops.
// 24 independent accumulators hide the FMA latency (4 cycles x 2 FMA pipes = at least 8 chains
// needed), and 24 acc + 2 B + a few broadcasts fit in the 32 zmm registers without spilling.
// Per step we do 2 + 12 = 14 loads for 24 FMAs: the loads never limit the FMA pipes.
#include <immintrin.h>

#include "tensor/blas/gemm_internal.h"

namespace qt::blas::detail {
namespace {

constexpr int kMR = 12;
constexpr int kNR = 32;

// Lane mask for the columns [from, from + 16) of a tile with nr valid columns.
inline __mmask16 column_mask(int nr, int from) {
  const int valid = nr - from;
  if (valid >= 16) return 0xFFFF;
  if (valid <= 0) return 0;
  return static_cast<__mmask16>((1u << valid) - 1u);
}

void kernel_12x32(int64_t kc, const float* A, const float* B, float* C, int64_t ldc, float alpha,
                  float beta, int mr, int nr) {
  __m512 acc0[kMR], acc1[kMR];
#pragma GCC unroll 16
  for (int i = 0; i < kMR; ++i) {
    acc0[i] = _mm512_setzero_ps();
    acc1[i] = _mm512_setzero_ps();
  }

  // Start fetching the C tile now: it is needed only after the k loop, and by then it has arrived
  // from wherever it was (often DRAM: C is far bigger than the caches). Without this, the loads
  // and stores of C at the end of the tile stall the core for a memory latency every tile.
  for (int i = 0; i < mr; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(C + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(C + i * ldc + 16), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(C + i * ldc + kNR - 1), _MM_HINT_T0);
  }

  // The hot loop: everything here is in registers except the two panel streams.
  for (int64_t k = 0; k < kc; ++k) {
    _mm_prefetch(reinterpret_cast<const char*>(A + 8 * kMR), _MM_HINT_T0);
    const __m512 b0 = _mm512_load_ps(B);
    const __m512 b1 = _mm512_load_ps(B + 16);
#pragma GCC unroll 16
    for (int i = 0; i < kMR; ++i) {
      const __m512 a = _mm512_set1_ps(A[i]);
      acc0[i] = _mm512_fmadd_ps(a, b0, acc0[i]);
      acc1[i] = _mm512_fmadd_ps(a, b1, acc1[i]);
    }
    A += kMR;
    B += kNR;
  }

  // Write the tile: C = alpha * acc + beta * C, masked to the valid columns, only valid rows.
  // The same instructions run for full and edge tiles, so every C element gets the same
  // arithmetic wherever the tile boundaries fall (this is what makes results independent of
  // the thread count).
  const __mmask16 m0 = column_mask(nr, 0);
  const __mmask16 m1 = column_mask(nr, 16);
  const __m512 va = _mm512_set1_ps(alpha);
  const __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 16
  for (int i = 0; i < kMR; ++i) {
    if (i >= mr) break;
    float* c = C + i * ldc;
    if (beta == 0.0f) {
      _mm512_mask_storeu_ps(c, m0, _mm512_mul_ps(va, acc0[i]));
      _mm512_mask_storeu_ps(c + 16, m1, _mm512_mul_ps(va, acc1[i]));
    } else {
      const __m512 c0 = _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m0, c));
      const __m512 c1 = _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m1, c + 16));
      _mm512_mask_storeu_ps(c, m0, _mm512_fmadd_ps(va, acc0[i], c0));
      _mm512_mask_storeu_ps(c + 16, m1, _mm512_fmadd_ps(va, acc1[i], c1));
    }
  }
}

}  // namespace

// Cache blocks for the 12 x 32 tile on a core with 48 KiB L1d and 1 MiB L2 (Zen 4/5; fine on
// Intel server cores too). Chosen by measurement around the textbook sizes:
//   KC = 384: the B micro-panel (KC x 32 floats = 48 KiB) sits in L1/L2 while the kernel sweeps
//             down the A block; the A micro-panel (12 x 384 floats = 18 KiB) streams beside it.
//             A larger KC means fewer passes over C (C is loaded and stored K / KC times) and
//             longer contiguous reads of A when packing; Zen's L2 feeds the B stream fast
//             enough (32 + 12 floats per 12 cycles) that B need not fit in L1 entirely.
//             KC = 256 (B panel exactly in L1) is within a few percent.
//   MC = 240: the packed A block (240 x 384 floats = 360 KiB) stays in the 1 MiB L2 while the
//             kernel sweeps across the B panel, with room to spare for B and C traffic.
//   NC = 3072: the packed B panel (384 x 3072 floats = 4.5 MiB) lives in L3.
const OwnKernel& own_kernel_avx512() {
  static const OwnKernel kernel{"avx512 12x32", kMR, kNR, 240, 384, 3072, &kernel_12x32};
  return kernel;
}

}  // namespace qt::blas::detail

// AVX2 path of gemm_u8s8s32 for CPUs without AVX-512 VNNI (the project's baseline x86-64-v3 has
// AVX2, so this file needs no extra flags).
//
// Exactness. AVX2 has no vpdpbusd. Its u8 x s8 instruction, vpmaddubsw, adds two products into a
// *saturating* s16 (255 * 127 * 2 = 64770 > 32767), so it is not exact. Instead both operands are
// widened to s16 when packed (A: u8 -> 0..255, B: s8 -> -128..127) and multiplied with vpmaddwd
// (_mm256_madd_epi16), which multiplies 16 pairs of s16 and adds adjacent products into 8 s32
// lanes: a0 b0 + a1 b1 <= 2 * 255 * 128 in magnitude, exact. The s32 accumulation is exact as long
// as K * 255 * 128 fits (gemm_u8s8s32 checks K), so the result equals the reference loops bit for
// bit whatever the order of the sums.
//
// Layout. k is grouped in pairs:
//   packed B panel (16 columns j0..j0+15):  Bp[k2*16 + j] = B[j0 + j, 2*k2 .. 2*k2+1] as two s16
//   packed A strip (MR = 6 rows i0..):      Ap[k2*6 + i]  = A[i0 + i, 2*k2 .. 2*k2+1] as two s16
// (one int32 per pair, zero past K). Per k2 step the 6 x 16 micro-kernel loads 2 ymm of B,
// broadcasts each row's pair and issues 6 x 2 vpmaddwd + vpaddd into 12 accumulators (15 of the 16
// ymm registers with the two B vectors and the broadcast): 192 multiply-adds per step.
//
// Blocking: all of B is packed once per call (threads split the panels; 2 bytes per element, e.g.
// 512 KiB for a 1024 x 256 weight), then the threads take strips of 6 rows of A, pack each into
// their own buffer and sweep it across every panel. Every C element is computed by one thread.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>

#include "tensor/blas/gemm_internal.h"

namespace qt::blas::detail {
namespace {

constexpr int kMR = 6;
constexpr int kNR = 16;

// Two values as the low and high s16 of one int32 lane (the second 0 past K).
inline int32_t pair(int32_t first, int32_t second) {
  return static_cast<int32_t>((static_cast<uint32_t>(second) << 16) |
                              (static_cast<uint32_t>(first) & 0xFFFFu));
}

// Rows first .. first + count of a K-contiguous u8 or s8 matrix (count <= width) into one packed
// block of K2 x width int32 pairs, widened to s16 (zeros past K and past count): a B panel
// (width 16, rows = columns j of C) or an A strip (width 6, rows i).
template <typename Byte>
void pack_pairs(const Byte* src, int64_t ld, int64_t first, int count, int width, int64_t K,
                int64_t K2, int32_t* dst) {
  for (int r = 0; r < width; ++r) {
    const Byte* row = r < count ? src + (first + r) * ld : nullptr;
    for (int64_t k2 = 0; k2 < K2; ++k2) {
      const int64_t k = 2 * k2;
      const int32_t low = row != nullptr ? row[k] : 0;
      const int32_t high = row != nullptr && k + 1 < K ? row[k + 1] : 0;
      dst[k2 * width + r] = pair(low, high);
    }
  }
}

// Lane mask (all bits set = store) for columns [from, from + 8) of nr valid columns.
inline __m256i column_mask(int nr, int from) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(nr - from), lane);
}

// One 6 x 16 tile: C[i, j] (+)= sum over k2 of madd(Ap[k2, i], Bp[k2, j]) for i < mr, j < nr.
void kernel_6x16(int64_t K2, const int32_t* Ap, const int32_t* Bp, int32_t* C, int64_t ldc, int mr,
                 int nr, bool accumulate) {
  __m256i acc0[kMR], acc1[kMR];
#pragma GCC unroll 6
  for (int i = 0; i < kMR; ++i) {
    acc0[i] = _mm256_setzero_si256();
    acc1[i] = _mm256_setzero_si256();
  }
  for (int64_t k2 = 0; k2 < K2; ++k2) {
    const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(Bp));
    const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(Bp + 8));
#pragma GCC unroll 6
    for (int i = 0; i < kMR; ++i) {
      const __m256i a = _mm256_set1_epi32(Ap[i]);
      acc0[i] = _mm256_add_epi32(acc0[i], _mm256_madd_epi16(a, b0));
      acc1[i] = _mm256_add_epi32(acc1[i], _mm256_madd_epi16(a, b1));
    }
    Ap += kMR;
    Bp += kNR;
  }
  const __m256i m0 = column_mask(nr, 0);
  const __m256i m1 = column_mask(nr, 8);
#pragma GCC unroll 6
  for (int i = 0; i < kMR; ++i) {
    if (i >= mr) break;
    int* c = reinterpret_cast<int*>(C + i * ldc);
    __m256i c0 = acc0[i], c1 = acc1[i];
    if (accumulate) {  // vpaddd wraps modulo 2^32, like the reference's unsigned add
      c0 = _mm256_add_epi32(c0, _mm256_maskload_epi32(c, m0));
      c1 = _mm256_add_epi32(c1, _mm256_maskload_epi32(c + 8, m1));
    }
    _mm256_maskstore_epi32(c, m0, c0);
    _mm256_maskstore_epi32(c + 8, m1, c1);
  }
}

}  // namespace

void gemm_u8s8s32_avx2(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda,
                       const int8_t* B, int64_t ldb, int32_t* C, int64_t ldc, bool accumulate,
                       int nthreads) {
  const int64_t K2 = (K + 1) / 2;
  const int64_t panel_ints = std::max<int64_t>(1, K2) * kNR;
  const int64_t strip_ints = std::max<int64_t>(1, K2) * kMR;
  const int64_t panels = (N + kNR - 1) / kNR;
  const int64_t strips = (M + kMR - 1) / kMR;
  // All buffers are allocated here, once per call; nothing inside the parallel region allocates.
  AlignedInt32 b_owner, a_owner;
  int32_t* Bp = aligned_int32(static_cast<size_t>(panels * panel_ints), b_owner);
  int32_t* Ap_all = aligned_int32(static_cast<size_t>(nthreads * strip_ints), a_owner);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
  {
    int32_t* Ap = Ap_all + omp_get_thread_num() * strip_ints;
#pragma omp for schedule(static)
    for (int64_t p = 0; p < panels; ++p) {
      const int cols = static_cast<int>(std::min<int64_t>(kNR, N - p * kNR));
      pack_pairs(B, ldb, p * kNR, cols, kNR, K, K2, Bp + p * panel_ints);
    }
    // (implicit barrier: B is packed before anyone uses it)
#pragma omp for schedule(static)
    for (int64_t s = 0; s < strips; ++s) {
      const int rows = static_cast<int>(std::min<int64_t>(kMR, M - s * kMR));
      pack_pairs(A, lda, s * kMR, rows, kMR, K, K2, Ap);
      for (int64_t p = 0; p < panels; ++p) {
        const int cols = static_cast<int>(std::min<int64_t>(kNR, N - p * kNR));
        kernel_6x16(K2, Ap, Bp + p * panel_ints, C + s * kMR * ldc + p * kNR, ldc, rows, cols,
                    accumulate);
      }
    }
  }
}

}  // namespace qt::blas::detail

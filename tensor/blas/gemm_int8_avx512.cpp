// AVX-512 VNNI path of gemm_u8s8s32 (compiled with AVX-512 flags; called only after
// detail::int8_vnni_available() checked the CPU).
//
// vpdpbusd (_mm512_dpbusd_epi32(acc, a, b)) treats each 32-bit lane as 4 bytes: it multiplies the
// 4 unsigned bytes of a by the 4 signed bytes of b, sums the 4 products and adds the sum to the
// 32-bit lane of acc. That is exactly one step of sum_k A[i, k] * B[j, k] with A u8 and B s8, four
// k values at a time, 16 lanes (16 output columns j) per instruction, with no intermediate
// saturation (unlike the older vpmaddubsw + vpmaddwd pair), so the result is exact.
//
// Layout. Both operands are K-contiguous (A is [M, K], B is [N, K]). We group k in fours:
//   packed B panel (32 columns j0..j0+31):  Bp[k4*32 + j] = the 4 bytes B[j0 + j, 4*k4 .. 4*k4+3]
//   packed A strip (MR = 12 rows i0..):      Ap[k4*12 + i] = the 4 bytes A[i0 + i, 4*k4 .. 4*k4+3]
// (one int32 per 4 bytes, zero bytes past K). Per k4 step the micro-kernel loads 2 zmm of B
// (32 columns), broadcasts each row's 4 A bytes and issues 12 x 2 = 24 vpdpbusd into 24
// accumulators: a 12 x 32 tile of C, 1536 multiply-adds per step.
//
// Blocking: a block of B panels sized to stay in L2 (~512 KiB) is packed once by all threads
// together; then each thread takes strips of 12 rows of A (packed into its own buffer, ~12 * K
// bytes, fits in L1 for K up to ~4096) and sweeps them across the B block.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "tensor/blas/gemm_internal.h"
#include "tensor/error.h"

namespace qt::blas::detail {
namespace {

constexpr int kMR = 12;
constexpr int kNR = 32;

inline __mmask16 column_mask(int nr, int from) {
  const int valid = nr - from;
  if (valid >= 16) return 0xFFFF;
  if (valid <= 0) return 0;
  return static_cast<__mmask16>((1u << valid) - 1u);
}

// The 4 bytes src[0..n) (n <= 4) as one int32 lane, zero bytes past n.
inline int32_t load_group(const void* src, int64_t n) {
  int32_t value = 0;
  std::memcpy(&value, src, static_cast<size_t>(n));
  return value;
}

// Columns j0 .. j0 + cols of B (cols <= 32) into one panel of K4 x 32 int32 lanes.
void pack_b_panel(const int8_t* B, int64_t ldb, int64_t j0, int cols, int64_t K, int64_t K4,
                  int32_t* dst) {
  const int64_t full = K / 4, tail = K % 4;
  for (int j = 0; j < cols; ++j) {
    const int8_t* src = B + (j0 + j) * ldb;
    for (int64_t k4 = 0; k4 < full; ++k4) dst[k4 * kNR + j] = load_group(src + 4 * k4, 4);
    if (tail) dst[full * kNR + j] = load_group(src + 4 * full, tail);
  }
  for (int j = cols; j < kNR; ++j)
    for (int64_t k4 = 0; k4 < K4; ++k4) dst[k4 * kNR + j] = 0;
}

// Rows i0 .. i0 + rows of A (rows <= 12) into one strip of K4 x 12 int32 groups.
void pack_a_strip(const uint8_t* A, int64_t lda, int64_t i0, int rows, int64_t K, int64_t K4,
                  int32_t* dst) {
  const int64_t full = K / 4, tail = K % 4;
  for (int i = 0; i < rows; ++i) {
    const uint8_t* src = A + (i0 + i) * lda;
    for (int64_t k4 = 0; k4 < full; ++k4) dst[k4 * kMR + i] = load_group(src + 4 * k4, 4);
    if (tail) dst[full * kMR + i] = load_group(src + 4 * full, tail);
  }
  for (int i = rows; i < kMR; ++i)
    for (int64_t k4 = 0; k4 < K4; ++k4) dst[k4 * kMR + i] = 0;
}

// One 12 x 32 tile: C[i, j] (+)= sum over k4 of dpbusd(Ap[k4, i], Bp[k4, j]) for i < mr, j < nr.
void kernel_12x32(int64_t K4, const int32_t* Ap, const int32_t* Bp, int32_t* C, int64_t ldc, int mr,
                  int nr, bool accumulate) {
  __m512i acc0[kMR], acc1[kMR];
#pragma GCC unroll 16
  for (int i = 0; i < kMR; ++i) {
    acc0[i] = _mm512_setzero_si512();
    acc1[i] = _mm512_setzero_si512();
  }
  for (int64_t k4 = 0; k4 < K4; ++k4) {
    const __m512i b0 = _mm512_load_si512(Bp);
    const __m512i b1 = _mm512_load_si512(Bp + 16);
#pragma GCC unroll 16
    for (int i = 0; i < kMR; ++i) {
      const __m512i a = _mm512_set1_epi32(Ap[i]);
      acc0[i] = _mm512_dpbusd_epi32(acc0[i], a, b0);
      acc1[i] = _mm512_dpbusd_epi32(acc1[i], a, b1);
    }
    Ap += kMR;
    Bp += kNR;
  }
  const __mmask16 m0 = column_mask(nr, 0);
  const __mmask16 m1 = column_mask(nr, 16);
#pragma GCC unroll 16
  for (int i = 0; i < kMR; ++i) {
    if (i >= mr) break;
    int32_t* c = C + i * ldc;
    __m512i c0 = acc0[i], c1 = acc1[i];
    if (accumulate) {  // vpaddd wraps modulo 2^32, like the reference's unsigned add
      c0 = _mm512_add_epi32(c0, _mm512_maskz_loadu_epi32(m0, c));
      c1 = _mm512_add_epi32(c1, _mm512_maskz_loadu_epi32(m1, c + 16));
    }
    _mm512_mask_storeu_epi32(c, m0, c0);
    _mm512_mask_storeu_epi32(c + 16, m1, c1);
  }
}

}  // namespace

void gemm_u8s8s32_vnni(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda,
                       const int8_t* B, int64_t ldb, int32_t* C, int64_t ldc, bool accumulate,
                       int nthreads) {
  const int64_t K4 = (K + 3) / 4;
  const int64_t panel_ints = std::max<int64_t>(1, K4) * kNR;  // one packed B panel
  const int64_t strip_ints = std::max<int64_t>(1, K4) * kMR;  // one packed A strip
  // B block: as many 32-column panels as fit in ~512 KiB (at least one, at most all of N).
  const int64_t n_panels_total = (N + kNR - 1) / kNR;
  const int64_t block_panels =
      std::clamp<int64_t>((512 << 10) / (panel_ints * 4), 1, n_panels_total);
  const int64_t m_strips = (M + kMR - 1) / kMR;

  // Few row strips (small M): also split each B block's panels into groups, so that all threads
  // have work; a thread then packs the same A strip once per group it takes (cheap).
  const int64_t groups = m_strips >= 4 * nthreads ? 1 : std::min<int64_t>(block_panels, nthreads);

  // All buffers are allocated here, once per call; nothing inside the parallel region allocates.
  AlignedInt32 b_owner, a_owner;
  int32_t* Bp = aligned_int32(static_cast<size_t>(block_panels * panel_ints), b_owner);
  int32_t* Ap_all = aligned_int32(static_cast<size_t>(nthreads * strip_ints), a_owner);

#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
  {
    int32_t* Ap = Ap_all + omp_get_thread_num() * strip_ints;
    for (int64_t jc = 0; jc < N; jc += block_panels * kNR) {
      const int64_t nc = std::min(block_panels * kNR, N - jc);
      const int64_t panels = (nc + kNR - 1) / kNR;
#pragma omp for schedule(static)
      for (int64_t p = 0; p < panels; ++p) {
        const int cols = static_cast<int>(std::min<int64_t>(kNR, nc - p * kNR));
        pack_b_panel(B, ldb, jc + p * kNR, cols, K, K4, Bp + p * panel_ints);
      }
      // (implicit barrier: the block is packed before anyone uses it)
      const int64_t per_group = (panels + groups - 1) / groups;
      int64_t packed_strip = -1;
#pragma omp for schedule(static)
      for (int64_t item = 0; item < m_strips * groups; ++item) {
        const int64_t s = item / groups, g = item % groups;
        const int rows = static_cast<int>(std::min<int64_t>(kMR, M - s * kMR));
        if (s != packed_strip) {
          pack_a_strip(A, lda, s * kMR, rows, K, K4, Ap);
          packed_strip = s;
        }
        for (int64_t p = g * per_group; p < std::min(panels, (g + 1) * per_group); ++p) {
          const int cols = static_cast<int>(std::min<int64_t>(kNR, nc - p * kNR));
          kernel_12x32(K4, Ap, Bp + p * panel_ints, C + s * kMR * ldc + jc + p * kNR, ldc, rows,
                       cols, accumulate);
        }
      }
      // (implicit barrier: everyone is done with the block before it is repacked)
    }
  }
}

}  // namespace qt::blas::detail

// The framework's own float GEMM: C = alpha * op(A) * op(B) + beta * C, row-major.
//
// This file is meant to be read. It follows the structure of Goto's algorithm as refactored by
// BLIS (Goto & van de Geijn 2008, "Anatomy of high-performance matrix multiplication"; Van Zee &
// van de Geijn 2015, "BLIS: a framework for rapidly instantiating BLAS functionality").
//
// Why not three nested loops? A naive i-j-k loop does 2 flops per element it loads, and most of
// those loads miss the caches: for 4096 x 768 x 768 it runs at a few GFLOP/s. A core can do
// 32 (AVX2) or 64 (AVX-512) float flops per cycle, but only if the operands come from registers.
// So the work is organised around a small *register tile* of C (the micro-kernel) and the loops
// around it are arranged so that every level of the memory hierarchy feeds the level below it
// from data it already holds:
//
//   for jc in 0..N step NC:                      (5) B panel  op(B)[0:K, jc:jc+NC]
//     for pc in 0..K step KC:                    (4) pack B block KC x NC -> Bp   (lives in L3)
//       for ic in 0..M step MC:                  (3) pack A block MC x KC -> Ap   (lives in L2)
//         for jr in 0..NC step NR:               (2) one B micro-panel KC x NR    (lives in L1)
//           for ir in 0..MC step MR:             (1) one A micro-panel MR x KC    (streams from L2)
//             micro-kernel: C[ic+ir : +MR, jc+jr : +NR] += Ap(ir) * Bp(jr)   (in registers)
//
// The numbers (for the AVX-512 kernel, MR x NR = 12 x 32, KC = 256, MC = 480, NC = 3072):
//   - The micro-kernel keeps the 12 x 32 tile of C in 24 zmm registers for all KC steps. Each
//     step loads 32 + 12 floats and does 12 * 32 FMAs: 8.7 FMAs per float loaded.
//   - Loop (1) reuses the same B micro-panel (KC * NR * 4 B = 32 KiB) for all MC / MR micro-
//     panels of A, so that panel sits in the 48 KiB L1 while A streams through.
//   - Loop (2) reuses the same packed A block (MC * KC * 4 B = 480 KiB) for all NC / NR micro-
//     panels of B, so A sits in the 1 MiB L2.
//   - Loop (3) reuses the packed B block (KC * NC * 4 B = 3 MiB) for all M / MC blocks of A: L3.
//   - Loop (4) walks K in blocks of KC: each pass adds one rank-KC update into C, so each C tile
//     is loaded and stored K / KC times instead of K times.
//
// Packing copies a block of A or B into the exact order the micro-kernel reads it: contiguous,
// 64-byte aligned, each micro-panel one linear stream. That turns strided or transposed access
// (op(A) = A^T, op(B) = B^T) into plain sequential loads inside the kernel, so transposes cost
// nothing beyond packing, and it zero-pads partial panels up to MR / NR so the micro-kernel never
// needs a special case for ragged edges (it just stores fewer rows / columns).
//
// Threads and determinism: the threads split C into a grid of disjoint rectangles (in whole
// micro-tiles), and each thread runs the algorithm above on its own rectangle with its own pack
// buffers. Every element of C is therefore computed by exactly one thread, in the same order
// (K blocks of KC in increasing order, k increasing inside a block), with the same instructions
// (edge tiles run the full-tile arithmetic). The result is bit-identical for any thread count.
// Each thread packs the parts of A and B its rectangle needs; when the threads split M they both
// pack all of B, which costs K * N copies against M * N * K / threads multiply-adds: negligible.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <limits>

#include "tensor/blas/gemm_internal.h"
#include "tensor/cpu_features.h"
#include "tensor/error.h"

namespace qt::blas::detail {
namespace {

// ---------------------------------------------------------------------------------------------
// The portable micro-kernel: AVX2 + FMA, MR x NR = 6 x 16.
// 6 rows x 2 ymm (8 floats each) = 12 accumulators, + 2 registers for the B row + 1 for the
// broadcast A value = 15 of the 16 ymm registers. 12 independent FMA chains cover the FMA latency
// (4-5 cycles) on 2 pipes.
constexpr int kMR2 = 6;
constexpr int kNR2 = 16;

// Lane mask (all bits of a lane set = store it) for columns [from, from + 8) of nr valid columns.
inline __m256i column_mask_avx2(int nr, int from) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(nr - from), lane);
}

void kernel_6x16_avx2(int64_t kc, const float* A, const float* B, float* C, int64_t ldc,
                      float alpha, float beta, int mr, int nr) {
  __m256 acc0[kMR2], acc1[kMR2];
#pragma GCC unroll 8
  for (int i = 0; i < kMR2; ++i) {
    acc0[i] = _mm256_setzero_ps();
    acc1[i] = _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(B);
    const __m256 b1 = _mm256_load_ps(B + 8);
#pragma GCC unroll 8
    for (int i = 0; i < kMR2; ++i) {
      const __m256 a = _mm256_broadcast_ss(A + i);
      acc0[i] = _mm256_fmadd_ps(a, b0, acc0[i]);
      acc1[i] = _mm256_fmadd_ps(a, b1, acc1[i]);
    }
    A += kMR2;
    B += kNR2;
  }
  // C = alpha * acc + beta * C on the valid part of the tile (beta == 0: C is not read).
  const __m256i m0 = column_mask_avx2(nr, 0);
  const __m256i m1 = column_mask_avx2(nr, 8);
  const __m256 va = _mm256_set1_ps(alpha);
  const __m256 vb = _mm256_set1_ps(beta);
#pragma GCC unroll 8
  for (int i = 0; i < kMR2; ++i) {
    if (i >= mr) break;
    float* c = C + i * ldc;
    if (beta == 0.0f) {
      _mm256_maskstore_ps(c, m0, _mm256_mul_ps(va, acc0[i]));
      _mm256_maskstore_ps(c + 8, m1, _mm256_mul_ps(va, acc1[i]));
    } else {
      const __m256 c0 = _mm256_mul_ps(vb, _mm256_maskload_ps(c, m0));
      const __m256 c1 = _mm256_mul_ps(vb, _mm256_maskload_ps(c + 8, m1));
      _mm256_maskstore_ps(c, m0, _mm256_fmadd_ps(va, acc0[i], c0));
      _mm256_maskstore_ps(c + 8, m1, _mm256_fmadd_ps(va, acc1[i], c1));
    }
  }
}

// AVX2 blocks: KC x NR = 256 x 16 floats = 16 KiB of B in L1 (32 KiB on older cores);
// MC x KC = 192 x 256 floats = 192 KiB of A in L2 (256 KiB and up); NC = 3072.
const OwnKernel kAvx2Kernel{"avx2 6x16", kMR2, kNR2, 192, 256, 3072, &kernel_6x16_avx2};

// ---------------------------------------------------------------------------------------------
// Pack buffers: one pair per thread, grown on demand and kept for the next call (OpenMP keeps its
// worker threads alive), so a GEMM call allocates at most once per thread and never inside loops.
struct AlignedBuffer {
  float* data = nullptr;
  size_t capacity = 0;  // in floats

  float* reserve(size_t count) {
    if (count > capacity) {
      std::free(data);
      const size_t bytes = (count * sizeof(float) + 63) / 64 * 64;  // aligned_alloc: size % 64 == 0
      data = static_cast<float*>(std::aligned_alloc(64, bytes));
      if (data == nullptr) {
        capacity = 0;
        fail("sgemm (own): cannot allocate a {}-byte pack buffer", bytes);
      }
      capacity = count;
    }
    return data;
  }
  ~AlignedBuffer() { std::free(data); }
};

thread_local AlignedBuffer tl_pack_a;
thread_local AlignedBuffer tl_pack_b;

// ---------------------------------------------------------------------------------------------
// Packing.
//
// Transposing copy, the common core of packing a non-transposed A and a transposed B:
//   dst[k * ld_dst + i] = src[i * ld_src + k]     for i < rows, k < kc
// i.e. `rows` rows of src (each contiguous in k) become columns of dst. Done in register tiles:
// 8 rows x 8 k with the AVX 8 x 8 transpose (3 shuffle stages), then 4 x 4 for a remaining group
// of 4 rows, scalar for what is left. Element by element this is a scattered store per value
// (stride ld_dst floats); with the tiles it is one 8-float store per k, ~5x faster, which matters
// for the attention core's small products (128 x 128 x 64), where packing otherwise costs about
// as much as the multiply-adds.
inline void transpose_8x8(__m256 r[8]) {
  // Stage 1: interleave pairs of rows; 2: pairs of pairs; 3: swap 128-bit halves.
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

void transpose_copy(const float* src, int64_t ld_src, int rows, int64_t kc, float* dst,
                    int64_t ld_dst) {
  int i = 0;
  for (; i + 8 <= rows; i += 8) {
    const float* s = src + i * ld_src;
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
      __m256 r[8];
      for (int row = 0; row < 8; ++row) r[row] = _mm256_loadu_ps(s + row * ld_src + k);
      transpose_8x8(r);
      for (int c = 0; c < 8; ++c) _mm256_storeu_ps(dst + (k + c) * ld_dst + i, r[c]);
    }
    for (; k < kc; ++k)
      for (int row = 0; row < 8; ++row) dst[k * ld_dst + i + row] = s[row * ld_src + k];
  }
  for (; i + 4 <= rows; i += 4) {
    const float* s = src + i * ld_src;
    int64_t k = 0;
    for (; k + 4 <= kc; k += 4) {
      __m128 r0 = _mm_loadu_ps(s + k), r1 = _mm_loadu_ps(s + ld_src + k);
      __m128 r2 = _mm_loadu_ps(s + 2 * ld_src + k), r3 = _mm_loadu_ps(s + 3 * ld_src + k);
      _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
      _mm_storeu_ps(dst + k * ld_dst + i, r0);
      _mm_storeu_ps(dst + (k + 1) * ld_dst + i, r1);
      _mm_storeu_ps(dst + (k + 2) * ld_dst + i, r2);
      _mm_storeu_ps(dst + (k + 3) * ld_dst + i, r3);
    }
    for (; k < kc; ++k)
      for (int row = 0; row < 4; ++row) dst[k * ld_dst + i + row] = s[row * ld_src + k];
  }
  for (; i < rows; ++i)
    for (int64_t k = 0; k < kc; ++k) dst[k * ld_dst + i] = src[i * ld_src + k];
}

// pack_a: the mc x kc block of op(A) whose top-left element is op(A)[i0, p0] becomes mc / MR
// micro-panels (rounded up). Micro-panel r holds rows i0 + r*MR .. +MR as kc columns of MR floats:
//   Ap[r*MR*kc + k*MR + i] = op(A)[i0 + r*MR + i, p0 + k]     (0 for rows past the block)
// The micro-kernel reads it front to back: at step k, the MR values of column k.
void pack_a(Trans trans, const float* A, int64_t lda, int64_t i0, int64_t p0, int64_t mc,
            int64_t kc, int MR, float* Ap) {
  for (int64_t r0 = 0; r0 < mc; r0 += MR) {
    const int rows = static_cast<int>(std::min<int64_t>(MR, mc - r0));
    float* dst = Ap + r0 * kc;
    if (trans == Trans::no) {
      // op(A)[i, k] = A[i*lda + k]: each row is contiguous in k; it becomes a column of the panel.
      // A is usually far bigger than the caches and we read it in short pieces (kc floats of each
      // of MR rows), too short for the hardware prefetcher to lock on, so the next panel's rows
      // are prefetched while this one is transposed (one line per 16 floats).
      if (r0 + MR < mc) {
        const int next_rows = static_cast<int>(std::min<int64_t>(MR, mc - r0 - MR));
        for (int i = 0; i < next_rows; ++i) {
          const float* next = A + (i0 + r0 + MR + i) * lda + p0;
          for (int64_t k = 0; k < kc; k += 16)
            _mm_prefetch(reinterpret_cast<const char*>(next + k), _MM_HINT_T0);
        }
      }
      transpose_copy(A + (i0 + r0) * lda + p0, lda, rows, kc, dst, MR);
      for (int i = rows; i < MR; ++i)
        for (int64_t k = 0; k < kc; ++k) dst[k * MR + i] = 0.0f;
    } else {
      // op(A)[i, k] = A[k*lda + i]: the MR values of one column are already contiguous.
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = A + (p0 + k) * lda + i0 + r0;
        for (int i = 0; i < rows; ++i) dst[k * MR + i] = src[i];
        for (int i = rows; i < MR; ++i) dst[k * MR + i] = 0.0f;
      }
    }
  }
}

// pack_b: the kc x nc block of op(B) whose top-left element is op(B)[p0, j0] becomes nc / NR
// micro-panels (rounded up). Micro-panel s holds columns j0 + s*NR .. +NR as kc rows of NR floats:
//   Bp[s*NR*kc + k*NR + j] = op(B)[p0 + k, j0 + s*NR + j]     (0 for columns past the block)
void pack_b(Trans trans, const float* B, int64_t ldb, int64_t p0, int64_t j0, int64_t kc,
            int64_t nc, int NR, float* Bp) {
  for (int64_t s0 = 0; s0 < nc; s0 += NR) {
    const int cols = static_cast<int>(std::min<int64_t>(NR, nc - s0));
    float* dst = Bp + s0 * kc;
    if (trans == Trans::no) {
      // op(B)[k, j] = B[k*ldb + j]: a row of the micro-panel is a contiguous piece of a row of B.
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = B + (p0 + k) * ldb + j0 + s0;
        for (int j = 0; j < cols; ++j) dst[k * NR + j] = src[j];
        for (int j = cols; j < NR; ++j) dst[k * NR + j] = 0.0f;
      }
    } else {
      // op(B)[k, j] = B[j*ldb + k] (B stored [N, K], like a Linear weight): row j of B is
      // contiguous in k and becomes column j of the micro-panel.
      transpose_copy(B + (j0 + s0) * ldb + p0, ldb, cols, kc, dst, NR);
      for (int64_t k = 0; k < kc; ++k)
        for (int j = cols; j < NR; ++j) dst[k * NR + j] = 0.0f;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// One thread's share: the rectangle C[m0:m1, n0:n1], all of K, with loops (5) to (1) from the top
// of the file.
void gemm_block(const OwnKernel& ker, Trans trans_a, Trans trans_b, int64_t m0, int64_t m1,
                int64_t n0, int64_t n1, int64_t K, float alpha, const float* A, int64_t lda,
                const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const int MR = ker.MR, NR = ker.NR;
  const int64_t MC = ker.MC, KC = ker.KC, NC = ker.NC;
  const int64_t m_len = m1 - m0, n_len = n1 - n0;
  // Buffers sized for this call's blocks (never more than MC x KC and KC x NC, rounded up).
  const int64_t mc_max = std::min(MC, (m_len + MR - 1) / MR * MR);
  const int64_t nc_max = std::min(NC, (n_len + NR - 1) / NR * NR);
  const int64_t kc_max = std::min(KC, K);
  float* Ap = tl_pack_a.reserve(static_cast<size_t>(mc_max * kc_max));
  float* Bp = tl_pack_b.reserve(static_cast<size_t>(kc_max * nc_max));

  for (int64_t jc = n0; jc < n1; jc += NC) {  // (5)
    const int64_t nc = std::min(NC, n1 - jc);
    for (int64_t pc = 0; pc < K; pc += KC) {  // (4)
      const int64_t kc = std::min(KC, K - pc);
      pack_b(trans_b, B, ldb, pc, jc, kc, nc, NR, Bp);
      // The first K block applies the caller's beta; later blocks add onto what it wrote.
      const float beta_block = pc == 0 ? beta : 1.0f;
      for (int64_t ic = m0; ic < m1; ic += MC) {  // (3)
        const int64_t mc = std::min(MC, m1 - ic);
        pack_a(trans_a, A, lda, ic, pc, mc, kc, MR, Ap);
        for (int64_t jr = 0; jr < nc; jr += NR) {    // (2)
          for (int64_t ir = 0; ir < mc; ir += MR) {  // (1)
            const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ir));
            const int nr = static_cast<int>(std::min<int64_t>(NR, nc - jr));
            ker.kernel(kc, Ap + ir * kc, Bp + jr * kc, C + (ic + ir) * ldc + jc + jr, ldc, alpha,
                       beta_block, mr, nr);
          }
        }
      }
    }
  }
}

// Splits `tiles` micro-tiles into `parts` nearly equal consecutive ranges; range `index` in tiles.
void split_range(int64_t tiles, int parts, int index, int64_t& begin, int64_t& end) {
  const int64_t base = tiles / parts, extra = tiles % parts;
  begin = index * base + std::min<int64_t>(index, extra);
  end = begin + base + (index < extra ? 1 : 0);
}

}  // namespace

const OwnKernel& own_kernel() {
  static const OwnKernel& kernel = cpu::avx512_usable() ? own_kernel_avx512() : kAvx2Kernel;
  return kernel;
}

}  // namespace qt::blas::detail

std::string_view qt::blas::own_kernel_name() {
  return detail::own_kernel().name;
}

namespace qt::blas::detail {

void sgemm_own(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
               int64_t ldc, int nthreads) {
  const OwnKernel& ker = own_kernel();
  const int64_t m_tiles = (M + ker.MR - 1) / ker.MR;
  const int64_t n_tiles = (N + ker.NR - 1) / ker.NR;

  // Threads: tiny products are not worth waking a team for (about 1 MFLOP per thread minimum),
  // and there is no point in more threads than micro-tiles.
  const double flops = 2.0 * static_cast<double>(M) * static_cast<double>(N) * K;
  int threads = static_cast<int>(std::min<double>(nthreads, std::max(1.0, flops / 1e6)));
  threads = static_cast<int>(std::min<int64_t>(threads, m_tiles * n_tiles));
  threads = std::max(threads, 1);

  // Thread grid tm x tn (tm * tn == threads): pick the split whose biggest rectangle (in padded
  // micro-tiles) is smallest; on ties split M, so that threads share B and stream their own A.
  int tm = 1;
  int64_t best = std::numeric_limits<int64_t>::max();
  for (int cand = threads; cand >= 1; --cand) {
    if (threads % cand != 0) continue;
    const int64_t rows = (m_tiles + cand - 1) / cand;
    const int64_t cols = (n_tiles + threads / cand - 1) / (threads / cand);
    if (rows * cols < best) best = rows * cols, tm = cand;
  }
  const int tn = threads / tm;

  auto run = [&](int t) {
    int64_t mt0, mt1, nt0, nt1;
    split_range(m_tiles, tm, t / tn, mt0, mt1);
    split_range(n_tiles, tn, t % tn, nt0, nt1);
    const int64_t m0 = mt0 * ker.MR, m1 = std::min(M, mt1 * ker.MR);
    const int64_t n0 = nt0 * ker.NR, n1 = std::min(N, nt1 * ker.NR);
    if (m0 < m1 && n0 < n1)
      gemm_block(ker, trans_a, trans_b, m0, m1, n0, n1, K, alpha, A, lda, B, ldb, beta, C, ldc);
  };

  if (threads == 1) {
    run(0);
    return;
  }
  // An exception must not escape an OpenMP region: catch it per thread, rethrow after.
  std::exception_ptr error;
#pragma omp parallel num_threads(threads)
  {
    try {
      // Normally one rectangle per thread; if OpenMP gave us a smaller team, threads take several.
      for (int t = omp_get_thread_num(); t < threads; t += omp_get_num_threads()) run(t);
    } catch (...) {
#pragma omp critical(qt_sgemm_own_error)
      error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace qt::blas::detail

// Integer GEMM for quantized inference: C (s32) = A (u8) [M, K] x B (s8) [N, K]^T (+ C).
//
// Everything here is exact integer arithmetic, so any summation order gives the same bits; the
// fast paths (gemm_int8_avx512.cpp, AVX-512 VNNI; gemm_int8_avx2.cpp, AVX2 vpmaddwd on s16 pairs,
// where there is no VNNI) and the plain loops below must agree exactly, and the tests check that
// they do. With accumulate, C + sum wraps modulo 2^32 like the hardware
// add (it cannot overflow for sane inputs, but wrapping keeps both paths defined and identical).
#include <omp.h>

#include <algorithm>
#include <cstdlib>

#include "tensor/blas/gemm.h"
#include "tensor/blas/gemm_internal.h"
#include "tensor/cpu_features.h"
#include "tensor/error.h"
#include "tensor/threads.h"

namespace qt::blas {
namespace {

// The largest |sum| is K * 255 * 128 (u8 max times s8 min); K < 65793 keeps it inside s32.
constexpr int64_t kMaxK = 65793;

void check_int8_args(const char* op, int64_t M, int64_t N, int64_t K, const void* A, int64_t lda,
                     const void* B, int64_t ldb, const void* C, int64_t ldc) {
  QT_CHECK(M >= 0 && N >= 0 && K >= 0, "{}: negative size (M = {}, N = {}, K = {})", op, M, N, K);
  QT_CHECK(K < kMaxK,
           "{}: K = {} is too large for exact s32 accumulation (K * 255 * 128 must fit in s32, so "
           "K < {}); split K and accumulate in a wider type",
           op, K, kMaxK);
  QT_CHECK(lda >= std::max<int64_t>(1, K),
           "{}: lda = {} is too small for A stored as [{}, {}]; need lda >= {}", op, lda, M, K,
           std::max<int64_t>(1, K));
  QT_CHECK(ldb >= std::max<int64_t>(1, K),
           "{}: ldb = {} is too small for B stored as [{}, {}] (N x K, like a Linear weight); "
           "need ldb >= {}",
           op, ldb, N, K, std::max<int64_t>(1, K));
  QT_CHECK(ldc >= std::max<int64_t>(1, N),
           "{}: ldc = {} is too small for C stored as [{}, {}]; need ldc >= {}", op, ldc, M, N,
           std::max<int64_t>(1, N));
  if (M > 0 && N > 0) {
    QT_CHECK(C != nullptr, "{}: C is null for a [{}, {}] result", op, M, N);
    if (K > 0)
      QT_CHECK(A != nullptr && B != nullptr, "{}: A or B is null (M = {}, N = {}, K = {})", op, M,
               N, K);
  }
}

// Rows [m0, m1) of the product, plain loops. Each dot product is at most K * 32640 in magnitude,
// which the K check keeps inside int32, so the sum itself never overflows.
void reference_rows(int64_t m0, int64_t m1, int64_t N, int64_t K, const uint8_t* A, int64_t lda,
                    const int8_t* B, int64_t ldb, int32_t* C, int64_t ldc, bool accumulate) {
  for (int64_t i = m0; i < m1; ++i) {
    const uint8_t* a = A + i * lda;
    for (int64_t j = 0; j < N; ++j) {
      const int8_t* b = B + j * ldb;
      int32_t sum = 0;
      for (int64_t k = 0; k < K; ++k)
        sum += static_cast<int32_t>(a[k]) * static_cast<int32_t>(b[k]);
      int32_t* c = C + i * ldc + j;
      // Wrapping add (done in uint32, where overflow is defined), as vpaddd does.
      *c = accumulate ? static_cast<int32_t>(static_cast<uint32_t>(*c) + static_cast<uint32_t>(sum))
                      : sum;
    }
  }
}

}  // namespace

int32_t* detail::aligned_int32(size_t count, AlignedInt32& owner) {
  const size_t bytes = std::max<size_t>(64, (count * sizeof(int32_t) + 63) / 64 * 64);
  owner.reset(static_cast<int32_t*>(std::aligned_alloc(64, bytes)));
  if (!owner) fail("gemm_u8s8s32: cannot allocate a {}-byte pack buffer", bytes);
  return owner.get();
}

// Lives here, not in the _avx512 file: the check itself must run on any CPU.
bool detail::int8_vnni_available() {
  static const bool available = cpu::avx512_usable() && __builtin_cpu_supports("avx512vnni");
  return available;
}

bool detail::int8_avx2_available() {
  static const bool available = __builtin_cpu_supports("avx2");
  return available;
}

std::string_view int8_kernel_name() {
  if (detail::int8_vnni_available()) return "avx512-vnni 12x32";
  return detail::int8_avx2_available() ? "avx2 6x16" : "reference";
}

void gemm_u8s8s32_reference(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda,
                            const int8_t* B, int64_t ldb, int32_t* C, int64_t ldc,
                            bool accumulate) {
  check_int8_args("gemm_u8s8s32_reference", M, N, K, A, lda, B, ldb, C, ldc);
  if (M == 0 || N == 0) return;
  reference_rows(0, M, N, K, A, lda, B, ldb, C, ldc, accumulate);
}

void gemm_u8s8s32(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda, const int8_t* B,
                  int64_t ldb, int32_t* C, int64_t ldc, bool accumulate) {
  check_int8_args("gemm_u8s8s32", M, N, K, A, lda, B, ldb, C, ldc);
  const int threads_setting = num_threads();
  if (M == 0 || N == 0) return;
  const int threads = omp_in_parallel() ? 1 : threads_setting;
  if (detail::int8_vnni_available()) {
    detail::gemm_u8s8s32_vnni(M, N, K, A, lda, B, ldb, C, ldc, accumulate, threads);
    return;
  }
  if (detail::int8_avx2_available() && K > 0) {
    detail::gemm_u8s8s32_avx2(M, N, K, A, lda, B, ldb, C, ldc, accumulate, threads);
    return;
  }
  // Neither: the reference loops, rows split across threads (the compiler vectorises the k loop).
  const int64_t row_block = 16;
  const int64_t blocks = (M + row_block - 1) / row_block;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && blocks > 1)
  for (int64_t blk = 0; blk < blocks; ++blk)
    reference_rows(blk * row_block, std::min(M, (blk + 1) * row_block), N, K, A, lda, B, ldb, C,
                   ldc, accumulate);
}

}  // namespace qt::blas

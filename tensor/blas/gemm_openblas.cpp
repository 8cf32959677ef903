// The OpenBLAS backend: a thin adapter from qt::blas conventions to cblas_sgemm (row-major).
// OpenBLAS is the OpenMP build; its thread count is set by qt::set_num_threads / QTLAB_NUM_THREADS
// (tensor/threads.cpp), and inside one of our parallel regions it runs single-threaded.
#include <cblas.h>

#include <climits>

#include "tensor/blas/gemm_internal.h"
#include "tensor/error.h"

namespace qt::blas::detail {

void sgemm_openblas(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                    const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                    int64_t ldc) {
  // cblas takes 32-bit ints (blasint); refuse what would silently truncate.
  for (const int64_t v : {M, N, K, lda, ldb, ldc})
    QT_CHECK(v <= INT_MAX,
             "sgemm (openblas): size or leading dimension {} exceeds the 32-bit BLAS interface "
             "(M = {}, N = {}, K = {}, lda = {}, ldb = {}, ldc = {})",
             v, M, N, K, lda, ldb, ldc);
  cblas_sgemm(CblasRowMajor, trans_a == Trans::yes ? CblasTrans : CblasNoTrans,
              trans_b == Trans::yes ? CblasTrans : CblasNoTrans, static_cast<blasint>(M),
              static_cast<blasint>(N), static_cast<blasint>(K), alpha, A, static_cast<blasint>(lda),
              B, static_cast<blasint>(ldb), beta, C, static_cast<blasint>(ldc));
}

}  // namespace qt::blas::detail

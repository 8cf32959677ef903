// The GEMM front door: argument checks, backend selection, batching, and double precision.
// The float kernels themselves live in gemm_openblas.cpp and gemm_own.cpp (+ _avx512).
#include "tensor/blas/gemm.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <exception>
#include <string>

#include "tensor/blas/gemm_internal.h"
#include "tensor/cpu_features.h"
#include "tensor/error.h"
#include "tensor/threads.h"

namespace qt::blas {
namespace {

// ---- backend selection: -1 = not decided yet (QTLAB_GEMM_BACKEND is read on first use).
std::atomic<int> g_backend{-1};

// The default (QTLAB_GEMM_BACKEND unset): the own kernel where its AVX-512 micro-kernel runs, else
// OpenBLAS. Measured on the AMD EPYC (Zen 5) dev machine, one thread, OpenBLAS with
// OPENBLAS_CORETYPE=Haswell: own 150-190 GFLOP/s against OpenBLAS's ~91 at every transformer shape
// tried (4096 x 256 x 256 in all three transpose forms of a Linear layer, 4096 x 768 x 256, the
// attention core's 128 x 128 x 64 blocks); its AVX2 6 x 16 kernel is not faster than OpenBLAS, so
// AVX2-only machines keep OpenBLAS. The own kernel is also bit-identical for any thread count.
Backend default_backend() {
  return cpu::avx512_usable() ? Backend::own : Backend::openblas;
}

Backend backend_from_environment() {
  const char* text = std::getenv("QTLAB_GEMM_BACKEND");
  if (text == nullptr || *text == '\0') return default_backend();
  const std::string value(text);
  if (value == "openblas") return Backend::openblas;
  if (value == "own") return Backend::own;
  fail("QTLAB_GEMM_BACKEND='{}' is not a GEMM backend (expected 'openblas' or 'own')", value);
}

char trans_char(Trans t) {
  return t == Trans::yes ? 'T' : 'N';
}

// Checks one GEMM's arguments. The stored shapes: A is [M, K] (or [K, M] when transposed), B is
// [K, N] (or [N, K]), C is [M, N]; row-major, so each leading dimension must cover a stored row.
void check_gemm_args(const char* op, Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K,
                     const void* A, int64_t lda, const void* B, int64_t ldb, const void* C,
                     int64_t ldc) {
  QT_CHECK(M >= 0 && N >= 0 && K >= 0, "{}: negative size (M = {}, N = {}, K = {})", op, M, N, K);
  const int64_t a_rows = trans_a == Trans::no ? M : K, a_cols = trans_a == Trans::no ? K : M;
  const int64_t b_rows = trans_b == Trans::no ? K : N, b_cols = trans_b == Trans::no ? N : K;
  QT_CHECK(lda >= std::max<int64_t>(1, a_cols),
           "{}: lda = {} is too small for A stored as [{}, {}] (trans_a = {}); need lda >= {}", op,
           lda, a_rows, a_cols, trans_char(trans_a), std::max<int64_t>(1, a_cols));
  QT_CHECK(ldb >= std::max<int64_t>(1, b_cols),
           "{}: ldb = {} is too small for B stored as [{}, {}] (trans_b = {}); need ldb >= {}", op,
           ldb, b_rows, b_cols, trans_char(trans_b), std::max<int64_t>(1, b_cols));
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

void check_batch_args(const char* op, int64_t stride_a, int64_t stride_b, int64_t stride_c,
                      int64_t batch) {
  QT_CHECK(batch >= 0, "{}: negative batch = {}", op, batch);
  QT_CHECK(stride_a >= 0 && stride_b >= 0 && stride_c >= 0,
           "{}: negative stride (stride_a = {}, stride_b = {}, stride_c = {})", op, stride_a,
           stride_b, stride_c);
  QT_CHECK(stride_c > 0 || batch <= 1,
           "{}: stride_c = 0 with batch = {} would write every product into the same C", op, batch);
}

// C = beta * C for the degenerate products (K == 0 or alpha == 0), where A and B are not read.
// beta == 0 writes zeros without reading C.
template <typename T>
void scale_c(int64_t M, int64_t N, T beta, T* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i) {
    T* row = C + i * ldc;
    if (beta == T(0)) {
      std::fill(row, row + N, T(0));
    } else if (beta != T(1)) {
      for (int64_t j = 0; j < N; ++j) row[j] *= beta;
    }
  }
}

// One float GEMM, arguments already checked. nthreads: team size for the own kernel.
void sgemm_checked(Backend which, Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K,
                   float alpha, const float* A, int64_t lda, const float* B, int64_t ldb,
                   float beta, float* C, int64_t ldc, int nthreads) {
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0.0f) return scale_c(M, N, beta, C, ldc);
  if (which == Backend::openblas) {
    detail::sgemm_openblas(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    detail::sgemm_own(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, nthreads);
  }
}

void dgemm_checked(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, double alpha,
                   const double* A, int64_t lda, const double* B, int64_t ldb, double beta,
                   double* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0.0) return scale_c(M, N, beta, C, ldc);
  for (const int64_t v : {M, N, K, lda, ldb, ldc})
    QT_CHECK(v <= INT_MAX,
             "dgemm: size or leading dimension {} exceeds the 32-bit BLAS interface (M = {}, N = "
             "{}, K = {}, lda = {}, ldb = {}, ldc = {})",
             v, M, N, K, lda, ldb, ldc);
  cblas_dgemm(CblasRowMajor, trans_a == Trans::yes ? CblasTrans : CblasNoTrans,
              trans_b == Trans::yes ? CblasTrans : CblasNoTrans, static_cast<blasint>(M),
              static_cast<blasint>(N), static_cast<blasint>(K), alpha, A, static_cast<blasint>(lda),
              B, static_cast<blasint>(ldb), beta, C, static_cast<blasint>(ldc));
}

// Threads available to a call made from here: 1 inside someone's parallel region (no nesting).
// (num_threads() is called either way: it applies QTLAB_NUM_THREADS on first use.)
int available_threads() {
  const int threads = num_threads();
  return omp_in_parallel() ? 1 : threads;
}

// Batched driver. Two ways to use T threads:
//   - many small products: one product per thread at a time (an OpenMP loop over the batch, each
//     product single-threaded; OpenBLAS also runs single-threaded inside our region), or
//   - few or large products: one after the other, each using all T threads.
// Never both at once, so the machine is never oversubscribed. "Small" means below ~16 MFLOP,
// where splitting one product across threads starts to cost more in synchronisation than it gains.
template <typename Gemm>
void run_batched(int64_t M, int64_t N, int64_t K, int64_t batch, Gemm&& gemm_one) {
  const int threads = available_threads();
  const double flops = 2.0 * static_cast<double>(M) * static_cast<double>(N) * K;
  if (threads > 1 && batch >= threads && flops < 16e6) {
    std::exception_ptr error;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b < batch; ++b) {
      try {
        gemm_one(b, 1);
      } catch (...) {
#pragma omp critical(qt_gemm_batched_error)
        error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
  } else {
    for (int64_t b = 0; b < batch; ++b) gemm_one(b, threads);
  }
}

}  // namespace

void set_backend(Backend which) {
  g_backend.store(static_cast<int>(which));
}

Backend backend() {
  int value = g_backend.load();
  if (value < 0) {
    int expected = -1;
    g_backend.compare_exchange_strong(expected, static_cast<int>(backend_from_environment()));
    value = g_backend.load();
  }
  return static_cast<Backend>(value);
}

std::string_view backend_name(Backend which) {
  switch (which) {
    case Backend::openblas:
      return "openblas";
    case Backend::own:
      return "own";
  }
  return "unknown";
}

void sgemm(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha,
           const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
           int64_t ldc) {
  sgemm_with(backend(), trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void sgemm_with(Backend which, Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K,
                float alpha, const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                float* C, int64_t ldc) {
  check_gemm_args("sgemm", trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc);
  const int threads = available_threads();
  sgemm_checked(which, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, threads);
}

void sgemm_batched(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb,
                   int64_t stride_b, float beta, float* C, int64_t ldc, int64_t stride_c,
                   int64_t batch) {
  check_gemm_args("sgemm_batched", trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc);
  check_batch_args("sgemm_batched", stride_a, stride_b, stride_c, batch);
  if (batch == 0 || M == 0 || N == 0) return;
  const Backend which = backend();
  run_batched(M, N, K, batch, [&](int64_t b, int threads) {
    sgemm_checked(which, trans_a, trans_b, M, N, K, alpha, A + b * stride_a, lda, B + b * stride_b,
                  ldb, beta, C + b * stride_c, ldc, threads);
  });
}

void dgemm(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, double alpha,
           const double* A, int64_t lda, const double* B, int64_t ldb, double beta, double* C,
           int64_t ldc) {
  check_gemm_args("dgemm", trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc);
  num_threads();  // make sure the thread setting is applied before OpenBLAS runs
  dgemm_checked(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void dgemm_batched(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, double alpha,
                   const double* A, int64_t lda, int64_t stride_a, const double* B, int64_t ldb,
                   int64_t stride_b, double beta, double* C, int64_t ldc, int64_t stride_c,
                   int64_t batch) {
  check_gemm_args("dgemm_batched", trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc);
  check_batch_args("dgemm_batched", stride_a, stride_b, stride_c, batch);
  if (batch == 0 || M == 0 || N == 0) return;
  run_batched(M, N, K, batch, [&](int64_t b, int) {
    dgemm_checked(trans_a, trans_b, M, N, K, alpha, A + b * stride_a, lda, B + b * stride_b, ldb,
                  beta, C + b * stride_c, ldc);
  });
}

}  // namespace qt::blas

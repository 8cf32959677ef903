// The BLAS backend layer: general matrix multiply on raw row-major buffers.
//
//   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C[M,N]
//
// op(X) is X or its transpose. Row-major throughout: element (i, j) of a matrix with leading
// dimension ld lives at X[i*ld + j]. With Trans::yes, A is stored as [K, M] (so op(A)[m,k] =
// A[k*lda+m]). When beta == 0, C is overwritten and its old contents are never read (NaNs in C do
// not leak).
//
// Two float implementations behind one interface, selectable at run time (set_backend, or
// QTLAB_GEMM_BACKEND=openblas|own in the environment):
//   Backend::openblas  cblas_sgemm from OpenBLAS (the default on CPUs without AVX-512)
//   Backend::own       the framework's blocked kernel (packing + register-tiled micro-kernel),
//                      the readable one; bit-identical for any thread count. The default on
//                      AVX-512 CPUs, where its 12 x 32 kernel runs ~1.7-2x faster than OpenBLAS
//                      (measurements in gemm.cpp).
// And the integer GEMM used by quantized inference (u8 activations x s8 weights -> s32).
#pragma once

#include <cstdint>
#include <string_view>

namespace qt::blas {

enum class Backend { openblas, own };
enum class Trans { no, yes };

void set_backend(Backend backend);
Backend backend();
std::string_view backend_name(Backend backend);
// The micro-kernels picked for this CPU, e.g. "avx512 12x32" / "avx2 6x16" for the own float GEMM
// and "avx512-vnni 12x32" / "avx2 6x16" / "reference" for gemm_u8s8s32. Setting
// QTLAB_DISABLE_AVX512=1 in the environment forces the AVX2 / portable paths (for testing them on
// AVX-512 machines).
std::string_view own_kernel_name();
std::string_view int8_kernel_name();

// Float GEMM through the selected backend.
void sgemm(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha,
           const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
           int64_t ldc);

// Float GEMM through an explicit backend (benchmarks and cross-checks).
void sgemm_with(Backend backend, Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K,
                float alpha, const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                float* C, int64_t ldc);

// Strided batched float GEMM: for b in [0, batch): the matrices start at A + b*stride_a etc.
// A stride of 0 reuses one matrix for every batch entry (broadcast).
void sgemm_batched(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb,
                   int64_t stride_b, float beta, float* C, int64_t ldc, int64_t stride_c,
                   int64_t batch);

// Double GEMM (references and gradient checks in f64). Same conventions.
void dgemm(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, double alpha,
           const double* A, int64_t lda, const double* B, int64_t ldb, double beta, double* C,
           int64_t ldc);
void dgemm_batched(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, double alpha,
                   const double* A, int64_t lda, int64_t stride_a, const double* B, int64_t ldb,
                   int64_t stride_b, double beta, double* C, int64_t ldc, int64_t stride_c,
                   int64_t batch);

// Integer GEMM, the pairing AVX-512 VNNI's vpdpbusd computes natively:
//   C[M,N] (s32) = A[M,K] (u8, asymmetric activations) * B[N,K]^T (s8, symmetric weights, stored
//   like a Linear weight [out, in])   (+ C if accumulate)
// Exact: every product and sum is an integer; the caller guarantees K * 255 * 128 fits in s32
// (K < 65793), which is checked.
void gemm_u8s8s32(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda, const int8_t* B,
                  int64_t ldb, int32_t* C, int64_t ldc, bool accumulate = false);

// The portable reference kernel of gemm_u8s8s32 (plain loops); gemm_u8s8s32 may dispatch to a
// faster path and must agree with this bit for bit.
void gemm_u8s8s32_reference(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda,
                            const int8_t* B, int64_t ldb, int32_t* C, int64_t ldc,
                            bool accumulate = false);

}  // namespace qt::blas

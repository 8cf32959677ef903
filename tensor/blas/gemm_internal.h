// Private to tensor/blas/: the pieces gemm.cpp dispatches to. Arguments reaching these functions
// are already validated by gemm.cpp (non-negative sizes, large enough leading dimensions,
// M, N > 0), so the kernels themselves check nothing.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>

#include "tensor/blas/gemm.h"

namespace qt::blas::detail {

// ---- float backends (same conventions as qt::blas::sgemm)
void sgemm_openblas(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                    const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                    int64_t ldc);
// nthreads: size of the OpenMP team (1 when called from inside a parallel region).
void sgemm_own(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
               int64_t ldc, int nthreads);

// ---- the own kernel's micro-kernels
//
// A micro-kernel computes one MR x NR tile of C from a packed A micro-panel (kc steps of MR
// floats, one column of the tile's A rows per step) and a packed B micro-panel (kc steps of NR
// floats, one row of the tile's B columns per step):
//   C[i, j] = alpha * sum_k A[k*MR + i] * B[k*NR + j] + beta * C[i, j]   for i < mr, j < nr
// With beta == 0, C is not read. Rows i >= mr and columns j >= nr are computed (from the zero
// padding of the packed panels) but not stored, so edge tiles run exactly the same arithmetic
// as full tiles.
using MicroKernel = void (*)(int64_t kc, const float* A, const float* B, float* C, int64_t ldc,
                             float alpha, float beta, int mr, int nr);

// The blocking of one micro-kernel (see gemm_own.cpp for how the sizes are chosen).
struct OwnKernel {
  const char* name;
  int MR, NR;          // register tile
  int64_t MC, KC, NC;  // cache blocks
  MicroKernel kernel;
};

// The AVX-512 kernel (gemm_own_avx512.cpp). Only call it after checking the CPU.
const OwnKernel& own_kernel_avx512();
// The kernel sgemm_own uses on this CPU (AVX-512 if available, else AVX2 + FMA).
const OwnKernel& own_kernel();

// ---- integer GEMM fast path (gemm_int8_avx512.cpp): one thread's share, rows [m0, m1).
// Pack buffers of the integer GEMMs: `count` int32 values, 64-byte aligned, owned by `owner`;
// throws naming the size when the allocation fails.
struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using AlignedInt32 = std::unique_ptr<int32_t, FreeDeleter>;
int32_t* aligned_int32(size_t count, AlignedInt32& owner);

bool int8_vnni_available();
// gemm_int8_avx2.cpp: exact u8 x s8 through s16 pairs and vpmaddwd, for CPUs without VNNI.
bool int8_avx2_available();
void gemm_u8s8s32_avx2(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda,
                       const int8_t* B, int64_t ldb, int32_t* C, int64_t ldc, bool accumulate,
                       int nthreads);
void gemm_u8s8s32_vnni(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda,
                       const int8_t* B, int64_t ldb, int32_t* C, int64_t ldc, bool accumulate,
                       int nthreads);

}  // namespace qt::blas::detail

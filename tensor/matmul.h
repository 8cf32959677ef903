// Matrix products through the BLAS backend layer (tensor/blas/gemm.h).
#pragma once

#include "tensor/tensor.h"

namespace qt::ops {

// NumPy matmul semantics for rank >= 1: the last two dims multiply ([..., M, K] x [..., K, N]),
// leading (batch) dims broadcast; a rank-1 left operand is treated as [1, K] and a rank-1 right
// operand as [K, 1], and that dim is dropped from the result. f32 and f64.
// Transposed operands (e.g. ops::transpose(w, -1, -2)) are passed to GEMM without a copy.
Tensor matmul(const Tensor& a, const Tensor& b);

}  // namespace qt::ops

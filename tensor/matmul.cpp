// matmul: NumPy matrix-product semantics on top of the BLAS layer (tensor/blas/gemm.h).
//
//   out[b..., m, n] = sum_k a[b..., m, k] * b[b..., k, n]     (batch dims b... broadcast)
//
// How an operand reaches GEMM without a copy. GEMM reads a row-major matrix through a pointer, a
// leading dimension `ld` and a transpose flag. The last two dims of an operand, (rows, cols) with
// strides (s_row, s_col), are
//   - a plain row-major matrix when s_col == 1:                  Trans::no,  ld = s_row
//   - the transpose of a row-major matrix when s_row == 1:       Trans::yes, ld = s_col
//     (this is what ops::transpose(w, -1, -2) produces, e.g. x @ W^T in a Linear layer)
// and anything else (e.g. a stride-0 expanded matrix dim, or a narrowed column of a transposed
// view) is first copied with ops::contiguous. Dims of size 1 may have any stride.
//
// Batches: the batch dims of both operands are broadcast against each other (a broadcast dim gets
// stride 0: one matrix reused). The output is dense, so batch b of C is at b * M * N. The longest
// trailing run of batch dims over which both operands step with one uniform stride is handed to
// sgemm_batched in one call; any leading remainder (irregular strides, e.g. [2,1,3,4] x [5,4,6])
// becomes a loop of such calls. When b is one matrix shared by the whole batch (a Linear weight)
// and a's matrices follow each other in memory, the batch is folded into M: one [batch*M, K] x
// [K, N] GEMM, which is much faster than many small ones.
#include "tensor/matmul.h"

#include <algorithm>
#include <type_traits>

#include "tensor/blas/gemm.h"
#include "tensor/view.h"

namespace qt::ops {

namespace {

// One operand as GEMM sees it: where its first matrix starts, how to read it, and how each batch
// dim of the (broadcast) output steps through it.
struct GemmOperand {
  Tensor tensor;  // the tensor whose memory is read (the input, or a contiguous copy of it)
  blas::Trans trans = blas::Trans::no;
  int64_t ld = 1;
  Shape batch_strides;  // one per output batch dim; 0 where this operand is broadcast
};

// Leading dimension for Trans::no, or 0 if the last two dims are not a row-major matrix.
int64_t row_major_ld(int64_t rows, int64_t cols, int64_t s_row, int64_t s_col) {
  if (cols > 1 && s_col != 1) return 0;
  const int64_t ld = rows <= 1 ? std::max<int64_t>(1, cols) : s_row;
  return ld >= std::max<int64_t>(1, cols) ? ld : 0;
}

GemmOperand make_operand(const Tensor& t, const Shape& out_batch) {
  GemmOperand operand;
  const int64_t rank = t.dim();
  const int64_t rows = t.shape()[rank - 2], cols = t.shape()[rank - 1];
  const int64_t s_row = t.strides()[rank - 2], s_col = t.strides()[rank - 1];
  operand.tensor = t;
  if (const int64_t ld = row_major_ld(rows, cols, s_row, s_col); ld > 0 && t.numel() > 0) {
    operand.trans = blas::Trans::no;
    operand.ld = ld;
  } else if (const int64_t ld_t = row_major_ld(cols, rows, s_col, s_row);
             ld_t > 0 && t.numel() > 0) {
    // The stored matrix is [cols, rows] row-major: (i, j) at j * ld_t + i.
    operand.trans = blas::Trans::yes;
    operand.ld = ld_t;
  } else {
    operand.tensor = contiguous(t);
    operand.trans = blas::Trans::no;
    operand.ld = std::max<int64_t>(1, cols);
  }
  // Batch strides aligned on the right with the output's batch dims.
  const int64_t batch_rank = static_cast<int64_t>(out_batch.size());
  const int64_t own_batch_rank = rank - 2;
  operand.batch_strides.assign(out_batch.size(), 0);
  for (int64_t d = 0; d < own_batch_rank; ++d) {
    const int64_t out_d = batch_rank - own_batch_rank + d;
    if (t.shape()[d] != 1) operand.batch_strides[out_d] = operand.tensor.strides()[d];
  }
  return operand;
}

// Product of sizes[first..end).
int64_t product_from(const Shape& sizes, size_t first) {
  int64_t p = 1;
  for (size_t d = first; d < sizes.size(); ++d) p *= sizes[d];
  return p;
}

// True when the batch dims [first, end) step with one stride: stride[d] == stride[d+1] * size[d+1].
bool uniform_strides(const Shape& sizes, const Shape& strides, size_t first) {
  for (size_t d = first; d + 1 < sizes.size(); ++d)
    if (strides[d] != strides[d + 1] * sizes[d + 1]) return false;
  return true;
}

template <typename T>
void gemm_batched(blas::Trans ta, blas::Trans tb, int64_t M, int64_t N, int64_t K, const T* A,
                  int64_t lda, int64_t stride_a, const T* B, int64_t ldb, int64_t stride_b, T* C,
                  int64_t ldc, int64_t stride_c, int64_t batch) {
  if constexpr (std::is_same_v<T, float>) {
    blas::sgemm_batched(ta, tb, M, N, K, 1.0f, A, lda, stride_a, B, ldb, stride_b, 0.0f, C, ldc,
                        stride_c, batch);
  } else {
    blas::dgemm_batched(ta, tb, M, N, K, 1.0, A, lda, stride_a, B, ldb, stride_b, 0.0, C, ldc,
                        stride_c, batch);
  }
}

template <typename T>
void run_matmul(const GemmOperand& a, const GemmOperand& b, Tensor& out, Shape batch_sizes,
                int64_t M, int64_t N, int64_t K) {
  Shape a_strides = a.batch_strides, b_strides = b.batch_strides;
  // Size-1 batch dims never move a pointer: drop them so they cannot break uniformity.
  for (size_t d = batch_sizes.size(); d-- > 0;) {
    if (batch_sizes[d] == 1) {
      batch_sizes.erase(batch_sizes.begin() + d);
      a_strides.erase(a_strides.begin() + d);
      b_strides.erase(b_strides.begin() + d);
    }
  }
  // Split the batch dims into a looped prefix [0, split) and a uniform suffix [split, end).
  size_t split = batch_sizes.size();
  while (split > 0 && uniform_strides(batch_sizes, a_strides, split - 1) &&
         uniform_strides(batch_sizes, b_strides, split - 1))
    --split;
  const bool has_suffix = split < batch_sizes.size();
  const int64_t suffix_batch = product_from(batch_sizes, split);
  const int64_t stride_a = has_suffix ? a_strides.back() : 0;
  const int64_t stride_b = has_suffix ? b_strides.back() : 0;
  const int64_t stride_c = M * N;
  const Shape prefix_sizes(batch_sizes.begin(), batch_sizes.begin() + split);
  const int64_t prefix_count = product_from(prefix_sizes, 0);

  const T* A = a.tensor.data<T>();
  const T* B = b.tensor.data<T>();
  T* C = out.data<T>();
  for (int64_t p = 0; p < prefix_count; ++p) {
    // Offsets of this prefix multi-index (row-major over prefix_sizes).
    int64_t offset_a = 0, offset_b = 0, remaining = p;
    for (size_t d = split; d-- > 0;) {
      const int64_t i = remaining % prefix_sizes[d];
      remaining /= prefix_sizes[d];
      offset_a += i * a_strides[d];
      offset_b += i * b_strides[d];
    }
    const T* a_first = A + offset_a;
    const T* b_first = B + offset_b;
    T* c_first = C + p * suffix_batch * stride_c;
    // A shared right operand and back-to-back left matrices: fold the batch into M.
    if (suffix_batch > 1 && stride_b == 0 && a.trans == blas::Trans::no && stride_a == M * a.ld) {
      gemm_batched<T>(a.trans, b.trans, suffix_batch * M, N, K, a_first, a.ld, 0, b_first, b.ld, 0,
                      c_first, N, 0, 1);
    } else {
      gemm_batched<T>(a.trans, b.trans, M, N, K, a_first, a.ld, stride_a, b_first, b.ld, stride_b,
                      c_first, N, stride_c, suffix_batch);
    }
  }
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  check_floating(a, "matmul");
  check_floating(b, "matmul");
  check_same_dtype(a, b, "matmul");
  QT_CHECK(a.dim() >= 1 && b.dim() >= 1,
           "matmul: operands must have rank >= 1, got shapes {} and {}", shape_str(a.shape()),
           shape_str(b.shape()));
  // Rank-1 operands: a as a row [1, K], b as a column [K, 1]; that dim is dropped at the end.
  const Tensor a2 = a.dim() == 1 ? unsqueeze(a, 0) : a;
  const Tensor b2 = b.dim() == 1 ? unsqueeze(b, -1) : b;
  const int64_t M = a2.size(-2), K = a2.size(-1), N = b2.size(-1);
  QT_CHECK(b2.size(-2) == K,
           "matmul: shapes {} and {} do not match: the left operand has {} columns, the right "
           "operand {} rows",
           shape_str(a.shape()), shape_str(b.shape()), K, b2.size(-2));
  const Shape a_batch(a2.shape().begin(), a2.shape().end() - 2);
  const Shape b_batch(b2.shape().begin(), b2.shape().end() - 2);
  const size_t batch_rank = std::max(a_batch.size(), b_batch.size());
  Shape out_batch(batch_rank);
  for (size_t i = 0; i < batch_rank; ++i) {
    const int64_t da =
        i < batch_rank - a_batch.size() ? 1 : a_batch[i - (batch_rank - a_batch.size())];
    const int64_t db =
        i < batch_rank - b_batch.size() ? 1 : b_batch[i - (batch_rank - b_batch.size())];
    QT_CHECK(da == db || da == 1 || db == 1,
             "matmul: the batch dims of shapes {} and {} cannot be broadcast together",
             shape_str(a.shape()), shape_str(b.shape()));
    out_batch[i] = da == 1 ? db : da;
  }

  Shape out_shape = out_batch;
  out_shape.push_back(M);
  out_shape.push_back(N);
  Tensor out = Tensor::empty(out_shape, a.dtype());
  if (out.numel() > 0) {
    const GemmOperand left = make_operand(a2, out_batch);
    const GemmOperand right = make_operand(b2, out_batch);
    if (a.dtype() == DType::f32) {
      run_matmul<float>(left, right, out, out_batch, M, N, K);
    } else {
      run_matmul<double>(left, right, out, out_batch, M, N, K);
    }
  }

  // Drop the dims that stood in for rank-1 operands.
  Shape result_shape = out_batch;
  if (a.dim() > 1) result_shape.push_back(M);
  if (b.dim() > 1) result_shape.push_back(N);
  return result_shape == out_shape ? out : view(out, result_shape);
}

}  // namespace qt::ops

// Differentiable matrix product (NumPy matmul semantics, see tensor/matmul.h).
#include "autograd/functions.h"

namespace qt {

// C = A B with A [..., M, K], B [..., K, N]:  dL/dA = dL/dC B^T,  dL/dB = A^T dL/dC.
// (C_mn = sum_k A_mk B_kn, so dL/dA_mk = sum_n dL/dC_mn B_kn and dL/dB_kn = sum_m A_mk dL/dC_mn.)
//
// The NumPy conventions are undone first: a rank-1 A is a [1, K] matrix and a rank-1 B a [K, 1]
// matrix whose extra dim was dropped from C, so that dim is put back into the gradient. Batch dims
// broadcast, so each operand's gradient is summed back over the batch dims it was broadcast along.
//
// dL/dA needs only B and dL/dB only A, so each operand is kept for the backward pass only when the
// other one requires grad (a frozen weight does not keep the activations alive, and vice versa).
Tensor matmul(const Tensor& a, const Tensor& b) {
  Tensor result = ops::matmul(a, b);  // validates shapes and dtypes
  if (!any_requires_grad({a, b})) return result;
  const Tensor a_saved = b.requires_grad() ? a.detach() : Tensor();
  const Tensor b_saved = a.requires_grad() ? b.detach() : Tensor();
  return record(result, "matmul", {a, b},
                [a = a_saved, b = b_saved, a_shape = a.shape(), b_shape = b.shape()](
                    const Tensor& grad, const std::vector<bool>& needs) -> std::vector<Tensor> {
                  // Matrix forms: A [..., M, K], B [..., K, N], grad [batch..., M, N].
                  const bool a_is_vector = a_shape.size() == 1, b_is_vector = b_shape.size() == 1;
                  Tensor grad2 = grad;
                  if (a_is_vector) grad2 = ops::unsqueeze(grad2, grad2.dim() == 0 ? 0 : -2);
                  if (b_is_vector) grad2 = ops::unsqueeze(grad2, -1);

                  std::vector<Tensor> grads(2);
                  if (needs[0]) {
                    // dL/dA = dL/dC B^T, summed over broadcast batch dims, reshaped back to A's
                    // rank.
                    const Tensor b2 = b_is_vector ? ops::unsqueeze(b, 1) : b;
                    const Shape a2_shape = a_is_vector ? Shape{1, a_shape[0]} : a_shape;
                    const Tensor full = ops::matmul(grad2, ops::transpose(b2, -1, -2));
                    grads[0] = ops::reshape(ops::sum_to_shape(full, a2_shape), a_shape);
                  }
                  if (needs[1]) {
                    // dL/dB = A^T dL/dC, summed over broadcast batch dims, reshaped back to B's
                    // rank.
                    const Tensor a2 = a_is_vector ? ops::unsqueeze(a, 0) : a;
                    const Shape b2_shape = b_is_vector ? Shape{b_shape[0], 1} : b_shape;
                    Tensor full;
                    if (b2_shape.size() == 2 && a2.dim() > 2) {
                      // Weights shared by every batch element (the Linear layer case): the batch
                      // sum is part of one GEMM over all rows, sum_rows A_rk dL/dC_rn, instead of
                      // one product per batch element followed by a sum.
                      const int64_t k = a2.shape().back(), n = grad2.shape().back();
                      full = ops::matmul(ops::transpose(ops::reshape(a2, {-1, k}), 0, 1),
                                         ops::reshape(grad2, {-1, n}));
                    } else {
                      full = ops::matmul(ops::transpose(a2, -1, -2), grad2);
                    }
                    grads[1] = ops::reshape(ops::sum_to_shape(full, b2_shape), b_shape);
                  }
                  return grads;
                });
}

}  // namespace qt

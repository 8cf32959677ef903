// Differentiable softmax and log_softmax along one axis.
#include "autograd/functions.h"

namespace qt {

// y_i = exp(x_i) / sum_j exp(x_j):  dy_i/dx_k = y_i (delta_ik - y_k), so
//   dL/dx_k = sum_i dL/dy_i y_i (delta_ik - y_k) = y_k (dL/dy_k - sum_i dL/dy_i y_i).
// Only the output is needed; the fused kernel is ops::softmax_backward.
Tensor softmax(const Tensor& x, int64_t axis) {
  Tensor result = ops::softmax(x, axis);
  return record(result, "softmax", {x},
                [y = result.detach(), axis](const Tensor& grad, const std::vector<bool>&)
                    -> std::vector<Tensor> { return {ops::softmax_backward(grad, y, axis)}; });
}

// y_i = x_i - log sum_j exp(x_j):  dy_i/dx_k = delta_ik - softmax_k = delta_ik - exp(y_k), so
//   dL/dx_k = dL/dy_k - exp(y_k) sum_i dL/dy_i.
Tensor log_softmax(const Tensor& x, int64_t axis) {
  Tensor result = ops::log_softmax(x, axis);
  return record(result, "log_softmax", {x},
                [y = result.detach(), axis](const Tensor& grad, const std::vector<bool>&)
                    -> std::vector<Tensor> { return {ops::log_softmax_backward(grad, y, axis)}; });
}

}  // namespace qt

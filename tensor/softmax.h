// softmax and log_softmax along one axis, computed stably: softmax(x)_i = exp(x_i - m) / sum_j
// exp(x_j - m) with m = max_j x_j, so no exp overflows; log_softmax(x)_i = x_i - m - log(sum_j
// exp(x_j - m)).
#pragma once

#include "tensor/tensor.h"

namespace qt::ops {

Tensor softmax(const Tensor& x, int64_t axis = -1);
Tensor log_softmax(const Tensor& x, int64_t axis = -1);

// Backward passes, given the forward output y:
//   softmax:     dx = y * (dy - sum(dy * y))
//   log_softmax: dx = dy - exp(y) * sum(dy)
Tensor softmax_backward(const Tensor& grad, const Tensor& y, int64_t axis = -1);
Tensor log_softmax_backward(const Tensor& grad, const Tensor& y, int64_t axis = -1);

}  // namespace qt::ops

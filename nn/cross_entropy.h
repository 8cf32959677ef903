// Cross-entropy from logits, fused with log-softmax (one pass forward, closed-form backward),
// as torch.nn.functional.cross_entropy(logits, target, ignore_index, label_smoothing, 'mean'):
//   logp = log_softmax(z)
//   loss_i = -(1 - s) * logp[t_i] - (s / C) * sum_c logp[c]     (s = label smoothing, C classes)
//   loss = mean of loss_i over rows with t_i != ignore_index (0 rows -> NaN, as PyTorch)
// Backward: dz_i = (softmax(z_i) - (1 - s) * onehot(t_i) - s / C) / n_valid for valid rows, 0 else.
#pragma once

#include <cstdint>

#include "tensor/tensor.h"

namespace qt::nn {

// logits [N, C] (f32/f64), target [N] (i32/i64). A target outside [0, C) that is not the
// ignore_index throws. Returns a scalar.
Tensor cross_entropy(const Tensor& logits, const Tensor& target, int64_t ignore_index = -100,
                     double label_smoothing = 0.0);

}  // namespace qt::nn

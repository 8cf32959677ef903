// Reductions over any set of axes, with keepdim (the reduced axes stay as size 1).
// An empty `axes` list means "all axes". Axes may be negative.
//
// Determinism: a reduction splits its work into fixed-size chunks whose partial results are
// combined in a fixed order, so the result is bit-identical whatever the number of threads.
#pragma once

#include <vector>

#include "tensor/tensor.h"

namespace qt::ops {

using Axes = std::vector<int64_t>;

Tensor sum(const Tensor& x, const Axes& axes = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const Axes& axes = {}, bool keepdim = false);
Tensor max(const Tensor& x, const Axes& axes = {}, bool keepdim = false);
Tensor min(const Tensor& x, const Axes& axes = {}, bool keepdim = false);
// Population variance by default (correction 0); correction 1 gives the unbiased estimate.
Tensor var(const Tensor& x, const Axes& axes = {}, bool keepdim = false, int64_t correction = 0);
// Index (i64) of the first maximum along one axis.
Tensor argmax(const Tensor& x, int64_t axis, bool keepdim = false);

// Sums `grad` down to `shape` over the axes that broadcasting expanded: the backward of
// broadcasting.
Tensor sum_to_shape(const Tensor& grad, const Shape& shape);

}  // namespace qt::ops

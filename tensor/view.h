// Views: new Tensor handles over the same storage with a different shape/strides/offset.
// Nothing is copied, except by contiguous()/clone()/reshape() when the layout demands it.
// Plain kernels (no autograd); the differentiable versions are in autograd/functions.h.
#pragma once

#include <vector>

#include "tensor/tensor.h"

namespace qt::ops {

// Same elements, new shape; one size may be -1 (inferred). Needs a layout that allows it without
// copying (always true for contiguous tensors); otherwise throws and says to use reshape.
Tensor view(const Tensor& t, Shape shape);
// Like view, but copies into a contiguous tensor when a view is impossible.
Tensor reshape(const Tensor& t, Shape shape);
// Reorders dimensions: result dim i is input dim order[i].
Tensor permute(const Tensor& t, const std::vector<int64_t>& order);
Tensor transpose(const Tensor& t, int64_t axis_a, int64_t axis_b);
// Elements [start, start+length) along axis.
Tensor narrow(const Tensor& t, int64_t axis, int64_t start, int64_t length);
// Index `index` along axis; the axis is removed.
Tensor select(const Tensor& t, int64_t axis, int64_t index);
// Broadcasts size-1 (or missing leading) dims to `shape` with stride 0 (NumPy rules).
Tensor expand(const Tensor& t, const Shape& shape);
inline Tensor broadcast_to(const Tensor& t, const Shape& shape) {
  return expand(t, shape);
}
Tensor squeeze(const Tensor& t, int64_t axis);    // axis must have size 1
Tensor unsqueeze(const Tensor& t, int64_t axis);  // axis in [-(rank+1), rank]
// Collapses dims [start, end] into one (end inclusive; -1 = last).
Tensor flatten(const Tensor& t, int64_t start = 0, int64_t end = -1);

// A dense row-major tensor with the same elements: `t` itself when already contiguous.
Tensor contiguous(const Tensor& t);
// Always a fresh dense copy.
Tensor clone(const Tensor& t);
// Copies src's elements into dst (same shape, same dtype; dst may be a strided view).
void copy_into(const Tensor& dst, const Tensor& src);

}  // namespace qt::ops

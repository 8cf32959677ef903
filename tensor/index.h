// Joining and indexing.
#pragma once

#include <vector>

#include "tensor/tensor.h"

namespace qt::ops {

// Joins tensors along an existing axis (all other dims equal).
Tensor cat(const std::vector<Tensor>& tensors, int64_t axis);
// Joins along a new axis (all shapes equal).
Tensor stack(const std::vector<Tensor>& tensors, int64_t axis);

// out[i][j][k] = x[i][index[i][j][k]][k] for axis 1 (torch.gather): index (i64) has x's rank,
// its size may be smaller than x's on any dim.
Tensor gather(const Tensor& x, int64_t axis, const Tensor& index);
// Backward of gather: zeros of `shape`, then out[... index ...] += grad.
Tensor scatter_add(const Shape& shape, int64_t axis, const Tensor& index, const Tensor& grad);

// Picks whole slices: out has x's shape with dim `axis` replaced by index.numel() (index: rank-1
// i64).
Tensor index_select(const Tensor& x, int64_t axis, const Tensor& index);
// Backward of index_select: zeros of `shape`, then slices are accumulated at their index.
Tensor index_add(const Shape& shape, int64_t axis, const Tensor& index, const Tensor& grad);

// Embedding lookup: table [V, D], ids (i64, any shape) -> [*ids.shape, D]. Ids out of [0, V) are an
// error.
Tensor embedding(const Tensor& table, const Tensor& ids);
// Backward: a [V, D] gradient where row v accumulates the grads of every position with id v.
Tensor embedding_backward(const Tensor& grad, const Tensor& ids, int64_t vocab_size);

// ids (i64, any shape) -> [*ids.shape, num_classes] of 0/1 in `dtype`.
Tensor one_hot(const Tensor& ids, int64_t num_classes, DType dtype = DType::f32);

}  // namespace qt::ops

// Differentiable joining (cat, stack) and indexing (gather, index_select, embedding).
//
// Joining places each input in its own slice of the output, so each input's gradient is its slice
// of the output gradient. Indexing reads input elements (possibly the same one several times), so
// its gradient scatters the output gradient back, adding where an element was read more than once:
// gather -> scatter_add, index_select -> index_add, embedding -> embedding_backward.
// Index tensors are integers and carry no gradient; they are not inputs of the recorded node.
#include "autograd/functions.h"

namespace qt {

// y = [x_0, x_1, ...] along `axis`: dL/dx_i = dL/dy[..., offset_i : offset_i + size_i, ...].
Tensor cat(const std::vector<Tensor>& tensors, int64_t axis) {
  Tensor result = ops::cat(tensors, axis);  // validates the shapes and the axis
  const int64_t joined_axis = normalize_axis(axis, tensors.front().dim(), "cat");
  std::vector<int64_t> sizes;
  for (const Tensor& t : tensors) sizes.push_back(t.shape()[joined_axis]);
  return record(result, "cat", tensors,
                [joined_axis, sizes](const Tensor& grad,
                                     const std::vector<bool>& needs) -> std::vector<Tensor> {
                  std::vector<Tensor> grads(sizes.size());
                  int64_t offset = 0;
                  for (size_t i = 0; i < sizes.size(); ++i) {
                    if (needs[i]) grads[i] = ops::narrow(grad, joined_axis, offset, sizes[i]);
                    offset += sizes[i];
                  }
                  return grads;
                });
}

// y[..., i, ...] = x_i along a new `axis`: dL/dx_i = dL/dy[..., i, ...].
Tensor stack(const std::vector<Tensor>& tensors, int64_t axis) {
  Tensor result = ops::stack(tensors, axis);
  const int64_t new_axis = normalize_axis(axis, tensors.front().dim() + 1, "stack");
  return record(result, "stack", tensors,
                [new_axis, count = tensors.size()](
                    const Tensor& grad, const std::vector<bool>& needs) -> std::vector<Tensor> {
                  std::vector<Tensor> grads(count);
                  for (size_t i = 0; i < count; ++i)
                    if (needs[i]) grads[i] = ops::select(grad, new_axis, static_cast<int64_t>(i));
                  return grads;
                });
}

// y[i][j][k] = x[i][index[i][j][k]][k] (axis 1): dL/dx[i][m][k] = sum over j with index[i][j][k] =
// m of dL/dy[i][j][k], which is ops::scatter_add.
Tensor gather(const Tensor& x, int64_t axis, const Tensor& index) {
  return record(ops::gather(x, axis, index), "gather", {x},
                [input_shape = x.shape(), axis, index](
                    const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
                  return {ops::scatter_add(input_shape, axis, index, grad)};
                });
}

// y = the slices x[..., index[j], ...]: dL/dx slice m = sum over j with index[j] = m of dL/dy slice
// j.
Tensor index_select(const Tensor& x, int64_t axis, const Tensor& index) {
  return record(ops::index_select(x, axis, index), "index_select", {x},
                [input_shape = x.shape(), axis, index](
                    const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
                  return {ops::index_add(input_shape, axis, index, grad)};
                });
}

// y[p] = table[ids[p]]: dL/dtable[v] = sum over positions p with ids[p] = v of dL/dy[p].
Tensor embedding(const Tensor& table, const Tensor& ids) {
  return record(ops::embedding(table, ids), "embedding", {table},
                [ids, vocab_size = table.shape()[0]](
                    const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
                  return {ops::embedding_backward(grad, ids, vocab_size)};
                });
}

}  // namespace qt

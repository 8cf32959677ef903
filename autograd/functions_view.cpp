// Differentiable views and dtype conversion.
//
// A view only rearranges (or repeats, for expand) the elements of its input, so its backward is the
// inverse rearrangement applied to the gradient: every output element y_j is some input element
// x_{p(j)}, hence dL/dx_i = sum over { j : p(j) = i } of dL/dy_j. For reshape-like views p is a
// bijection and the gradient is simply reshaped back; for narrow/select the elements outside the
// view get 0; for expand the repeated elements get the sum of their copies' gradients.
//
// Closures capture shapes and indices only, never the result tensor (see autograd/node.h).
#include "autograd/functions.h"

namespace qt {

namespace {

// The gradient of any view that keeps every element exactly once: reshape it back.
BackwardFunction reshape_back(const Shape& input_shape) {
  return [input_shape](const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
    return {ops::reshape(grad, input_shape)};
  };
}

}  // namespace

// y = x viewed with another shape: dL/dx = reshape(dL/dy, x.shape).
Tensor view(const Tensor& t, Shape shape) {
  return record(ops::view(t, std::move(shape)), "view", {t}, reshape_back(t.shape()));
}

Tensor reshape(const Tensor& t, Shape shape) {
  return record(ops::reshape(t, std::move(shape)), "reshape", {t}, reshape_back(t.shape()));
}

// y = permute(x, order): y dim i is x dim order[i], so x dim order[i] is y dim i, i.e. the inverse
// permutation inverse[order[i]] = i takes the gradient back to x's layout.
Tensor permute(const Tensor& t, const std::vector<int64_t>& order) {
  Tensor result = ops::permute(t, order);  // validates `order`
  std::vector<int64_t> inverse(order.size());
  for (size_t i = 0; i < order.size(); ++i)
    inverse[normalize_axis(order[i], t.dim(), "permute")] = static_cast<int64_t>(i);
  return record(result, "permute", {t},
                [inverse](const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
                  return {ops::permute(grad, inverse)};
                });
}

// A transposition is its own inverse.
Tensor transpose(const Tensor& t, int64_t axis_a, int64_t axis_b) {
  return record(
      ops::transpose(t, axis_a, axis_b), "transpose", {t},
      [axis_a, axis_b](const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
        return {ops::transpose(grad, axis_a, axis_b)};
      });
}

// y = x[..., start:start+length, ...]: dL/dx is zero outside the range, dL/dy inside it.
Tensor narrow(const Tensor& t, int64_t axis, int64_t start, int64_t length) {
  Tensor result = ops::narrow(t, axis, start, length);
  const Shape input_shape = t.shape();
  return record(result, "narrow", {t},
                [input_shape, axis, start, length](
                    const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
                  Tensor input_grad = ops::zeros(input_shape, grad.dtype());
                  ops::copy_into(ops::narrow(input_grad, axis, start, length), grad);
                  return {input_grad};
                });
}

// y = x[..., index, ...] (axis removed): dL/dx is zero except in slice `index`, which is dL/dy.
Tensor select(const Tensor& t, int64_t axis, int64_t index) {
  Tensor result = ops::select(t, axis, index);  // validates axis and index (negative allowed)
  const Shape input_shape = t.shape();
  return record(result, "select", {t},
                [input_shape, axis, index](const Tensor& grad,
                                           const std::vector<bool>&) -> std::vector<Tensor> {
                  Tensor input_grad = ops::zeros(input_shape, grad.dtype());
                  ops::copy_into(ops::select(input_grad, axis, index), grad);
                  return {input_grad};
                });
}

// y = broadcast of x: every x element is read by all its copies, so its gradient is the sum of
// theirs, taken over the expanded axes (sum_to_shape is exactly the adjoint of broadcasting).
Tensor expand(const Tensor& t, const Shape& shape) {
  const Shape input_shape = t.shape();
  return record(ops::expand(t, shape), "expand", {t},
                [input_shape](const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
                  return {ops::sum_to_shape(grad, input_shape)};
                });
}

Tensor squeeze(const Tensor& t, int64_t axis) {
  return record(ops::squeeze(t, axis), "squeeze", {t}, reshape_back(t.shape()));
}

Tensor unsqueeze(const Tensor& t, int64_t axis) {
  return record(ops::unsqueeze(t, axis), "unsqueeze", {t}, reshape_back(t.shape()));
}

Tensor flatten(const Tensor& t, int64_t start, int64_t end) {
  return record(ops::flatten(t, start, end), "flatten", {t}, reshape_back(t.shape()));
}

// Same values, another layout: the gradient passes through unchanged.
Tensor contiguous(const Tensor& t) {
  return record(
      ops::contiguous(t), "contiguous", {t},
      [](const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> { return {grad}; });
}

// y = x converted to `dtype`. Between f32 and f64 the conversion is (up to rounding) the identity,
// so dL/dx = dL/dy converted back to x's dtype. A conversion to an integer dtype is a step function
// (derivative 0 almost everywhere) and cannot carry a gradient: it is not recorded.
Tensor to(const Tensor& t, DType dtype) {
  Tensor result = ops::to(t, dtype);
  if (!is_floating(dtype) || !is_floating(t.dtype())) return result;
  const DType input_dtype = t.dtype();
  return record(result, "to", {t},
                [input_dtype](const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
                  return {ops::to(grad, input_dtype)};
                });
}

}  // namespace qt

// Differentiable ops (namespace qt): the same ops as qt::ops, but each one records a Node (see
// autograd/node.h) when an input requires grad, so that backward() can differentiate through it.
// Each implementation file in autograd/ holds an op's forward call and its backward formula side by
// side. Non-differentiable ops (comparisons, argmax, one_hot, creation) are used from qt::ops
// directly.
#pragma once

#include <vector>

#include "autograd/engine.h"
#include "autograd/node.h"
#include "tensor/ops.h"

namespace qt {

using ops::Axes;

// ---- views (gradients flow back into the viewed tensor's shape)
Tensor view(const Tensor& t, Shape shape);
Tensor reshape(const Tensor& t, Shape shape);
Tensor permute(const Tensor& t, const std::vector<int64_t>& order);
Tensor transpose(const Tensor& t, int64_t axis_a, int64_t axis_b);
Tensor narrow(const Tensor& t, int64_t axis, int64_t start, int64_t length);
Tensor select(const Tensor& t, int64_t axis, int64_t index);
Tensor expand(const Tensor& t, const Shape& shape);
Tensor squeeze(const Tensor& t, int64_t axis);
Tensor unsqueeze(const Tensor& t, int64_t axis);
Tensor flatten(const Tensor& t, int64_t start = 0, int64_t end = -1);
Tensor contiguous(const Tensor& t);
Tensor to(const Tensor& t, DType dtype);  // differentiable between f32 and f64

// ---- elementwise
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor erf(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);  // gradient 0 at x == 0
Tensor gelu(const Tensor& x);
Tensor abs(const Tensor& x);  // gradient 0 at x == 0
// Gradient passes where low <= x <= high (boundaries included, as PyTorch's clamp), 0 outside.
Tensor clamp(const Tensor& x, double low, double high);
Tensor pow(const Tensor& x, double exponent);
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, const Tensor& b);  // gradient wrt b uses log(a): a must be > 0 there
Tensor maximum(const Tensor& a, const Tensor& b);  // ties split the gradient evenly
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b);
Tensor add(const Tensor& x, double value);
Tensor mul(const Tensor& x, double value);

// ---- reductions (max/min: ties split the gradient evenly, like torch.amax)
Tensor sum(const Tensor& x, const Axes& axes = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const Axes& axes = {}, bool keepdim = false);
Tensor max(const Tensor& x, const Axes& axes = {}, bool keepdim = false);
Tensor min(const Tensor& x, const Axes& axes = {}, bool keepdim = false);
Tensor var(const Tensor& x, const Axes& axes = {}, bool keepdim = false, int64_t correction = 0);

// ---- softmax, matmul, joining, indexing
Tensor softmax(const Tensor& x, int64_t axis = -1);
Tensor log_softmax(const Tensor& x, int64_t axis = -1);
Tensor matmul(const Tensor& a, const Tensor& b);
Tensor cat(const std::vector<Tensor>& tensors, int64_t axis);
Tensor stack(const std::vector<Tensor>& tensors, int64_t axis);
Tensor gather(const Tensor& x, int64_t axis, const Tensor& index);
Tensor index_select(const Tensor& x, int64_t axis, const Tensor& index);
Tensor embedding(const Tensor& table, const Tensor& ids);

// ---- operators (differentiable)
inline Tensor operator+(const Tensor& a, const Tensor& b) {
  return add(a, b);
}
inline Tensor operator-(const Tensor& a, const Tensor& b) {
  return sub(a, b);
}
inline Tensor operator*(const Tensor& a, const Tensor& b) {
  return mul(a, b);
}
inline Tensor operator/(const Tensor& a, const Tensor& b) {
  return div(a, b);
}
inline Tensor operator-(const Tensor& x) {
  return neg(x);
}
inline Tensor operator+(const Tensor& x, double v) {
  return add(x, v);
}
inline Tensor operator+(double v, const Tensor& x) {
  return add(x, v);
}
inline Tensor operator-(const Tensor& x, double v) {
  return add(x, -v);
}
inline Tensor operator-(double v, const Tensor& x) {
  return add(neg(x), v);
}
inline Tensor operator*(const Tensor& x, double v) {
  return mul(x, v);
}
inline Tensor operator*(double v, const Tensor& x) {
  return mul(x, v);
}
inline Tensor operator/(const Tensor& x, double v) {
  return mul(x, 1.0 / v);
}

}  // namespace qt

// Differentiable elementwise ops: each forward kernel call sits beside its backward formula.
//
// Unary ops: y = f(x) elementwise, so dL/dx = dL/dy * f'(x).
// Binary ops broadcast: z = f(a, b) with a and b expanded to z's shape. The chain rule gives the
// gradient for the expanded operand, dL/dz * df/da, and since an expanded element is read by all
// its copies, its gradient is the sum over those copies: ops::sum_to_shape(.., a.shape()).
//
// Closures capture the inputs and the result detached (data only, no graph), never the result
// tensor itself: that would make result -> Node -> closure -> result, a cycle that never frees.
#include <cmath>
#include <numbers>

#include "autograd/functions.h"

namespace qt {

namespace {

// A u8 0/1 mask as 0.0/1.0 in `dtype`, so that it can multiply a gradient.
Tensor mask_as(const Tensor& mask, DType dtype) {
  return ops::to(mask, dtype);
}

// A rank-0 tensor holding `value`, broadcast against anything.
Tensor constant(double value, DType dtype) {
  return ops::scalar(value, dtype);
}

// The backward of a unary op whose derivative is given by `derivative(x, y)` (x the input,
// y the output, both detached): dL/dx = dL/dy * derivative.
template <typename Derivative>
Tensor record_unary(const Tensor& x, Tensor result, const char* name, Derivative derivative) {
  if (!any_requires_grad({x})) return result;
  return record(result, name, {x},
                [x = x.detach(), y = result.detach(), derivative](
                    const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
                  return {ops::mul(grad, derivative(x, y))};
                });
}

}  // namespace

// d/dx (-x) = -1
Tensor neg(const Tensor& x) {
  return record(ops::neg(x), "neg", {x},
                [](const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
                  return {ops::neg(grad)};
                });
}

// d/dx exp(x) = exp(x) = y
Tensor exp(const Tensor& x) {
  return record_unary(x, ops::exp(x), "exp", [](const Tensor&, const Tensor& y) { return y; });
}

// d/dx log(x) = 1/x
Tensor log(const Tensor& x) {
  Tensor result = ops::log(x);
  return record(
      result, "log", {x},
      [x = x.detach()](const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
        return {ops::div(grad, x)};
      });
}

// d/dx sqrt(x) = 1 / (2 sqrt(x)) = 1 / (2y)
Tensor sqrt(const Tensor& x) {
  Tensor result = ops::sqrt(x);
  return record(
      result, "sqrt", {x},
      [y = result.detach()](const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
        return {ops::div(grad, ops::mul_scalar(y, 2.0))};
      });
}

// y = x^(-1/2):  d/dx = -1/2 x^(-3/2) = -1/2 y^3
Tensor rsqrt(const Tensor& x) {
  return record_unary(x, ops::rsqrt(x), "rsqrt", [](const Tensor&, const Tensor& y) {
    return ops::mul_scalar(ops::mul(ops::mul(y, y), y), -0.5);
  });
}

// d/dx tanh(x) = 1 - tanh(x)^2 = 1 - y^2
Tensor tanh(const Tensor& x) {
  return record_unary(x, ops::tanh(x), "tanh", [](const Tensor&, const Tensor& y) {
    return ops::add_scalar(ops::neg(ops::mul(y, y)), 1.0);
  });
}

// d/dx erf(x) = 2/sqrt(pi) exp(-x^2)
Tensor erf(const Tensor& x) {
  return record_unary(x, ops::erf(x), "erf", [](const Tensor& x, const Tensor&) {
    return ops::mul_scalar(ops::exp(ops::neg(ops::mul(x, x))), 2.0 / std::sqrt(std::numbers::pi));
  });
}

// d/dx sigmoid(x) = sigmoid(x) (1 - sigmoid(x)) = y (1 - y)
Tensor sigmoid(const Tensor& x) {
  return record_unary(x, ops::sigmoid(x), "sigmoid", [](const Tensor&, const Tensor& y) {
    return ops::mul(y, ops::add_scalar(ops::neg(y), 1.0));
  });
}

// d/dx max(x, 0) = 1 for x > 0, else 0 (0 at x == 0, as PyTorch). Fused in ops::relu_backward.
Tensor relu(const Tensor& x) {
  return record(
      ops::relu(x), "relu", {x},
      [x = x.detach()](const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
        return {ops::relu_backward(grad, x)};
      });
}

// gelu(x) = x Phi(x):  d/dx = Phi(x) + x phi(x). Fused in ops::gelu_backward.
Tensor gelu(const Tensor& x) {
  return record(
      ops::gelu(x), "gelu", {x},
      [x = x.detach()](const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
        return {ops::gelu_backward(grad, x)};
      });
}

// d/dx |x| = sign(x), with sign(0) = 0 (the subgradient PyTorch picks).
Tensor abs(const Tensor& x) {
  return record_unary(x, ops::abs(x), "abs", [](const Tensor& x, const Tensor&) {
    const Tensor zero = constant(0.0, x.dtype());
    return ops::sub(mask_as(ops::gt(x, zero), x.dtype()), mask_as(ops::lt(x, zero), x.dtype()));
  });
}

// d/dx clamp(x, low, high) = 1 where low <= x <= high (boundaries included, as PyTorch), else 0.
Tensor clamp(const Tensor& x, double low, double high) {
  return record_unary(
      x, ops::clamp(x, low, high), "clamp", [low, high](const Tensor& x, const Tensor&) {
        const Tensor above_low = mask_as(ops::ge(x, constant(low, x.dtype())), x.dtype());
        const Tensor below_high = mask_as(ops::le(x, constant(high, x.dtype())), x.dtype());
        return ops::mul(above_low, below_high);
      });
}

// d/dx x^p = p x^(p-1); exactly 0 for p == 0 (x^-1 would turn 0 * inf into NaN at x == 0).
Tensor pow(const Tensor& x, double exponent) {
  return record_unary(x, ops::pow_scalar(x, exponent), "pow",
                      [exponent](const Tensor& x, const Tensor&) {
                        if (exponent == 0.0) return ops::zeros(x.shape(), x.dtype());
                        return ops::mul_scalar(ops::pow_scalar(x, exponent - 1.0), exponent);
                      });
}

// d/da (a + b) = 1, d/db (a + b) = 1; broadcasting: sum the gradient back to each input's shape.
Tensor add(const Tensor& a, const Tensor& b) {
  return record(ops::add(a, b), "add", {a, b},
                [a_shape = a.shape(), b_shape = b.shape()](
                    const Tensor& grad, const std::vector<bool>& needs) -> std::vector<Tensor> {
                  std::vector<Tensor> grads(2);
                  if (needs[0]) grads[0] = ops::sum_to_shape(grad, a_shape);
                  if (needs[1]) grads[1] = ops::sum_to_shape(grad, b_shape);
                  return grads;
                });
}

// d/da (a - b) = 1, d/db (a - b) = -1
Tensor sub(const Tensor& a, const Tensor& b) {
  return record(ops::sub(a, b), "sub", {a, b},
                [a_shape = a.shape(), b_shape = b.shape()](
                    const Tensor& grad, const std::vector<bool>& needs) -> std::vector<Tensor> {
                  std::vector<Tensor> grads(2);
                  if (needs[0]) grads[0] = ops::sum_to_shape(grad, a_shape);
                  if (needs[1]) grads[1] = ops::neg(ops::sum_to_shape(grad, b_shape));
                  return grads;
                });
}

// d/da (a b) = b, d/db (a b) = a. Each operand is kept only if the other one needs a gradient.
Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor result = ops::mul(a, b);
  if (!any_requires_grad({a, b})) return result;
  return record(
      result, "mul", {a, b},
      [a = b.requires_grad() ? a.detach() : Tensor(), b = a.requires_grad() ? b.detach() : Tensor(),
       a_shape = a.shape(), b_shape = b.shape()](
          const Tensor& grad, const std::vector<bool>& needs) -> std::vector<Tensor> {
        std::vector<Tensor> grads(2);
        if (needs[0]) grads[0] = ops::sum_to_shape(ops::mul(grad, b), a_shape);
        if (needs[1]) grads[1] = ops::sum_to_shape(ops::mul(grad, a), b_shape);
        return grads;
      });
}

// z = a / b:  d/da = 1/b,  d/db = -a/b^2 = -z/b
Tensor div(const Tensor& a, const Tensor& b) {
  Tensor result = ops::div(a, b);
  return record(result, "div", {a, b},
                [a_shape = a.shape(), b = b.detach(), z = result.detach()](
                    const Tensor& grad, const std::vector<bool>& needs) -> std::vector<Tensor> {
                  std::vector<Tensor> grads(2);
                  const Tensor grad_over_b = ops::div(grad, b);
                  if (needs[0]) grads[0] = ops::sum_to_shape(grad_over_b, a_shape);
                  if (needs[1])
                    grads[1] = ops::sum_to_shape(ops::neg(ops::mul(grad_over_b, z)), b.shape());
                  return grads;
                });
}

// z = a^b:  d/da = b a^(b-1)  (0 where b == 0, which avoids 0 * inf at a == 0),
//           d/db = a^b log(a) = z log(a)  (defined for a > 0).
Tensor pow(const Tensor& a, const Tensor& b) {
  Tensor result = ops::pow(a, b);
  return record(result, "pow", {a, b},
                [a = a.detach(), b = b.detach(), z = result.detach()](
                    const Tensor& grad, const std::vector<bool>& needs) -> std::vector<Tensor> {
                  std::vector<Tensor> grads(2);
                  if (needs[0]) {
                    const Tensor zero = constant(0.0, a.dtype());
                    const Tensor power = ops::mul(b, ops::pow(a, ops::add_scalar(b, -1.0)));
                    const Tensor derivative = ops::where(ops::eq(b, zero), zero, power);
                    grads[0] = ops::sum_to_shape(ops::mul(grad, derivative), a.shape());
                  }
                  if (needs[1])
                    grads[1] =
                        ops::sum_to_shape(ops::mul(grad, ops::mul(z, ops::log(a))), b.shape());
                  return grads;
                });
}

namespace {

// Backward of maximum (pick_a = gt) and minimum (pick_a = lt): the gradient goes to the operand
// that was picked; on a tie (a == b) each gets half, so the two halves add up to the full gradient.
Tensor record_extremum(const Tensor& a, const Tensor& b, Tensor result, const char* name,
                       Tensor (*a_wins)(const Tensor&, const Tensor&)) {
  return record(result, name, {a, b},
                [a = a.detach(), b = b.detach(), a_wins](
                    const Tensor& grad, const std::vector<bool>& needs) -> std::vector<Tensor> {
                  const DType dtype = grad.dtype();
                  const Tensor half_tie = ops::mul_scalar(mask_as(ops::eq(a, b), dtype), 0.5);
                  std::vector<Tensor> grads(2);
                  if (needs[0]) {
                    const Tensor share = ops::add(mask_as(a_wins(a, b), dtype), half_tie);
                    grads[0] = ops::sum_to_shape(ops::mul(grad, share), a.shape());
                  }
                  if (needs[1]) {
                    const Tensor share = ops::add(mask_as(a_wins(b, a), dtype), half_tie);
                    grads[1] = ops::sum_to_shape(ops::mul(grad, share), b.shape());
                  }
                  return grads;
                });
}

}  // namespace

// d/da max(a, b) = [a > b] + 1/2 [a == b];  d/db = [b > a] + 1/2 [a == b]
Tensor maximum(const Tensor& a, const Tensor& b) {
  return record_extremum(a, b, ops::maximum(a, b), "maximum", &ops::gt);
}

// d/da min(a, b) = [a < b] + 1/2 [a == b];  d/db = [b < a] + 1/2 [a == b]
Tensor minimum(const Tensor& a, const Tensor& b) {
  return record_extremum(a, b, ops::minimum(a, b), "minimum", &ops::lt);
}

// z = condition ? a : b:  dL/da = dL/dz where the condition holds (0 elsewhere), dL/db the rest.
// The condition (u8) is not differentiable and is not an input of the node.
Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b) {
  return record(ops::where(condition, a, b), "where", {a, b},
                [condition, a_shape = a.shape(), b_shape = b.shape()](
                    const Tensor& grad, const std::vector<bool>& needs) -> std::vector<Tensor> {
                  const Tensor zero = constant(0.0, grad.dtype());
                  std::vector<Tensor> grads(2);
                  if (needs[0])
                    grads[0] = ops::sum_to_shape(ops::where(condition, grad, zero), a_shape);
                  if (needs[1])
                    grads[1] = ops::sum_to_shape(ops::where(condition, zero, grad), b_shape);
                  return grads;
                });
}

// d/dx (x + c) = 1
Tensor add(const Tensor& x, double value) {
  return record(
      ops::add_scalar(x, value), "add_scalar", {x},
      [](const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> { return {grad}; });
}

// d/dx (c x) = c
Tensor mul(const Tensor& x, double value) {
  return record(ops::mul_scalar(x, value), "mul_scalar", {x},
                [value](const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
                  return {ops::mul_scalar(grad, value)};
                });
}

}  // namespace qt

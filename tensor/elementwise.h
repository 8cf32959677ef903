// Elementwise ops. Binary ops broadcast with NumPy rules; both inputs must have the same dtype
// (use ops::to to convert). Comparisons return u8 tensors of 0/1 (the framework's boolean).
// Plain kernels (no autograd); the differentiable versions are in autograd/functions.h.
#pragma once

#include "tensor/tensor.h"

namespace qt::ops {

// ---- unary (floating dtypes; neg/abs also work on signed integers)
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);  // 1/sqrt(x)
Tensor tanh(const Tensor& x);
Tensor erf(const Tensor& x);
Tensor sigmoid(const Tensor& x);  // 1/(1+exp(-x)), computed without overflow for large |x|
Tensor relu(const Tensor& x);     // max(x, 0)
Tensor gelu(
    const Tensor& x);  // x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2)))  (exact erf form, as BERT)
Tensor abs(const Tensor& x);
Tensor clamp(const Tensor& x, double low, double high);  // min(max(x, low), high)
Tensor pow_scalar(const Tensor& x, double exponent);     // x^exponent
Tensor add_scalar(const Tensor& x, double value);
Tensor mul_scalar(const Tensor& x, double value);

// Derivatives used by backward passes (fused so backward does one pass over memory):
Tensor gelu_backward(const Tensor& grad, const Tensor& x);  // grad * (Phi(x) + x phi(x))
Tensor relu_backward(const Tensor& grad, const Tensor& x);  // grad * (x > 0)

// ---- binary, broadcasting
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);  // elementwise max; NaN propagates
Tensor minimum(const Tensor& a, const Tensor& b);

// ---- comparisons -> u8 (0 or 1), broadcasting
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);

// condition (u8, nonzero = true) ? a : b, all three broadcast together.
Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b);

// Type conversion (float -> int truncates toward zero, like a C cast; returns t if already
// `dtype`).
Tensor to(const Tensor& t, DType dtype);

// In-place accumulation dst += src (src broadcast to dst's shape); dst may be any layout.
void add_(const Tensor& dst, const Tensor& src);

}  // namespace qt::ops

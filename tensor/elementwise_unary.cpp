// Unary elementwise ops (see tensor/elementwise.h): y[i] = f(x[i]).
//
// Dtypes: the math functions (exp, log, sqrt, rsqrt, tanh, erf, sigmoid, relu, gelu, pow_scalar)
// need f32 or f64 and throw qt::Error otherwise. neg and abs also take the signed integer dtypes
// (i8, i32, i64) with two's-complement wrap-around: neg(-128) and abs(-128) are -128 in i8. clamp,
// add_scalar and mul_scalar take every dtype. f32 is computed in f32 (std:: functions on float),
// f64 in f64. Every kernel is a map (tensor/elementwise_loop.h): a flat OpenMP loop for dense
// inputs, the shared strided row loop otherwise; the output is always a fresh dense tensor.
#include <cmath>
#include <limits>
#include <numbers>
#include <type_traits>

#include "tensor/convert_value.h"
#include "tensor/elementwise.h"
#include "tensor/elementwise_loop.h"
#include "tensor/vector_math.h"

namespace qt::ops {

namespace {

using detail::map_binary;
using detail::map_unary;

// y = op(x) for f32 / f64 tensors; other dtypes are an error naming the op. `op` is a generic
// lambda, instantiated once for float and once for double.
template <typename Op>
Tensor floating_unary(const Tensor& x, const char* name, Op op) {
  check_floating(x, name);
  if (x.dtype() == DType::f32) return map_unary<float, float>(x, DType::f32, op);
  return map_unary<double, double>(x, DType::f64, op);
}

// y = op(x) for every dtype (callers check which dtypes they accept).
template <typename Op>
Tensor any_unary(const Tensor& x, Op op) {
  return dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    return map_unary<T, T>(x, x.dtype(), [&](T v) { return op(v); });
  });
}

void check_signed(const Tensor& x, const char* name) {
  check_defined(x, name);
  QT_CHECK(x.dtype() != DType::u8,
           "{}: needs a signed dtype (f32, f64, i8, i32, i64), got u8 of shape {}", name,
           shape_str(x.shape()));
}

// A double operand of an op on an integer tensor must be an integer the dtype can hold.
template <typename T>
T integer_operand(double value, const Tensor& x, const char* name) {
  QT_CHECK(value == std::trunc(value) &&
               value >= static_cast<double>(std::numeric_limits<T>::min()) &&
               value <= static_cast<double>(std::numeric_limits<T>::max()),
           "{}: value {} is not an integer representable in {} (tensor of shape {})", name, value,
           dtype_name(x.dtype()), shape_str(x.shape()));
  return static_cast<T>(value);
}

constexpr double kInvSqrt2 = 0.70710678118654752440;    // 1 / sqrt(2)
constexpr double kInvSqrt2Pi = 0.39894228040143267794;  // 1 / sqrt(2 pi)

}  // namespace

Tensor neg(const Tensor& x) {
  check_signed(x, "neg");
  return any_unary(x, [](auto v) { return detail::wrapping_neg(v); });
}

Tensor abs(const Tensor& x) {
  check_signed(x, "abs");
  return any_unary(x, [](auto v) {
    using T = decltype(v);
    if constexpr (std::is_floating_point_v<T>) {
      return std::abs(v);
    } else {
      return v < 0 ? detail::wrapping_neg(v) : v;
    }
  });
}

Tensor exp(const Tensor& x) {
  return floating_unary(x, "exp", [](auto v) { return std::exp(v); });
}

Tensor log(const Tensor& x) {
  return floating_unary(x, "log", [](auto v) { return std::log(v); });
}

Tensor sqrt(const Tensor& x) {
  return floating_unary(x, "sqrt", [](auto v) { return std::sqrt(v); });
}

Tensor rsqrt(const Tensor& x) {
  return floating_unary(x, "rsqrt", [](auto v) { return decltype(v){1} / std::sqrt(v); });
}

Tensor tanh(const Tensor& x) {
  return floating_unary(x, "tanh", [](auto v) { return std::tanh(v); });
}

Tensor erf(const Tensor& x) {
  return floating_unary(x, "erf", [](auto v) { return std::erf(v); });
}

// sigma(x) = 1 / (1 + e^-x). Written with e = exp(-|x|) <= 1, which never overflows:
//   x >= 0:  1 / (1 + e)
//   x <  0:  e / (1 + e)      (= 1 / (1 + e^{-x}) multiplied through by e^{x})
// For x = -1000, e underflows to 0 and the result is exactly 0 instead of 1 / inf.
Tensor sigmoid(const Tensor& x) {
  return floating_unary(x, "sigmoid", [](auto v) {
    using T = decltype(v);
    const T e = std::exp(-std::abs(v));
    const T denominator = T{1} + e;
    return v >= T{0} ? T{1} / denominator : e / denominator;
  });
}

// max(x, 0); NaN stays NaN (the comparison x < 0 is false for NaN).
Tensor relu(const Tensor& x) {
  return floating_unary(x, "relu", [](auto v) {
    using T = decltype(v);
    return v < T{0} ? T{0} : v;
  });
}

// gelu(x) = x Phi(x) = 0.5 x (1 + erf(x / sqrt(2))), Phi the standard normal CDF. Float through
// the vectorizable Phi of tensor/vector_math.h; double through std::erf (the reference).
Tensor gelu(const Tensor& x) {
  return floating_unary(x, "gelu", [](auto v) {
    using T = decltype(v);
    if constexpr (std::is_same_v<T, float>) {
      return vmath::gelu_f32(v);
    } else {
      // Phi(x) = erfc(-x / sqrt 2) / 2, not (1 + erf(x / sqrt 2)) / 2: for x < 0 the latter
      // cancels (1 - 0.99999...) and keeps only ~1e-16 of absolute accuracy.
      return T{0.5} * v * std::erfc(-v * static_cast<T>(kInvSqrt2));
    }
  });
}

Tensor clamp(const Tensor& x, double low, double high) {
  check_defined(x, "clamp");
  QT_CHECK(!(low > high) && !std::isnan(low) && !std::isnan(high),
           "clamp: low {} must not exceed high {} (tensor of shape {})", low, high,
           shape_str(x.shape()));
  return dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    // For integer dtypes the bounds become the nearest integers inside [low, high] (saturated to
    // the dtype's range), so that e.g. clamp(x, 0.5, 3) on i32 is clamp(x, 1, 3).
    T lo, hi;
    if constexpr (std::is_floating_point_v<T>) {
      lo = static_cast<T>(low);
      hi = static_cast<T>(high);
    } else {
      lo = detail::convert_value<T>(std::ceil(low));
      hi = detail::convert_value<T>(std::floor(high));
    }
    // min(max(x, lo), hi) written so that NaN propagates: both comparisons are false for NaN.
    return map_unary<T, T>(x, x.dtype(), [lo, hi](T v) {
      const T raised = v < lo ? lo : v;
      return raised > hi ? hi : raised;
    });
  });
}

Tensor pow_scalar(const Tensor& x, double exponent) {
  check_floating(x, "pow_scalar");
  if (exponent == 2.0) {  // the common case (squares in variances), exact and cheaper than pow
    return floating_unary(x, "pow_scalar", [](auto v) { return v * v; });
  }
  if (exponent == 1.0) return floating_unary(x, "pow_scalar", [](auto v) { return v; });
  return floating_unary(x, "pow_scalar", [exponent](auto v) {
    using T = decltype(v);
    return std::pow(v, static_cast<T>(exponent));
  });
}

namespace {

// The scalar converted to the tensor's element type (checked to be representable for integers).
template <typename T>
T scalar_operand(double value, const Tensor& x, const char* op) {
  if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(value);
  } else {
    return integer_operand<T>(value, x, op);
  }
}

}  // namespace

Tensor add_scalar(const Tensor& x, double value) {
  check_defined(x, "add_scalar");
  return dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T operand = scalar_operand<T>(value, x, "add_scalar");
    return map_unary<T, T>(x, x.dtype(),
                           [operand](T v) { return detail::wrapping_add(v, operand); });
  });
}

Tensor mul_scalar(const Tensor& x, double value) {
  check_defined(x, "mul_scalar");
  return dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T operand = scalar_operand<T>(value, x, "mul_scalar");
    return map_unary<T, T>(x, x.dtype(),
                           [operand](T v) { return detail::wrapping_mul(v, operand); });
  });
}

// d gelu / dx = Phi(x) + x phi(x), with Phi(x) = 0.5 (1 + erf(x / sqrt 2)) and
// phi(x) = exp(-x^2 / 2) / sqrt(2 pi) the standard normal density.
Tensor gelu_backward(const Tensor& grad, const Tensor& x) {
  check_floating(x, "gelu_backward");
  check_same_dtype(grad, x, "gelu_backward");
  auto derivative = [](auto g, auto v) {
    using T = decltype(v);
    if constexpr (std::is_same_v<T, float>) {
      return g * vmath::gelu_derivative_f32(v);
    } else {
      const T cdf = T{0.5} * std::erfc(-v * static_cast<T>(kInvSqrt2));
      const T density = static_cast<T>(kInvSqrt2Pi) * std::exp(T{-0.5} * v * v);
      return g * (cdf + v * density);
    }
  };
  if (x.dtype() == DType::f32) {
    return map_binary<float, float, float>(grad, x, DType::f32, "gelu_backward", derivative);
  }
  return map_binary<double, double, double>(grad, x, DType::f64, "gelu_backward", derivative);
}

// d relu / dx = 1 for x > 0, else 0 (the subgradient 0 at x = 0, as PyTorch).
Tensor relu_backward(const Tensor& grad, const Tensor& x) {
  check_floating(x, "relu_backward");
  check_same_dtype(grad, x, "relu_backward");
  auto derivative = [](auto g, auto v) {
    using T = decltype(v);
    return v > T{0} ? g : T{0};
  };
  if (x.dtype() == DType::f32) {
    return map_binary<float, float, float>(grad, x, DType::f32, "relu_backward", derivative);
  }
  return map_binary<double, double, double>(grad, x, DType::f64, "relu_backward", derivative);
}

Tensor to(const Tensor& t, DType dtype) {
  check_defined(t, "to");
  if (t.dtype() == dtype) return t;
  return dispatch_dtype(t.dtype(), [&](auto from_tag) {
    using From = decltype(from_tag);
    return dispatch_dtype(dtype, [&](auto to_tag) {
      using To = decltype(to_tag);
      return map_unary<To, From>(t, dtype, [](From v) { return detail::convert_value<To>(v); });
    });
  });
}

}  // namespace qt::ops

// Binary elementwise ops with NumPy broadcasting, comparisons, where, and in-place add_
// (see tensor/elementwise.h).
//
// Both inputs must have the same dtype (ops::to converts). add, sub, mul, div, maximum, minimum and
// the comparisons take every dtype; pow takes f32 / f64 only.
//
// Integer semantics, all defined (no undefined behaviour, no trap):
//   - add, sub, mul wrap around modulo 2^bits (two's complement): 127 + 1 = -128 in i8,
//     3 - 5 = 254 in u8;
//   - div truncates toward zero like C (-7 / 2 = -3); INT_MIN / -1 wraps to INT_MIN (the x86
//     division instruction would trap on it, so it is computed as a negation);
//   - a zero divisor anywhere in b is reported as qt::Error before anything is computed (the
//     hardware would kill the process with SIGFPE).
// Floating division by zero follows IEEE 754 (inf or NaN), as in NumPy.
#include <atomic>
#include <cmath>
#include <type_traits>

#include "tensor/elementwise.h"
#include "tensor/elementwise_loop.h"

namespace qt::ops {

namespace {

using detail::map_binary;

// out = op(a, b) for any dtype; a and b must share it. The result has that dtype too.
template <typename Op>
Tensor same_dtype_binary(const Tensor& a, const Tensor& b, const char* name, Op op) {
  check_same_dtype(a, b, name);
  return dispatch_dtype(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    return map_binary<T, T, T>(a, b, a.dtype(), name,
                               [&](T x, T y) { return static_cast<T>(op(x, y)); });
  });
}

// out = (a op b) as u8 0/1 for any dtype.
template <typename Op>
Tensor comparison(const Tensor& a, const Tensor& b, const char* name, Op op) {
  check_same_dtype(a, b, name);
  return dispatch_dtype(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    return map_binary<uint8_t, T, T>(
        a, b, DType::u8, name, [&](T x, T y) { return static_cast<uint8_t>(op(x, y) ? 1 : 0); });
  });
}

// True when some element of the integer tensor t is zero (t may have any layout).
template <typename T>
bool has_zero(const Tensor& t) {
  std::atomic<bool> found{false};
  const T* data = t.data<T>();
  detail::for_each_row<1>(t.shape(), {t.strides()},
                          [&](const std::array<int64_t, 1>& offsets, int64_t length,
                              const std::array<int64_t, 1>& steps) {
                            const T* row = data + offsets[0];
                            bool zero = false;
                            for (int64_t i = 0; i < length; ++i) zero |= row[i * steps[0]] == T{0};
                            if (zero) found.store(true, std::memory_order_relaxed);
                          });
  return found.load();
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  return same_dtype_binary(a, b, "add", [](auto x, auto y) { return detail::wrapping_add(x, y); });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  return same_dtype_binary(a, b, "sub", [](auto x, auto y) { return detail::wrapping_sub(x, y); });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  return same_dtype_binary(a, b, "mul", [](auto x, auto y) { return detail::wrapping_mul(x, y); });
}

Tensor div(const Tensor& a, const Tensor& b) {
  check_same_dtype(a, b, "div");
  if (!is_floating(b.dtype())) {
    const bool zero_divisor =
        dispatch_dtype(b.dtype(), [&](auto tag) { return has_zero<decltype(tag)>(b); });
    QT_CHECK(!zero_divisor,
             "div: integer division by zero (divisor: {} tensor of shape {}, dividend shape {})",
             dtype_name(b.dtype()), shape_str(b.shape()), shape_str(a.shape()));
  }
  return same_dtype_binary(a, b, "div", [](auto x, auto y) {
    using T = decltype(x);
    if constexpr (std::is_floating_point_v<T>) {
      return x / y;
    } else if constexpr (std::is_signed_v<T>) {
      return y == T{-1} ? detail::wrapping_neg(x) : static_cast<T>(x / y);
    } else {
      return static_cast<T>(x / y);
    }
  });
}

Tensor pow(const Tensor& a, const Tensor& b) {
  check_floating(a, "pow");
  return same_dtype_binary(a, b, "pow", [](auto x, auto y) {
    if constexpr (std::is_floating_point_v<decltype(x)>) {
      return std::pow(x, y);
    } else {
      return x;  // never instantiated at run time: integer dtypes were rejected above
    }
  });
}

// NaN propagates: if a is NaN the first test picks a; if b is NaN both tests fail and b is picked.
Tensor maximum(const Tensor& a, const Tensor& b) {
  return same_dtype_binary(a, b, "maximum",
                           [](auto x, auto y) { return (x > y || x != x) ? x : y; });
}

Tensor minimum(const Tensor& a, const Tensor& b) {
  return same_dtype_binary(a, b, "minimum",
                           [](auto x, auto y) { return (x < y || x != x) ? x : y; });
}

// IEEE comparisons: every comparison with NaN is false, except ne which is true.
Tensor eq(const Tensor& a, const Tensor& b) {
  return comparison(a, b, "eq", [](auto x, auto y) { return x == y; });
}
Tensor ne(const Tensor& a, const Tensor& b) {
  return comparison(a, b, "ne", [](auto x, auto y) { return x != y; });
}
Tensor lt(const Tensor& a, const Tensor& b) {
  return comparison(a, b, "lt", [](auto x, auto y) { return x < y; });
}
Tensor le(const Tensor& a, const Tensor& b) {
  return comparison(a, b, "le", [](auto x, auto y) { return x <= y; });
}
Tensor gt(const Tensor& a, const Tensor& b) {
  return comparison(a, b, "gt", [](auto x, auto y) { return x > y; });
}
Tensor ge(const Tensor& a, const Tensor& b) {
  return comparison(a, b, "ge", [](auto x, auto y) { return x >= y; });
}

Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b) {
  check_dtype(condition, DType::u8, "where");
  check_same_dtype(a, b, "where");
  return dispatch_dtype(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    return detail::map_ternary<T, uint8_t, T, T>(
        condition, a, b, a.dtype(), "where", [](uint8_t c, T x, T y) { return c != 0 ? x : y; });
  });
}

void add_(const Tensor& dst, const Tensor& src) {
  check_same_dtype(dst, src, "add_");
  const Shape shape = broadcast_shapes(dst.shape(), src.shape(), "add_");
  QT_CHECK(shape == dst.shape(), "add_: source shape {} does not broadcast to destination shape {}",
           shape_str(src.shape()), shape_str(dst.shape()));
  if (dst.numel() == 0) return;  // nothing to add (and an empty tensor's strides may hold 0)
  // A destination that reads one element at several indices (an expanded view, stride 0) would be
  // incremented several times, from several threads: refuse it.
  for (int64_t axis = 0; axis < dst.dim(); ++axis) {
    QT_CHECK(
        dst.shape()[axis] <= 1 || dst.strides()[axis] != 0,
        "add_: destination of shape {} with strides {} has overlapping elements (an expanded view)",
        shape_str(dst.shape()), shape_str(dst.strides()));
  }
  dispatch_dtype(dst.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* out = dst.data<T>();
    const T* in = src.data<T>();
    const int64_t n = dst.numel();
    // dst += src is the binary op (dst, src) -> dst with dst as both output and first input.
    auto plus = [](T x, T y) { return detail::wrapping_add(x, y); };
    if (dst.is_contiguous() && src.is_contiguous() && src.shape() == shape) {
      detail::parallel_chunks(n, [&](int64_t begin, int64_t end) {
        detail::binary_row(out + begin, out + begin, in + begin, end - begin, 1, 1, 1, plus);
      });
      return;
    }
    detail::for_each_row<2>(shape, {dst.strides(), detail::broadcast_strides(src, shape)},
                            [&](const std::array<int64_t, 2>& offsets, int64_t length,
                                const std::array<int64_t, 2>& steps) {
                              T* row = out + offsets[0];
                              detail::binary_row(row, row, in + offsets[1], length, steps[0],
                                                 steps[0], steps[1], plus);
                            });
  });
}

}  // namespace qt::ops

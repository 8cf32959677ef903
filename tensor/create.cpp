// Creating tensors (see tensor/create.h).
//
// Values given as double (full, fill_, arange, the bounds of rand) are converted to the tensor's
// dtype with detail::convert_value: round to nearest for floating dtypes; for integer dtypes,
// truncation toward zero that saturates at the type's limits (full({2}, 300, u8) holds 255).
//
// Random fills: element i (row-major) of randn / rand / bernoulli is a pure function of
// (seed, stream, i) through Philox (tensor/random.h), so the loops below may run on any number of
// threads in any order and still give bit-identical tensors.
#include "tensor/create.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "tensor/convert_value.h"
#include "tensor/elementwise_loop.h"
#include "tensor/parallel_policy.h"
#include "tensor/random.h"

namespace qt::ops {

namespace {

using detail::convert_value;

// Writes `value` into every element of t (any layout).
template <typename T>
void fill_typed(const Tensor& t, T value) {
  T* out = t.data<T>();
  const int64_t n = t.numel();
  if (t.is_contiguous()) {
    detail::parallel_chunks(
        n, [&](int64_t begin, int64_t end) { std::fill(out + begin, out + end, value); });
    return;
  }
  detail::for_each_row<1>(t.shape(), {t.strides()},
                          [&](const std::array<int64_t, 1>& offsets, int64_t length,
                              const std::array<int64_t, 1>& steps) {
                            T* row = out + offsets[0];
                            for (int64_t i = 0; i < length; ++i) row[i * steps[0]] = value;
                          });
}

// A fresh dense tensor whose element i is make(i), computed in parallel. `make` must be pure.
// Each element costs a Philox block (and for normals a log and a cos), about as much as 50 simple
// elementwise operations, so threads pay off on much smaller tensors than for add or mul.
template <typename T, typename Make>
Tensor generate(const Shape& shape, DType dtype, Make make) {
  Tensor out = Tensor::empty(shape, dtype);
  T* data = out.data<T>();
  const int64_t n = out.numel();
#pragma omp parallel for schedule(static) if (qt::worth_parallel(n, qt::WorkCost::expensive))
  for (int64_t i = 0; i < n; ++i) data[i] = make(static_cast<uint64_t>(i));
  return out;
}

template <typename T>
Tensor from_host(const std::vector<T>& values, const Shape& shape) {
  for (int64_t size : shape) {
    QT_CHECK(size >= 0, "from_vector: negative size in shape {}", shape_str(shape));
  }
  QT_CHECK(static_cast<int64_t>(values.size()) == numel_of(shape),
           "from_vector: {} values for shape {} which has {} elements", values.size(),
           shape_str(shape), numel_of(shape));
  Tensor out = Tensor::empty(shape, dtype_of<T>());
  T* data = out.data<T>();
  for (int64_t i = 0; i < out.numel(); ++i) data[i] = values[i];
  return out;
}

}  // namespace

Tensor full(const Shape& shape, double value, DType dtype) {
  Tensor out = Tensor::empty(shape, dtype);
  fill_(out, value);
  return out;
}

Tensor zeros(const Shape& shape, DType dtype) {
  return full(shape, 0.0, dtype);
}
Tensor ones(const Shape& shape, DType dtype) {
  return full(shape, 1.0, dtype);
}
Tensor scalar(double value, DType dtype) {
  return full(Shape{}, value, dtype);
}

Tensor zeros_like(const Tensor& t) {
  check_defined(t, "zeros_like");
  return zeros(t.shape(), t.dtype());
}

Tensor ones_like(const Tensor& t) {
  check_defined(t, "ones_like");
  return ones(t.shape(), t.dtype());
}

void fill_(const Tensor& t, double value) {
  check_defined(t, "fill_");
  if (t.numel() == 0) return;  // nothing to write (and an empty tensor's strides may hold 0)
  // An expanded view (stride 0 on a dim of size > 1) would have threads write one element
  // concurrently; like PyTorch, refuse to write through it.
  for (int64_t axis = 0; axis < t.dim(); ++axis) {
    QT_CHECK(
        t.shape()[axis] <= 1 || t.strides()[axis] != 0,
        "fill_: tensor of shape {} with strides {} has overlapping elements (an expanded view)",
        shape_str(t.shape()), shape_str(t.strides()));
  }
  dispatch_dtype(t.dtype(), [&](auto tag) {
    using T = decltype(tag);
    fill_typed<T>(t, convert_value<T>(value));
  });
}

Tensor arange(double start, double end, double step, DType dtype) {
  QT_CHECK(std::isfinite(start) && std::isfinite(end) && std::isfinite(step),
           "arange: start {}, end {}, step {} must be finite", start, end, step);
  QT_CHECK(step != 0, "arange: step must not be zero (start {}, end {})", start, end);
  // numpy.arange: n = ceil((end - start) / step) elements start + i * step, or none.
  const double count = std::ceil((end - start) / step);
  QT_CHECK(count < 1e15, "arange: [{}, {}) with step {} has too many elements ({})", start, end,
           step, count);
  const int64_t n = count > 0 ? static_cast<int64_t>(count) : 0;
  return dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    return generate<T>({n}, dtype, [&](uint64_t i) {
      return convert_value<T>(start + static_cast<double>(i) * step);
    });
  });
}

Tensor from_vector(const std::vector<float>& values, const Shape& shape) {
  return from_host(values, shape);
}
Tensor from_vector(const std::vector<double>& values, const Shape& shape) {
  return from_host(values, shape);
}
Tensor from_vector(const std::vector<int64_t>& values, const Shape& shape) {
  return from_host(values, shape);
}
Tensor from_vector(const std::vector<int32_t>& values, const Shape& shape) {
  return from_host(values, shape);
}
Tensor from_vector(const std::vector<uint8_t>& values, const Shape& shape) {
  return from_host(values, shape);
}
Tensor from_vector(const std::vector<int8_t>& values, const Shape& shape) {
  return from_host(values, shape);
}

template <typename T>
std::vector<T> to_vector(const Tensor& t) {
  check_defined(t, "to_vector");
  std::vector<T> values(static_cast<size_t>(t.numel()));
  if (values.empty()) return values;
  dispatch_dtype(t.dtype(), [&](auto tag) {
    using S = decltype(tag);
    const S* in = t.data<S>();
    // Walk t's layout in row-major order of its shape; the output is dense, so its strides are
    // the contiguous ones of the same shape.
    detail::for_each_row<2>(t.shape(), {contiguous_strides(t.shape()), t.strides()},
                            [&](const std::array<int64_t, 2>& offsets, int64_t length,
                                const std::array<int64_t, 2>& steps) {
                              T* out = values.data() + offsets[0];
                              const S* row = in + offsets[1];
                              for (int64_t i = 0; i < length; ++i) {
                                out[i * steps[0]] = convert_value<T>(row[i * steps[1]]);
                              }
                            });
  });
  return values;
}

template std::vector<float> to_vector<float>(const Tensor&);
template std::vector<double> to_vector<double>(const Tensor&);
template std::vector<int64_t> to_vector<int64_t>(const Tensor&);
template std::vector<int32_t> to_vector<int32_t>(const Tensor&);
template std::vector<uint8_t> to_vector<uint8_t>(const Tensor&);
template std::vector<int8_t> to_vector<int8_t>(const Tensor&);

Tensor randn(const Shape& shape, uint64_t seed, uint64_t stream, DType dtype, double mean,
             double std) {
  QT_CHECK(is_floating(dtype), "randn: dtype must be f32 or f64, got {} (shape {})",
           dtype_name(dtype), shape_str(shape));
  QT_CHECK(std::isfinite(mean) && std::isfinite(std) && std >= 0,
           "randn: mean {} and std {} must be finite with std >= 0 (shape {})", mean, std,
           shape_str(shape));
  if (dtype == DType::f32) {
    const float mean_f = static_cast<float>(mean), std_f = static_cast<float>(std);
    return generate<float>(
        shape, dtype, [&](uint64_t i) { return mean_f + std_f * random_normal(seed, stream, i); });
  }
  return generate<double>(
      shape, dtype, [&](uint64_t i) { return mean + std * random_normal_f64(seed, stream, i); });
}

namespace {

// The largest value of type T strictly below `high`, so that rounding in low + width * u can never
// produce `high` itself (the interval is half-open).
template <typename T>
T largest_below(double high) {
  T value = static_cast<T>(high);
  if (static_cast<double>(value) >= high) {
    value = std::nextafter(value, -std::numeric_limits<T>::infinity());
  }
  return value;
}

}  // namespace

// Floating dtypes: low + (high - low) * u with u uniform in [0, 1) (24 bits for f32, 53 for f64),
// capped just below `high`. Integer dtypes: low + floor((high - low) * u) with a 53-bit u, i.e.
// uniform integers in [low, high); low and high must then be integers (handy for random token ids).
Tensor rand(const Shape& shape, uint64_t seed, uint64_t stream, DType dtype, double low,
            double high) {
  QT_CHECK(std::isfinite(low) && std::isfinite(high) && low < high,
           "rand: need finite low < high, got [{}, {}) (shape {})", low, high, shape_str(shape));
  return dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, float>) {
      const float low_f = static_cast<float>(low), width = static_cast<float>(high - low);
      const float cap = largest_below<float>(high);
      return generate<float>(shape, dtype, [&](uint64_t i) {
        return std::min(low_f + width * random_uniform(seed, stream, i), cap);
      });
    } else if constexpr (std::is_same_v<T, double>) {
      const double cap = largest_below<double>(high);
      return generate<double>(shape, dtype, [&](uint64_t i) {
        return std::min(low + (high - low) * random_uniform_f64(seed, stream, i), cap);
      });
    } else {
      QT_CHECK(low == std::floor(low) && high == std::floor(high),
               "rand: bounds [{}, {}) must be integers for dtype {}", low, high, dtype_name(dtype));
      QT_CHECK(low >= static_cast<double>(std::numeric_limits<T>::min()) &&
                   high - 1 <= static_cast<double>(std::numeric_limits<T>::max()),
               "rand: range [{}, {}) does not fit in {}", low, high, dtype_name(dtype));
      const double width = high - low;
      return generate<T>(shape, dtype, [&](uint64_t i) {
        const double steps = std::floor(width * random_uniform_f64(seed, stream, i));
        return convert_value<T>(low + std::min(steps, width - 1));
      });
    }
  });
}

// Element i is 1 when its 53-bit uniform u_i < p: probability exactly p up to 2^-53.
Tensor bernoulli(const Shape& shape, double p, uint64_t seed, uint64_t stream, DType dtype) {
  QT_CHECK(p >= 0 && p <= 1, "bernoulli: probability {} is outside [0, 1] (shape {})", p,
           shape_str(shape));
  return dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    return generate<T>(shape, dtype, [&](uint64_t i) {
      return random_uniform_f64(seed, stream, i) < p ? T{1} : T{0};
    });
  });
}

}  // namespace qt::ops

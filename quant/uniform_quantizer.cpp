// Fake quantization, its STE backward, and integer quantize / dequantize (formulas in
// uniform_quantizer.h).
//
// Layout. Every kernel works on a dense row-major tensor. For a channel axis a, element i belongs
// to channel (i / inner) % channels, where inner = product of the sizes after a; a per-tensor
// quantizer is the special case channels = 1, inner = n. The flat range [0, n) is cut into fixed
// chunks (OpenMP over chunks for large tensors); inside a chunk every maximal run of elements that
// share one channel is handed to a row function with that channel's (s, z) as plain scalars, so the
// inner loop is a flat, vectorizable loop (vroundps for std::nearbyint). Elementwise results do not
// depend on the chunking, so 1 and N threads give identical bits.
//
// NaN. Each row function also counts NaN inputs (an integer sum, combined by an OpenMP reduction);
// the op throws after the parallel loop when the count is not zero (exceptions cannot leave an
// OpenMP region).
#include "quant/uniform_quantizer.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "autograd/node.h"
#include "tensor/parallel_policy.h"
#include "tensor/view.h"

namespace qt::ops {

namespace {

constexpr int64_t kChunkElements = int64_t{1} << 14;

// Channel of flat index i = (i / inner) % channels.
struct ChannelLayout {
  int64_t inner = 1;
  int64_t channels = 1;
};

ChannelLayout channel_layout(const Tensor& x, int64_t axis) {
  if (axis < 0) return {std::max<int64_t>(x.numel(), 1), 1};
  ChannelLayout layout;
  layout.channels = x.size(axis);
  for (int64_t d = axis + 1; d < x.dim(); ++d) layout.inner *= x.size(d);
  return layout;
}

// Calls run(begin, end, channel) for each maximal same-channel run of [0, n), chunk by chunk, and
// returns the sum of the counts the calls return.
template <typename Run>
int64_t for_each_channel_run(int64_t n, ChannelLayout layout, const Run& run) {
  if (n == 0) return 0;
  const int64_t chunks = (n + kChunkElements - 1) / kChunkElements;
  int64_t total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (qt::worth_parallel(n, qt::WorkCost::standard) && chunks > 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t end = std::min(n, (chunk + 1) * kChunkElements);
    int64_t i = chunk * kChunkElements;
    while (i < end) {
      const int64_t block = i / layout.inner;
      const int64_t stop = std::min(end, (block + 1) * layout.inner);
      total += run(i, stop, block % layout.channels);
      i = stop;
    }
  }
  return total;
}

// The grid value clamp(⌊v/s⌉ + z, low, high) before conversion; NaN stays NaN.
template <typename T>
inline T grid_value(T v, T scale, T zero, T low, T high) {
  const T q = std::nearbyint(v / scale) + zero;
  return std::min(std::max(q, low), high);
}

// The per-channel constants of one run, in the kernel's type.
template <typename T>
struct RunConstants {
  T scale, zero, low, high;
};

template <typename T>
RunConstants<T> run_constants(const quant::QuantizationParameters& p, int64_t channel) {
  return {static_cast<T>(p.scale[channel]), static_cast<T>(p.zero_point[channel]),
          static_cast<T>(p.int_min), static_cast<T>(p.int_max)};
}

// y = s (clamp(⌊x/s⌉ + z) − z); returns the number of NaN inputs.
template <typename T>
int64_t fake_quantize_row(const T* x, T* y, int64_t n, T scale, T zero, T low, T high) {
  int64_t nan_count = 0;
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    nan_count += (v != v);
    y[i] = scale * (grid_value(v, scale, zero, low, high) - zero);
  }
  return nan_count;
}

// out = g where low <= ⌊x/s⌉ + z <= high (the clamp's input, boundaries pass), else 0.
template <typename T>
int64_t ste_row(const T* g, const T* x, T* out, int64_t n, T scale, T zero, T low, T high) {
  int64_t nan_count = 0;
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    nan_count += (v != v);
    const T q = std::nearbyint(v / scale) + zero;
    out[i] = (q >= low && q <= high) ? g[i] : T(0);
  }
  return nan_count;
}

// codes = clamp(⌊x/s⌉ + z); NaN inputs are counted and written as 0 (never cast: that is UB).
template <typename T, typename Code>
int64_t quantize_row(const T* x, Code* codes, int64_t n, T scale, T zero, T low, T high) {
  int64_t nan_count = 0;
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    nan_count += (v != v);
    const T q = grid_value(v, scale, zero, low, high);
    codes[i] = static_cast<Code>(v != v ? T(0) : q);
  }
  return nan_count;
}

// y = s (q − z) in f32; returns the number of codes outside [low, high].
template <typename Code>
int64_t dequantize_row(const Code* codes, float* y, int64_t n, float scale, float zero, int64_t low,
                       int64_t high) {
  int64_t outside = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t q = static_cast<int64_t>(codes[i]);
    outside += (q < low) | (q > high);
    y[i] = scale * (static_cast<float>(q) - zero);
  }
  return outside;
}

void check_input(const Tensor& x, const char* op) {
  check_defined(x, op);
  check_floating(x, op);
}

template <typename T>
Tensor fake_quantize_typed(const Tensor& x, const quant::QuantizationParameters& p, int64_t axis) {
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  const T* x_data = x.data<T>();
  T* y_data = y.data<T>();
  const int64_t nan_count = for_each_channel_run(
      x.numel(), channel_layout(x, axis), [&](int64_t begin, int64_t end, int64_t channel) {
        const RunConstants<T> k = run_constants<T>(p, channel);
        return fake_quantize_row(x_data + begin, y_data + begin, end - begin, k.scale, k.zero,
                                 k.low, k.high);
      });
  QT_CHECK(nan_count == 0, "fake_quantize: input {} holds {} NaN values", shape_str(x.shape()),
           nan_count);
  return y;
}

template <typename T>
Tensor ste_typed(const Tensor& grad, const Tensor& x, const quant::QuantizationParameters& p,
                 int64_t axis) {
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  const T* g_data = grad.data<T>();
  const T* x_data = x.data<T>();
  T* out_data = out.data<T>();
  const int64_t nan_count = for_each_channel_run(
      x.numel(), channel_layout(x, axis), [&](int64_t begin, int64_t end, int64_t channel) {
        const RunConstants<T> k = run_constants<T>(p, channel);
        return ste_row(g_data + begin, x_data + begin, out_data + begin, end - begin, k.scale,
                       k.zero, k.low, k.high);
      });
  QT_CHECK(nan_count == 0, "fake_quantize_backward: input {} holds {} NaN values",
           shape_str(x.shape()), nan_count);
  return out;
}

template <typename T, typename Code>
Tensor quantize_typed(const Tensor& x, const quant::QuantizationParameters& p, int64_t axis,
                      DType code_dtype) {
  Tensor codes = Tensor::empty(x.shape(), code_dtype);
  const T* x_data = x.data<T>();
  Code* code_data = codes.data<Code>();
  const int64_t nan_count = for_each_channel_run(
      x.numel(), channel_layout(x, axis), [&](int64_t begin, int64_t end, int64_t channel) {
        const RunConstants<T> k = run_constants<T>(p, channel);
        return quantize_row(x_data + begin, code_data + begin, end - begin, k.scale, k.zero, k.low,
                            k.high);
      });
  QT_CHECK(nan_count == 0, "quantize: input {} holds {} NaN values", shape_str(x.shape()),
           nan_count);
  return codes;
}

template <typename Code>
Tensor dequantize_typed(const Tensor& codes, const quant::QuantizationParameters& p, int64_t axis) {
  Tensor y = Tensor::empty(codes.shape(), DType::f32);
  const Code* code_data = codes.data<Code>();
  float* y_data = y.data<float>();
  const int64_t outside = for_each_channel_run(
      codes.numel(), channel_layout(codes, axis), [&](int64_t begin, int64_t end, int64_t channel) {
        return dequantize_row(code_data + begin, y_data + begin, end - begin, p.scale[channel],
                              static_cast<float>(p.zero_point[channel]), p.int_min, p.int_max);
      });
  QT_CHECK(outside == 0, "dequantize: {} codes lie outside the grid [{}, {}]", outside, p.int_min,
           p.int_max);
  return y;
}

}  // namespace

Tensor fake_quantize(const Tensor& x, const quant::QuantizationParameters& parameters) {
  check_input(x, "fake_quantize");
  const int64_t axis = quant::check_parameters_for(parameters, x, "fake_quantize");
  const Tensor dense = contiguous(x);
  if (dense.dtype() == DType::f32) return fake_quantize_typed<float>(dense, parameters, axis);
  return fake_quantize_typed<double>(dense, parameters, axis);
}

Tensor fake_quantize_backward(const Tensor& grad, const Tensor& x,
                              const quant::QuantizationParameters& parameters) {
  const char* op = "fake_quantize_backward";
  check_input(x, op);
  check_defined(grad, op);
  check_same_dtype(grad, x, op);
  QT_CHECK(grad.shape() == x.shape(), "{}: gradient {} does not match the input {}", op,
           shape_str(grad.shape()), shape_str(x.shape()));
  const int64_t axis = quant::check_parameters_for(parameters, x, op);
  const Tensor dense_x = contiguous(x);
  const Tensor dense_grad = contiguous(grad);
  if (x.dtype() == DType::f32) return ste_typed<float>(dense_grad, dense_x, parameters, axis);
  return ste_typed<double>(dense_grad, dense_x, parameters, axis);
}

Tensor quantize(const Tensor& x, const quant::QuantizationParameters& parameters) {
  check_input(x, "quantize");
  const int64_t axis = quant::check_parameters_for(parameters, x, "quantize");
  const Tensor dense = contiguous(x);
  const DType code_dtype = quant::code_dtype(parameters);
  return dispatch_dtype(code_dtype, [&](auto code_tag) -> Tensor {
    using Code = decltype(code_tag);
    if constexpr (std::is_same_v<Code, uint8_t> || std::is_same_v<Code, int8_t> ||
                  std::is_same_v<Code, int32_t>) {
      if (dense.dtype() == DType::f32)
        return quantize_typed<float, Code>(dense, parameters, axis, code_dtype);
      return quantize_typed<double, Code>(dense, parameters, axis, code_dtype);
    } else {
      fail("quantize: unexpected code dtype {}", dtype_name(code_dtype));
    }
  });
}

Tensor dequantize(const Tensor& codes, const quant::QuantizationParameters& parameters) {
  const char* op = "dequantize";
  check_defined(codes, op);
  QT_CHECK(!is_floating(codes.dtype()), "{}: codes must be integers, got {}", op,
           dtype_name(codes.dtype()));
  const int64_t axis = quant::check_parameters_for(parameters, codes, op);
  const Tensor dense = contiguous(codes);
  return dispatch_dtype(dense.dtype(), [&](auto code_tag) -> Tensor {
    using Code = decltype(code_tag);
    if constexpr (std::is_integral_v<Code>) {
      return dequantize_typed<Code>(dense, parameters, axis);
    } else {
      fail("dequantize: codes must be integers, got {}", dtype_name(dense.dtype()));
    }
  });
}

}  // namespace qt::ops

namespace qt::quant {

DType code_dtype(const QuantizationParameters& parameters) {
  if (parameters.bits > 8) return DType::i32;
  return parameters.int_min < 0 ? DType::i8 : DType::u8;
}

Tensor fake_quantize(const Tensor& x, const QuantizationParameters& parameters) {
  Tensor y = ops::fake_quantize(x, parameters);
  return record(y, "fake_quantize", {x},
                [x_saved = x.detach(), parameters](
                    const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
                  return {ops::fake_quantize_backward(grad, x_saved, parameters)};
                });
}

}  // namespace qt::quant

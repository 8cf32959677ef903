// The one iteration helper behind every elementwise kernel that is not a flat contiguous loop.
//
// Several operands (the output and one to three inputs) are walked with one shared multi-index over
// the output shape. Each operand brings its own strides, already broadcast to that shape: a
// broadcast dimension has stride 0, so the same element is read again and again.
//
// Two simplifications make the loop fast:
//   1. Coalescing. Adjacent dimensions (i, i+1) that every operand walks as one dense run, i.e.
//      stride[i] == stride[i+1] * shape[i+1] for all operands, merge into one dimension. Dims of
//      size 1 are dropped. A contiguous [3, 4, 5] tensor becomes one row of 60; [3, 1, 5] + [4, 1]
//      becomes [3, 4, 5] with strides (5, 0, 1) and (0, 1, 0) for the inputs.
//   2. Rows. The innermost (coalesced) dimension is handed to the kernel as a row: a pointer offset
//      per operand, a length, and an innermost stride per operand, so the kernel's inner loop is a
//      tight loop the compiler can vectorize when the strides are 1 (or 0, for a broadcast scalar).
//
// Threading: the rows are cut into chunks of about kElementsPerChunk elements, and an OpenMP loop
// over chunks runs them (only when worth_parallel, tensor/parallel_policy.h). Each chunk finds
// the multi-index of its first row once and then steps it like an odometer. Elementwise results do
// not depend on how the rows are split, so they are identical for any thread count.
//
// On top of for_each_row sit the three maps every elementwise op is written with: map_unary,
// map_binary (broadcasting) and map_ternary (for where). Each takes the per-element operation as a
// lambda; it is inlined into a flat loop when the inputs are dense and of the output's shape (the
// fast path) and into the row loop otherwise. Operations passed in must not throw: exceptions
// cannot leave an OpenMP region, so all checking happens before the loops start.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "tensor/parallel_policy.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"

namespace qt::detail {

// Work per OpenMP chunk in the strided loop.
constexpr int64_t kElementsPerChunk = int64_t{1} << 14;

// Strides with which `t` is read when broadcast to `shape` (NumPy rules: align on the right;
// dimensions t lacks or has as size 1 get stride 0). The caller has checked that `shape` is a
// valid broadcast target for t.
inline Shape broadcast_strides(const Tensor& t, const Shape& shape) {
  Shape strides(shape.size(), 0);
  const size_t lead = shape.size() - t.shape().size();
  for (size_t i = lead; i < shape.size(); ++i) {
    const int64_t size = t.shape()[i - lead];
    strides[i] = size == 1 ? 0 : t.strides()[i - lead];
  }
  return strides;
}

// A multi-operand iteration space after coalescing (see the top of this file).
template <size_t N>
struct StridedSpace {
  Shape shape;                   // coalesced shape; empty means a single element
  std::array<Shape, N> strides;  // per operand, same rank as `shape`
};

template <size_t N>
StridedSpace<N> coalesce(const Shape& shape, const std::array<Shape, N>& strides) {
  StridedSpace<N> space;
  for (size_t axis = 0; axis < shape.size(); ++axis) {
    if (shape[axis] == 1) continue;  // contributes nothing to any address
    bool merges = !space.shape.empty();
    for (size_t k = 0; k < N && merges; ++k) {
      merges = space.strides[k].back() == strides[k][axis] * shape[axis];
    }
    if (merges) {
      // The previous dim steps exactly over a whole run of this one: fuse them.
      space.shape.back() *= shape[axis];
      for (size_t k = 0; k < N; ++k) space.strides[k].back() = strides[k][axis];
    } else {
      space.shape.push_back(shape[axis]);
      for (size_t k = 0; k < N; ++k) space.strides[k].push_back(strides[k][axis]);
    }
  }
  return space;
}

// Calls row(offsets, length, inner_strides) once per innermost row of `shape`, where offsets[k] is
// the element offset of the row's first element in operand k and inner_strides[k] its step along
// the row. A shape with no elements makes no call; a rank-0 shape makes one call of length 1.
// `row` may run on several threads at once (on disjoint rows) and must not throw.
template <size_t N, typename RowFn>
void for_each_row(const Shape& shape, const std::array<Shape, N>& strides, RowFn&& row) {
  if (numel_of(shape) == 0) return;
  const StridedSpace<N> space = coalesce<N>(shape, strides);
  const int64_t rank = static_cast<int64_t>(space.shape.size());
  if (rank == 0) {  // a single element
    std::array<int64_t, N> zero{}, unit{};
    row(zero, int64_t{1}, unit);
    return;
  }
  const int64_t length = space.shape[rank - 1];
  std::array<int64_t, N> inner_strides;
  for (size_t k = 0; k < N; ++k) inner_strides[k] = space.strides[k][rank - 1];
  const int64_t rows = numel_of(space.shape) / length;
  const int64_t rows_per_chunk = std::max<int64_t>(1, kElementsPerChunk / length);
  const int64_t chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;

#pragma omp parallel for schedule( \
    static) if (qt::worth_parallel(rows * length, qt::WorkCost::standard) && chunks > 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t first_row = chunk * rows_per_chunk;
    const int64_t last_row = std::min(rows, first_row + rows_per_chunk);
    // Multi-index of first_row over the outer dims (row-major), and the operand offsets there.
    Shape index(static_cast<size_t>(rank - 1 > 0 ? rank - 1 : 0), 0);
    std::array<int64_t, N> offsets{};
    int64_t remaining = first_row;
    for (int64_t axis = rank - 2; axis >= 0; --axis) {
      index[axis] = remaining % space.shape[axis];
      remaining /= space.shape[axis];
      for (size_t k = 0; k < N; ++k) offsets[k] += index[axis] * space.strides[k][axis];
    }
    for (int64_t r = first_row; r < last_row; ++r) {
      row(offsets, length, inner_strides);
      // Odometer step to the next row: bump the last outer index, carrying into earlier ones.
      for (int64_t axis = rank - 2; axis >= 0; --axis) {
        for (size_t k = 0; k < N; ++k) offsets[k] += space.strides[k][axis];
        if (++index[axis] < space.shape[axis]) break;
        for (size_t k = 0; k < N; ++k) offsets[k] -= space.shape[axis] * space.strides[k][axis];
        index[axis] = 0;
      }
    }
  }
}

// ---- maps

// Calls body(begin, end) for consecutive chunks of [0, n) of kElementsPerChunk elements, on several
// threads when n is large. Used for the flat (dense) fast paths: handing each chunk to a function
// as plain pointer arguments lets the compiler vectorize the loop inside it (pointers shared into
// an OpenMP region are re-read from memory on every iteration and block vectorization).
template <typename Body>
void parallel_chunks(int64_t n, Body&& body) {
  const int64_t chunks = (n + kElementsPerChunk - 1) / kElementsPerChunk;
#pragma omp parallel for schedule(static) if (qt::worth_parallel(n, qt::WorkCost::standard) && \
                                              chunks > 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    body(chunk * kElementsPerChunk, std::min(n, (chunk + 1) * kElementsPerChunk));
  }
}

// One row of a unary op: dense, or strided.
template <typename Out, typename In, typename Op>
inline void unary_row(Out* o, const In* a, int64_t length, int64_t step_o, int64_t step_a, Op& op) {
  if (step_o == 1 && step_a == 1) {
    for (int64_t i = 0; i < length; ++i) o[i] = op(a[i]);
  } else {
    for (int64_t i = 0; i < length; ++i) o[i * step_o] = op(a[i * step_a]);
  }
}

// out[i] = op(x[i]) into a fresh dense tensor of x's shape and dtype `out_dtype` (C++ type Out).
template <typename Out, typename In, typename Op>
Tensor map_unary(const Tensor& x, DType out_dtype, Op op) {
  Tensor out = Tensor::empty(x.shape(), out_dtype);
  const int64_t n = out.numel();
  if (n == 0) return out;
  Out* out_data = out.data<Out>();
  const In* in = x.data<In>();
  if (x.is_contiguous()) {
    parallel_chunks(n, [&](int64_t begin, int64_t end) {
      unary_row(out_data + begin, in + begin, end - begin, 1, 1, op);
    });
    return out;
  }
  for_each_row<2>(x.shape(), {out.strides(), x.strides()},
                  [&](const std::array<int64_t, 2>& offsets, int64_t length,
                      const std::array<int64_t, 2>& steps) {
                    unary_row(out_data + offsets[0], in + offsets[1], length, steps[0], steps[1],
                              op);
                  });
  return out;
}

// One row of a binary op, with the common stride patterns as separate loops so that each one is a
// plain vectorizable loop: both inputs dense, or one of them a broadcast scalar (stride 0).
template <typename Out, typename A, typename B, typename Op>
inline void binary_row(Out* o, const A* a, const B* b, int64_t length, int64_t step_o,
                       int64_t step_a, int64_t step_b, Op& op) {
  if (step_o == 1 && step_a == 1 && step_b == 1) {
    for (int64_t i = 0; i < length; ++i) o[i] = op(a[i], b[i]);
  } else if (step_o == 1 && step_a == 1 && step_b == 0) {
    const B b0 = b[0];
    for (int64_t i = 0; i < length; ++i) o[i] = op(a[i], b0);
  } else if (step_o == 1 && step_a == 0 && step_b == 1) {
    const A a0 = a[0];
    for (int64_t i = 0; i < length; ++i) o[i] = op(a0, b[i]);
  } else {
    for (int64_t i = 0; i < length; ++i) o[i * step_o] = op(a[i * step_a], b[i * step_b]);
  }
}

// out = op(a, b) with NumPy broadcasting, into a fresh dense tensor of the broadcast shape.
// Throws (before any work) naming `name` and both shapes when they do not broadcast.
template <typename Out, typename A, typename B, typename Op>
Tensor map_binary(const Tensor& a, const Tensor& b, DType out_dtype, const char* name, Op op) {
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = Tensor::empty(shape, out_dtype);
  const int64_t n = out.numel();
  if (n == 0) return out;
  Out* out_data = out.data<Out>();
  const A* a_data = a.data<A>();
  const B* b_data = b.data<B>();
  if (a.shape() == shape && b.shape() == shape && a.is_contiguous() && b.is_contiguous()) {
    parallel_chunks(n, [&](int64_t begin, int64_t end) {
      binary_row(out_data + begin, a_data + begin, b_data + begin, end - begin, 1, 1, 1, op);
    });
    return out;
  }
  for_each_row<3>(shape, {out.strides(), broadcast_strides(a, shape), broadcast_strides(b, shape)},
                  [&](const std::array<int64_t, 3>& offsets, int64_t length,
                      const std::array<int64_t, 3>& steps) {
                    binary_row(out_data + offsets[0], a_data + offsets[1], b_data + offsets[2],
                               length, steps[0], steps[1], steps[2], op);
                  });
  return out;
}

// out = op(a, b, c), all three broadcast together (used by where).
template <typename Out, typename A, typename B, typename C, typename Op>
Tensor map_ternary(const Tensor& a, const Tensor& b, const Tensor& c, DType out_dtype,
                   const char* name, Op op) {
  const Shape shape =
      broadcast_shapes(broadcast_shapes(a.shape(), b.shape(), name), c.shape(), name);
  Tensor out = Tensor::empty(shape, out_dtype);
  if (out.numel() == 0) return out;
  Out* out_data = out.data<Out>();
  const A* a_data = a.data<A>();
  const B* b_data = b.data<B>();
  const C* c_data = c.data<C>();
  for_each_row<4>(shape,
                  {out.strides(), broadcast_strides(a, shape), broadcast_strides(b, shape),
                   broadcast_strides(c, shape)},
                  [&](const std::array<int64_t, 4>& offsets, int64_t length,
                      const std::array<int64_t, 4>& steps) {
                    Out* o = out_data + offsets[0];
                    const A* x = a_data + offsets[1];
                    const B* y = b_data + offsets[2];
                    const C* z = c_data + offsets[3];
                    if (steps[0] == 1 && steps[1] == 1 && steps[2] == 1 && steps[3] == 1) {
                      for (int64_t i = 0; i < length; ++i) o[i] = op(x[i], y[i], z[i]);
                    } else {
                      for (int64_t i = 0; i < length; ++i) {
                        o[i * steps[0]] = op(x[i * steps[1]], y[i * steps[2]], z[i * steps[3]]);
                      }
                    }
                  });
  return out;
}

// ---- integer arithmetic with defined overflow
//
// Signed overflow is undefined behaviour in C++; doing the arithmetic in the unsigned type of the
// same width and converting back gives two's-complement wrap-around (modulo 2^bits), which is what
// the hardware does anyway. For floating types these are the ordinary operations.

template <typename T>
inline T wrapping_add(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(a) + static_cast<U>(b));
  } else {
    return a + b;
  }
}

template <typename T>
inline T wrapping_sub(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(a) - static_cast<U>(b));
  } else {
    return a - b;
  }
}

template <typename T>
inline T wrapping_mul(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    // Promote to at least unsigned int so that u8 * u8 or u16 * u16 cannot overflow a signed int.
    using Wide = std::common_type_t<U, unsigned int>;
    return static_cast<T>(static_cast<Wide>(a) * static_cast<Wide>(b));
  } else {
    return a * b;
  }
}

template <typename T>
inline T wrapping_neg(T a) {
  if constexpr (std::is_integral_v<T>) {
    return wrapping_sub(T{0}, a);
  } else {
    return -a;
  }
}

}  // namespace qt::detail

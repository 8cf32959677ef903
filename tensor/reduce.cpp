// Reductions (sum, mean, max, min, var, argmax) and sum_to_shape.
//
// Every reduction is brought to one layout: a contiguous block viewed as [outer, reduced, inner],
// where `reduced` is the product of the reduced dims and the result has outer * inner elements:
//
//   out[o, j] = reduce over r of x[o, r, j]
//
// When the input is already contiguous and its reduced axes are adjacent (a trailing block such as
// "the last axis", a leading block such as "the batch axes", or a middle one) this view is free.
// Otherwise the input is permuted so that the reduced axes come last and copied into that order,
// which gives inner == 1: one row of `reduced` elements per output.
//
// Determinism. The reduced range is cut into fixed-size chunks (kChunkElements elements for rows;
// for columns, max(256, 4096 / inner) rows). Each chunk yields a partial
// result computed by one fixed loop, and the partials of one output are combined strictly in chunk
// order. Chunk boundaries depend only on the shape, never on the number of threads, so threads only
// decide *who* computes a chunk, not *how*: results are bit-identical with 1 or N threads.
//
// Accuracy of floating sums (f32 and f64 alike): accumulation is in double. Inside a row chunk,
// eight interleaved double accumulators (lane k takes elements i with i % 8 == k) are summed and
// then combined pairwise; chunk partials are then added in order. For f32 inputs the double
// accumulator makes the result essentially exact (the error is that of the final rounding to f32).
// For f64 inputs this is chunked summation: error ~ (chunk length / lanes + number of chunks) * eps
// instead of reduced * eps for a naive loop.
//
// NaN: sum/mean/var propagate NaN as arithmetic does; max/min return NaN if any reduced element is
// NaN (like torch.amax); argmax returns the index of the first NaN if there is one (NaN counts as
// the largest value, like torch.argmax), else the index of the first maximum.
#include "tensor/reduce.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <type_traits>

#include "tensor/parallel_policy.h"
#include "tensor/view.h"

namespace qt::ops {

namespace {

constexpr int64_t kChunkElements = 4096;   // elements per partial result of a row
constexpr int kLanes = 8;                  // interleaved accumulators inside a row chunk
constexpr int64_t kColumnChunkRows = 256;  // at least this many rows per column chunk
constexpr int64_t kColumnBlock = 1024;     // columns per work item in column reductions

// ---------------------------------------------------------------------------------------------
// The reduction operations. Each one says how to start (identity), how to take one element into
// an accumulator (step), and how to merge two accumulators (combine). `center` is only used by the
// variance's second pass, which sums (x - mean)^2; the other ops ignore it.

// Floating values accumulate in double, integers in int64 (a sum of u8 counts must not wrap).
template <typename T>
using SumAccumulator = std::conditional_t<std::is_floating_point_v<T>, double, int64_t>;

template <typename T>
struct SumOp {
  using In = T;
  using Acc = SumAccumulator<T>;
  static Acc identity() { return 0; }
  static Acc step(Acc acc, T value, double /*center*/) { return acc + static_cast<Acc>(value); }
  static Acc combine(Acc a, Acc b) { return a + b; }
};

// sum of (x - center)^2: the second pass of the two-pass variance.
template <typename T>
struct SquaredDeviationOp {
  using In = T;
  using Acc = double;
  static Acc identity() { return 0; }
  static Acc step(Acc acc, T value, double center) {
    const double deviation = static_cast<double>(value) - center;
    return acc + deviation * deviation;
  }
  static Acc combine(Acc a, Acc b) { return a + b; }
};

template <typename T>
bool is_nan(T value) {
  if constexpr (std::is_floating_point_v<T>) return value != value;
  return false;
}

// max: the identity is -inf (lowest for integers); a NaN, once taken, sticks (NaN > x and x > NaN
// are both false, so `acc` keeps the NaN; and `is_nan(value)` takes a new one).
template <typename T>
struct MaxOp {
  using In = T;
  using Acc = T;
  static Acc identity() {
    if constexpr (std::is_floating_point_v<T>) return -std::numeric_limits<T>::infinity();
    return std::numeric_limits<T>::lowest();
  }
  static Acc step(Acc acc, T value, double /*center*/) {
    return (value > acc || is_nan(value)) ? value : acc;
  }
  static Acc combine(Acc a, Acc b) { return step(a, b, 0); }
};

template <typename T>
struct MinOp {
  using In = T;
  using Acc = T;
  static Acc identity() {
    if constexpr (std::is_floating_point_v<T>) return std::numeric_limits<T>::infinity();
    return std::numeric_limits<T>::max();
  }
  static Acc step(Acc acc, T value, double /*center*/) {
    return (value < acc || is_nan(value)) ? value : acc;
  }
  static Acc combine(Acc a, Acc b) { return step(a, b, 0); }
};

// ---------------------------------------------------------------------------------------------
// The two chunk kernels.

// One chunk of a row: x[0..n). Lane k accumulates x[i] for i % kLanes == k (the lanes are
// independent, so the compiler turns them into vector registers); the lanes are then merged
// pairwise ((0+1)+(2+3))+((4+5)+(6+7)). The leftover tail (n % kLanes elements) goes to lane 0.
template <typename Op>
typename Op::Acc reduce_row_chunk(const typename Op::In* x, int64_t n, double center) {
  using Acc = typename Op::Acc;
  Acc lanes[kLanes];
  for (int k = 0; k < kLanes; ++k) lanes[k] = Op::identity();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int k = 0; k < kLanes; ++k) lanes[k] = Op::step(lanes[k], x[i + k], center);
  for (; i < n; ++i) lanes[0] = Op::step(lanes[0], x[i], center);
  for (int width = kLanes / 2; width >= 1; width /= 2)
    for (int k = 0; k < width; ++k) lanes[k] = Op::combine(lanes[2 * k], lanes[2 * k + 1]);
  return lanes[0];
}

// One chunk of columns: `rows` rows of a block whose rows are `row_stride` apart, `columns` wide;
// partial[j] = reduce over r of x[r * row_stride + j], rows taken in order. Vectorizes over j.
template <typename Op>
void reduce_column_chunk(const typename Op::In* x, int64_t rows, int64_t row_stride,
                         int64_t columns, const double* centers, typename Op::Acc* partial) {
  for (int64_t j = 0; j < columns; ++j) partial[j] = Op::identity();
  for (int64_t r = 0; r < rows; ++r) {
    const typename Op::In* row = x + r * row_stride;
    if (centers == nullptr) {
      for (int64_t j = 0; j < columns; ++j) partial[j] = Op::step(partial[j], row[j], 0.0);
    } else {
      for (int64_t j = 0; j < columns; ++j) partial[j] = Op::step(partial[j], row[j], centers[j]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The driver: out[o * inner + j] = reduce over r of x[(o * reduced + r) * inner + j], with x
// contiguous. `centers` (optional) has outer * inner entries, one per output.
//
// Work items: (o, chunk of the reduced range, block of columns). A row chunk (inner == 1) is
// kChunkElements elements of one row. A column chunk is chunk_rows whole rows of the [reduced,
// inner] block, restricted to one block of kColumnBlock columns so that its accumulators stay in
// the L1 cache; column blocks never change the order in which one output sees its elements.
template <typename Op>
std::vector<typename Op::Acc> reduce_blocks(const typename Op::In* x, int64_t outer,
                                            int64_t reduced, int64_t inner, const double* centers) {
  using Acc = typename Op::Acc;
  std::vector<Acc> out(static_cast<size_t>(outer * inner), Op::identity());
  if (outer * inner == 0 || reduced == 0) return out;
  const int64_t total = outer * reduced * inner;

  const int64_t chunk_rows =
      inner == 1 ? kChunkElements : std::max(kColumnChunkRows, kChunkElements / inner);
  const int64_t chunks = (reduced + chunk_rows - 1) / chunk_rows;
  const int64_t column_blocks = (inner + kColumnBlock - 1) / kColumnBlock;
  // partials[(o * chunks + c) * inner + j]: the result of chunk c for output (o, j).
  std::vector<Acc> partials(static_cast<size_t>(outer * chunks * inner));

#pragma omp parallel for schedule(static) if (qt::worth_parallel(total, qt::WorkCost::standard))
  for (int64_t item = 0; item < outer * chunks * column_blocks; ++item) {
    const int64_t o = item / (chunks * column_blocks);
    const int64_t c = (item / column_blocks) % chunks;
    const int64_t first_column = (item % column_blocks) * kColumnBlock;
    const int64_t columns = std::min(kColumnBlock, inner - first_column);
    const int64_t first_row = c * chunk_rows;
    const int64_t rows = std::min(chunk_rows, reduced - first_row);
    const typename Op::In* block = x + (o * reduced + first_row) * inner + first_column;
    Acc* partial = partials.data() + (o * chunks + c) * inner + first_column;
    const double* block_centers = centers ? centers + o * inner + first_column : nullptr;
    if (inner == 1) {
      partial[0] = reduce_row_chunk<Op>(block, rows, block_centers ? block_centers[0] : 0.0);
    } else {
      reduce_column_chunk<Op>(block, rows, inner, columns, block_centers, partial);
    }
  }

  // Combine the chunk partials of each output in chunk order.
#pragma omp parallel for schedule( \
    static) if (qt::worth_parallel(outer * chunks * inner, qt::WorkCost::standard))
  for (int64_t o = 0; o < outer; ++o) {
    Acc* result = out.data() + o * inner;
    const Acc* first = partials.data() + o * chunks * inner;
    std::copy(first, first + inner, result);
    for (int64_t c = 1; c < chunks; ++c) {
      const Acc* partial = first + c * inner;
      for (int64_t j = 0; j < inner; ++j) result[j] = Op::combine(result[j], partial[j]);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Bringing any input and axis set to the [outer, reduced, inner] layout.

struct ReductionPlan {
  Tensor input;  // contiguous
  int64_t outer = 1, reduced = 1, inner = 1;
  Shape out_shape;  // the result's shape (keepdim applied)
};

// Normalized, duplicate-free, sorted axes; an empty list means every axis.
std::vector<int64_t> reduction_axes(const Tensor& x, const Axes& axes, const char* op) {
  std::vector<int64_t> result;
  if (axes.empty()) {
    result.resize(x.dim());
    std::iota(result.begin(), result.end(), 0);
    return result;
  }
  for (int64_t axis : axes) {
    const int64_t normalized = normalize_axis(axis, x.dim(), op);
    QT_CHECK(std::find(result.begin(), result.end(), normalized) == result.end(),
             "{}: axis {} appears twice in the axes [{}] (shape {})", op, normalized,
             fmt::join(axes, ", "), shape_str(x.shape()));
    result.push_back(normalized);
  }
  std::sort(result.begin(), result.end());
  return result;
}

ReductionPlan plan_reduction(const Tensor& x, const Axes& axes, bool keepdim, const char* op) {
  check_defined(x, op);
  const std::vector<int64_t> reduced_axes = reduction_axes(x, axes, op);
  const int64_t rank = x.dim();
  std::vector<bool> is_reduced(rank, false);
  for (int64_t axis : reduced_axes) is_reduced[axis] = true;

  ReductionPlan plan;
  for (int64_t axis = 0; axis < rank; ++axis) {
    if (!is_reduced[axis]) {
      plan.out_shape.push_back(x.shape()[axis]);
    } else if (keepdim) {
      plan.out_shape.push_back(1);
    }
  }

  // Adjacent reduced axes [first, last] of a contiguous input: a free [outer, reduced, inner] view.
  const bool adjacent = reduced_axes.empty() || reduced_axes.back() - reduced_axes.front() + 1 ==
                                                    static_cast<int64_t>(reduced_axes.size());
  if (x.is_contiguous() && adjacent) {
    plan.input = x;
    const int64_t first = reduced_axes.empty() ? rank : reduced_axes.front();
    const int64_t last = reduced_axes.empty() ? rank - 1 : reduced_axes.back();
    for (int64_t axis = 0; axis < first; ++axis) plan.outer *= x.shape()[axis];
    for (int64_t axis = first; axis <= last; ++axis) plan.reduced *= x.shape()[axis];
    for (int64_t axis = last + 1; axis < rank; ++axis) plan.inner *= x.shape()[axis];
    return plan;
  }

  // Otherwise: kept axes first (in order), reduced axes last, copied densely -> rows.
  std::vector<int64_t> order;
  for (int64_t axis = 0; axis < rank; ++axis)
    if (!is_reduced[axis]) order.push_back(axis);
  for (int64_t axis : reduced_axes) order.push_back(axis);
  plan.input = contiguous(permute(x, order));
  for (int64_t axis = 0; axis < rank; ++axis)
    (is_reduced[axis] ? plan.reduced : plan.outer) *= x.shape()[axis];
  plan.inner = 1;
  return plan;
}

// Writes accumulators (one per output) into a new tensor of `dtype`, applying `finish`.
template <typename Out, typename Acc, typename Finish>
Tensor make_result(const std::vector<Acc>& values, const Shape& shape, DType dtype, Finish finish) {
  Tensor out = Tensor::empty(shape, dtype);
  Out* data = out.data<Out>();
  const int64_t n = static_cast<int64_t>(values.size());
  for (int64_t i = 0; i < n; ++i) data[i] = static_cast<Out>(finish(values[i]));
  return out;
}

void check_not_empty_reduction(const ReductionPlan& plan, const Tensor& x, const char* op) {
  QT_CHECK(plan.reduced > 0 || plan.outer * plan.inner == 0,
           "{}: cannot reduce over zero elements (shape {})", op, shape_str(x.shape()));
}

}  // namespace

// ---------------------------------------------------------------------------------------------

// sum: floating inputs keep their dtype; integer inputs give i64 (like torch.sum), so that counting
// a u8 mask cannot wrap.
Tensor sum(const Tensor& x, const Axes& axes, bool keepdim) {
  const ReductionPlan plan = plan_reduction(x, axes, keepdim, "sum");
  return dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const auto sums = reduce_blocks<SumOp<T>>(plan.input.data<T>(), plan.outer, plan.reduced,
                                              plan.inner, nullptr);
    if constexpr (std::is_floating_point_v<T>) {
      return make_result<T>(sums, plan.out_shape, x.dtype(), [](double s) { return s; });
    } else {
      return make_result<int64_t>(sums, plan.out_shape, DType::i64, [](int64_t s) { return s; });
    }
  });
}

// mean = sum / count, divided in double before rounding to the output dtype. Floating only.
// A reduction over zero elements gives NaN (0/0), like torch.mean.
Tensor mean(const Tensor& x, const Axes& axes, bool keepdim) {
  check_floating(x, "mean");
  const ReductionPlan plan = plan_reduction(x, axes, keepdim, "mean");
  const double count = static_cast<double>(plan.reduced);
  return dispatch_dtype(x.dtype(), [&](auto tag) -> Tensor {
    using T = decltype(tag);
    if constexpr (std::is_floating_point_v<T>) {
      const auto sums = reduce_blocks<SumOp<T>>(plan.input.data<T>(), plan.outer, plan.reduced,
                                                plan.inner, nullptr);
      return make_result<T>(sums, plan.out_shape, x.dtype(), [&](double s) { return s / count; });
    }
    return Tensor();  // unreachable: check_floating above
  });
}

Tensor max(const Tensor& x, const Axes& axes, bool keepdim) {
  const ReductionPlan plan = plan_reduction(x, axes, keepdim, "max");
  check_not_empty_reduction(plan, x, "max");
  return dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const auto maxima = reduce_blocks<MaxOp<T>>(plan.input.data<T>(), plan.outer, plan.reduced,
                                                plan.inner, nullptr);
    return make_result<T>(maxima, plan.out_shape, x.dtype(), [](T m) { return m; });
  });
}

Tensor min(const Tensor& x, const Axes& axes, bool keepdim) {
  const ReductionPlan plan = plan_reduction(x, axes, keepdim, "min");
  check_not_empty_reduction(plan, x, "min");
  return dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const auto minima = reduce_blocks<MinOp<T>>(plan.input.data<T>(), plan.outer, plan.reduced,
                                                plan.inner, nullptr);
    return make_result<T>(minima, plan.out_shape, x.dtype(), [](T m) { return m; });
  });
}

// Two-pass variance, both passes accumulated in double:
//   mean_o = (1/n) sum_r x[o, r]
//   var_o  = sum_r (x[o, r] - mean_o)^2 / (n - correction)
// The second pass subtracts the mean before squaring, so there is no catastrophic cancellation
// (unlike E[x^2] - E[x]^2). n - correction <= 0 divides by zero: inf, or NaN when the sum of
// squares is 0 (e.g. one element with correction 1), like torch.var.
Tensor var(const Tensor& x, const Axes& axes, bool keepdim, int64_t correction) {
  check_floating(x, "var");
  QT_CHECK(correction >= 0, "var: correction must be >= 0, got {}", correction);
  const ReductionPlan plan = plan_reduction(x, axes, keepdim, "var");
  const double count = static_cast<double>(plan.reduced);
  const double divisor = std::max(count - static_cast<double>(correction), 0.0);
  return dispatch_dtype(x.dtype(), [&](auto tag) -> Tensor {
    using T = decltype(tag);
    if constexpr (std::is_floating_point_v<T>) {
      const T* data = plan.input.data<T>();
      std::vector<double> means =
          reduce_blocks<SumOp<T>>(data, plan.outer, plan.reduced, plan.inner, nullptr);
      for (double& m : means) m /= count;
      const auto squares = reduce_blocks<SquaredDeviationOp<T>>(data, plan.outer, plan.reduced,
                                                                plan.inner, means.data());
      return make_result<T>(squares, plan.out_shape, x.dtype(),
                            [&](double s) { return s / divisor; });
    }
    return Tensor();  // unreachable: check_floating above
  });
}

// argmax along one axis: the axis is moved last and made contiguous, then each row is scanned in
// order. Rows are independent, so threads over rows cannot change the result.
Tensor argmax(const Tensor& x, int64_t axis, bool keepdim) {
  check_defined(x, "argmax");
  axis = normalize_axis(axis, x.dim(), "argmax");
  const int64_t n = x.shape()[axis];
  Shape out_shape = x.shape();
  if (keepdim) {
    out_shape[axis] = 1;
  } else {
    out_shape.erase(out_shape.begin() + axis);
  }
  Tensor out = Tensor::empty(out_shape, DType::i64);
  const int64_t rows = out.numel();
  QT_CHECK(n > 0 || rows == 0, "argmax: cannot take the argmax over an empty axis {} (shape {})",
           axis, shape_str(x.shape()));
  if (rows == 0) return out;
  // Move the axis last, keeping the other axes in order, so that each output is one dense row.
  std::vector<int64_t> order;
  for (int64_t a = 0; a < x.dim(); ++a)
    if (a != axis) order.push_back(a);
  order.push_back(axis);
  const Tensor input = contiguous(permute(x, order));
  int64_t* result = out.data<int64_t>();
  dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* data = input.data<T>();
#pragma omp parallel for schedule(static) if (qt::worth_parallel(rows * n, qt::WorkCost::standard))
    for (int64_t row = 0; row < rows; ++row) {
      const T* values = data + row * n;
      int64_t best = 0;
      for (int64_t i = 1; i < n; ++i) {
        if (is_nan(values[best])) break;  // the first NaN wins
        if (values[i] > values[best] || is_nan(values[i])) best = i;
      }
      result[row] = best;
    }
  });
  return out;
}

// The backward of broadcasting: grad has the broadcast shape; every axis that broadcasting created
// (leading extra axes) or stretched (size 1 in `shape`) is summed away.
Tensor sum_to_shape(const Tensor& grad, const Shape& shape) {
  check_defined(grad, "sum_to_shape");
  const int64_t rank = grad.dim();
  const int64_t target_rank = static_cast<int64_t>(shape.size());
  const int64_t lead = rank - target_rank;
  auto incompatible = [&] {
    fail("sum_to_shape: shape {} does not broadcast to the gradient's shape {}", shape_str(shape),
         shape_str(grad.shape()));
  };
  if (lead < 0) incompatible();
  Axes axes;
  for (int64_t axis = 0; axis < rank; ++axis) {
    if (axis < lead) {
      axes.push_back(axis);
      continue;
    }
    const int64_t target = shape[axis - lead];
    if (target == grad.shape()[axis]) continue;
    if (target != 1) incompatible();
    axes.push_back(axis);
  }
  if (axes.empty()) return grad;  // nothing was broadcast (note: sum with {} would reduce all)
  return reshape(sum(grad, axes, /*keepdim=*/true), shape);
}

}  // namespace qt::ops

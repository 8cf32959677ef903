// Comparing and printing tensors (see tensor/compare.h). Meant for tests and debugging, so the code
// favours clarity over speed: both operands are converted to f64 and broadcast first.
#include "tensor/compare.h"

#include <cmath>
#include <limits>

#include "tensor/create.h"
#include "tensor/elementwise.h"
#include "tensor/view.h"

namespace qt::ops {

namespace {

// a and b as dense f64 vectors over their common broadcast shape (error names `op` and both
// shapes).
struct BroadcastPair {
  std::vector<double> a, b;
};

BroadcastPair broadcast_pair(const Tensor& a, const Tensor& b, const char* op) {
  check_defined(a, op);
  check_defined(b, op);
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), op);
  return {to_vector<double>(expand(a, shape)), to_vector<double>(expand(b, shape))};
}

// NumPy's isclose with equal_nan=False: NaN is never close; infinities are close only to an
// infinity of the same sign; finite values when |x - y| <= atol + rtol |y| (not symmetric: y is the
// reference).
bool is_close(double x, double y, double rtol, double atol) {
  if (std::isnan(x) || std::isnan(y)) return false;
  if (!std::isfinite(x) || !std::isfinite(y)) return x == y;
  return std::abs(x - y) <= atol + rtol * std::abs(y);
}

// One element as text: integers in decimal, floats in the shortest form that reads back to the same
// value of their own type (so an f32 0.1 prints as 0.1, not 0.10000000149011612).
std::string element_str(const Tensor& t, int64_t position) {
  return dispatch_dtype(t.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T value = static_cast<const T*>(t.storage()->data)[position];
    if constexpr (sizeof(T) == 1) {
      return fmt::format("{}", static_cast<int>(value));  // not as a character
    } else {
      return fmt::format("{}", value);
    }
  });
}

// Appends the sub-tensor that starts at storage position `position` and spans dims axis.. of t.
void append_nested(std::string& out, const Tensor& t, int64_t axis, int64_t position,
                   int64_t edge_items) {
  if (axis == t.dim()) {
    out += element_str(t, position);
    return;
  }
  const int64_t size = t.shape()[axis];
  const bool elide = size > 2 * edge_items;
  out += '[';
  for (int64_t i = 0; i < size; ++i) {
    if (elide && i == edge_items) {
      out += "..., ";
      i = size - edge_items;  // jump to the last edge_items entries
    }
    append_nested(out, t, axis + 1, position + i * t.strides()[axis], edge_items);
    if (i + 1 < size) out += ", ";
  }
  out += ']';
}

}  // namespace

bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol) {
  QT_CHECK(rtol >= 0 && atol >= 0, "allclose: tolerances must be non-negative (rtol {}, atol {})",
           rtol, atol);
  const BroadcastPair pair = broadcast_pair(a, b, "allclose");
  for (size_t i = 0; i < pair.a.size(); ++i) {
    if (!is_close(pair.a[i], pair.b[i], rtol, atol)) return false;
  }
  return true;
}

// NaN in either operand makes the answer NaN (so a test message never hides it); 0 for empty
// tensors.
double max_abs_diff(const Tensor& a, const Tensor& b) {
  const BroadcastPair pair = broadcast_pair(a, b, "max_abs_diff");
  double largest = 0;
  for (size_t i = 0; i < pair.a.size(); ++i) {
    const double diff = std::abs(pair.a[i] - pair.b[i]);
    if (std::isnan(diff)) return std::numeric_limits<double>::quiet_NaN();
    if (diff > largest) largest = diff;
  }
  return largest;
}

std::string to_string(const Tensor& t, int64_t edge_items) {
  if (!t.defined()) return "tensor(undefined)";
  QT_CHECK(edge_items >= 1, "to_string: edge_items must be at least 1, got {}", edge_items);
  std::string out = fmt::format("tensor({} {}) ", dtype_name(t.dtype()), shape_str(t.shape()));
  append_nested(out, t, 0, t.offset(), edge_items);
  return out;
}

}  // namespace qt::ops

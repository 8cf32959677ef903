// Shapes and strides. Strides are counted in elements (not bytes). A dimension of size 1 may have
// any stride; broadcasting (expand) gives a dimension stride 0 so that one element is read many
// times.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qt {

using Shape = std::vector<int64_t>;

int64_t numel_of(const Shape& shape);

// Row-major (C order) strides for a dense tensor of this shape: the last dimension has stride 1.
Shape contiguous_strides(const Shape& shape);

// NumPy broadcasting: align shapes on the right; sizes must be equal or one of them 1.
// Throws qt::Error naming `op` and both shapes when they are incompatible.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

// Turns a possibly negative axis (-1 = last) into 0..rank-1; throws naming `op` if out of range.
int64_t normalize_axis(int64_t axis, int64_t rank, const char* op);

// The row-major multi-index of flat position `flat` in `shape` (the inverse of
// flat = ((i0 * s1 + i1) * s2 + i2) ...).
std::vector<int64_t> unravel_index(int64_t flat, const Shape& shape);

// "[2, 3, 4]"
std::string shape_str(const Shape& shape);

}  // namespace qt

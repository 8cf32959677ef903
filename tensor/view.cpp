#include "tensor/view.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "tensor/parallel_policy.h"

namespace qt::ops {

namespace {

Tensor with_layout(const Tensor& t, const Shape& shape, const Shape& strides, int64_t offset) {
  return Tensor::from_storage(t.storage(), shape, strides, offset, t.dtype());
}

// Resolves a single -1 in `shape` so that the element count matches `numel`.
Shape infer_shape(Shape shape, int64_t numel, const char* op) {
  int64_t known = 1, inferred_axis = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      QT_CHECK(inferred_axis < 0, "{}: more than one -1 in shape {}", op, shape_str(shape));
      inferred_axis = static_cast<int64_t>(i);
    } else {
      QT_CHECK(shape[i] >= 0, "{}: invalid size {} in shape {}", op, shape[i], shape_str(shape));
      known *= shape[i];
    }
  }
  if (inferred_axis >= 0) {
    QT_CHECK(known != 0 && numel % known == 0, "{}: cannot infer -1 in shape {} for {} elements",
             op, shape_str(shape), numel);
    shape[inferred_axis] = numel / known;
  }
  QT_CHECK(numel_of(shape) == numel, "{}: shape {} has {} elements, the tensor has {}", op,
           shape_str(shape), numel_of(shape), numel);
  return shape;
}

// Strides that let `new_shape` view the same memory as (old_shape, old_strides), or an empty vector
// when that is impossible. The old dims split into "chunks": maximal runs of dims that are dense
// among themselves (stride[i-1] == stride[i] * size[i], size-1 dims ignored). Walking both shapes
// from the right, each chunk must be covered exactly by a run of new dims, whose strides are then
// the chunk's innermost stride times the product of the new sizes to their right.
Shape view_strides(const Shape& old_shape, const Shape& old_strides, const Shape& new_shape) {
  const int64_t new_rank = static_cast<int64_t>(new_shape.size());
  Shape new_strides(new_shape.size(), 1);
  if (numel_of(old_shape) == 0 || old_shape.empty()) return contiguous_strides(new_shape);
  int64_t new_axis = new_rank - 1;
  int64_t chunk_stride = old_strides.back();  // stride of the innermost dim of the current chunk
  int64_t chunk_numel = 1, covered_numel = 1;
  for (int64_t old_axis = static_cast<int64_t>(old_shape.size()) - 1; old_axis >= 0; --old_axis) {
    chunk_numel *= old_shape[old_axis];
    const bool chunk_ends =
        old_axis == 0 ||
        (old_shape[old_axis - 1] != 1 && old_strides[old_axis - 1] != chunk_numel * chunk_stride);
    if (!chunk_ends) continue;
    while (new_axis >= 0 && (covered_numel < chunk_numel || new_shape[new_axis] == 1)) {
      new_strides[new_axis] = covered_numel * chunk_stride;
      covered_numel *= new_shape[new_axis];
      --new_axis;
    }
    if (covered_numel != chunk_numel) return {};
    if (old_axis > 0) {
      chunk_stride = old_strides[old_axis - 1];
      chunk_numel = 1;
      covered_numel = 1;
    }
  }
  if (new_axis != -1) return {};
  return new_strides;
}

}  // namespace

Tensor view(const Tensor& t, Shape shape) {
  check_defined(t, "view");
  shape = infer_shape(std::move(shape), t.numel(), "view");
  Shape strides = view_strides(t.shape(), t.strides(), shape);
  QT_CHECK(!strides.empty() || shape.empty(),
           "view: a tensor of shape {} with strides {} cannot be viewed as {} without a copy (use "
           "reshape)",
           shape_str(t.shape()), shape_str(t.strides()), shape_str(shape));
  return with_layout(t, shape, strides, t.offset());
}

Tensor reshape(const Tensor& t, Shape shape) {
  check_defined(t, "reshape");
  shape = infer_shape(std::move(shape), t.numel(), "reshape");
  Shape strides = view_strides(t.shape(), t.strides(), shape);
  if (!strides.empty() || shape.empty()) return with_layout(t, shape, strides, t.offset());
  return view(contiguous(t), shape);
}

Tensor permute(const Tensor& t, const std::vector<int64_t>& order) {
  check_defined(t, "permute");
  QT_CHECK(static_cast<int64_t>(order.size()) == t.dim(),
           "permute: order [{}] has {} entries for a tensor of shape {}", fmt::join(order, ", "),
           order.size(), shape_str(t.shape()));
  Shape shape(order.size()), strides(order.size());
  std::vector<bool> seen(order.size(), false);
  for (size_t i = 0; i < order.size(); ++i) {
    const int64_t axis = normalize_axis(order[i], t.dim(), "permute");
    QT_CHECK(!seen[axis], "permute: axis {} appears twice in [{}]", axis, fmt::join(order, ", "));
    seen[axis] = true;
    shape[i] = t.shape()[axis];
    strides[i] = t.strides()[axis];
  }
  return with_layout(t, shape, strides, t.offset());
}

Tensor transpose(const Tensor& t, int64_t axis_a, int64_t axis_b) {
  check_defined(t, "transpose");
  std::vector<int64_t> order(t.dim());
  std::iota(order.begin(), order.end(), 0);
  std::swap(order[normalize_axis(axis_a, t.dim(), "transpose")],
            order[normalize_axis(axis_b, t.dim(), "transpose")]);
  return permute(t, order);
}

Tensor narrow(const Tensor& t, int64_t axis, int64_t start, int64_t length) {
  check_defined(t, "narrow");
  axis = normalize_axis(axis, t.dim(), "narrow");
  const int64_t size = t.shape()[axis];
  QT_CHECK(start >= 0 && length >= 0 && start + length <= size,
           "narrow: range [{}, {}) is outside axis {} of size {} (shape {})", start, start + length,
           axis, size, shape_str(t.shape()));
  Shape shape = t.shape();
  shape[axis] = length;
  return with_layout(t, shape, t.strides(), t.offset() + start * t.strides()[axis]);
}

Tensor select(const Tensor& t, int64_t axis, int64_t index) {
  check_defined(t, "select");
  axis = normalize_axis(axis, t.dim(), "select");
  const int64_t size = t.shape()[axis];
  QT_CHECK(index >= -size && index < size,
           "select: index {} is out of range for axis {} of size {}", index, axis, size);
  if (index < 0) index += size;
  Shape shape = t.shape(), strides = t.strides();
  const int64_t offset = t.offset() + index * strides[axis];
  shape.erase(shape.begin() + axis);
  strides.erase(strides.begin() + axis);
  return with_layout(t, shape, strides, offset);
}

Tensor expand(const Tensor& t, const Shape& shape) {
  check_defined(t, "expand");
  QT_CHECK(static_cast<int64_t>(shape.size()) >= t.dim(),
           "expand: cannot expand shape {} to fewer dims {}", shape_str(t.shape()),
           shape_str(shape));
  const size_t lead = shape.size() - t.shape().size();
  Shape strides(shape.size(), 0);
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) continue;  // new leading dims: stride 0
    const int64_t from = t.shape()[i - lead];
    QT_CHECK(from == shape[i] || from == 1, "expand: cannot broadcast shape {} to {}",
             shape_str(t.shape()), shape_str(shape));
    strides[i] = from == shape[i] ? t.strides()[i - lead] : 0;
  }
  return with_layout(t, shape, strides, t.offset());
}

Tensor squeeze(const Tensor& t, int64_t axis) {
  check_defined(t, "squeeze");
  axis = normalize_axis(axis, t.dim(), "squeeze");
  QT_CHECK(t.shape()[axis] == 1, "squeeze: axis {} has size {}, not 1 (shape {})", axis,
           t.shape()[axis], shape_str(t.shape()));
  return select(t, axis, 0);
}

Tensor unsqueeze(const Tensor& t, int64_t axis) {
  check_defined(t, "unsqueeze");
  axis = normalize_axis(axis, t.dim() + 1, "unsqueeze");
  Shape shape = t.shape(), strides = t.strides();
  // The new size-1 dim's stride never matters for addressing; pick the dense value for tidiness.
  const int64_t stride = axis < t.dim() ? strides[axis] * shape[axis] : 1;
  shape.insert(shape.begin() + axis, 1);
  strides.insert(strides.begin() + axis, stride);
  return with_layout(t, shape, strides, t.offset());
}

Tensor flatten(const Tensor& t, int64_t start, int64_t end) {
  check_defined(t, "flatten");
  if (t.dim() == 0) return reshape(t, {1});
  start = normalize_axis(start, t.dim(), "flatten");
  end = normalize_axis(end, t.dim(), "flatten");
  QT_CHECK(start <= end, "flatten: start axis {} is after end axis {}", start, end);
  Shape shape(t.shape().begin(), t.shape().begin() + start);
  int64_t merged = 1;
  for (int64_t i = start; i <= end; ++i) merged *= t.shape()[i];
  shape.push_back(merged);
  shape.insert(shape.end(), t.shape().begin() + end + 1, t.shape().end());
  return reshape(t, shape);
}

namespace {

// Strided copy: walks dst and src with one multi-index; the innermost dimension is a tight loop.
template <typename T>
void copy_strided(const Tensor& dst, const Tensor& src) {
  T* out = dst.data<T>();
  const T* in = src.data<T>();
  const int64_t rank = dst.dim();
  if (rank == 0) {
    out[0] = in[0];
    return;
  }
  const int64_t inner = dst.shape()[rank - 1];
  const int64_t out_inner_stride = dst.strides()[rank - 1],
                in_inner_stride = src.strides()[rank - 1];
  const int64_t rows = inner == 0 ? 0 : dst.numel() / inner;
#pragma omp parallel for schedule(static) if (qt::worth_parallel(rows * inner, qt::WorkCost::light))
  for (int64_t row = 0; row < rows; ++row) {
    // Decompose the row number into the outer indices (row-major) to find both start positions.
    int64_t remaining = row, out_pos = 0, in_pos = 0;
    for (int64_t axis = rank - 2; axis >= 0; --axis) {
      const int64_t index = remaining % dst.shape()[axis];
      remaining /= dst.shape()[axis];
      out_pos += index * dst.strides()[axis];
      in_pos += index * src.strides()[axis];
    }
    if (out_inner_stride == 1 && in_inner_stride == 1) {
      std::memcpy(out + out_pos, in + in_pos, static_cast<size_t>(inner) * sizeof(T));
    } else {
      for (int64_t i = 0; i < inner; ++i)
        out[out_pos + i * out_inner_stride] = in[in_pos + i * in_inner_stride];
    }
  }
}

}  // namespace

void copy_into(const Tensor& dst, const Tensor& src) {
  check_same_dtype(dst, src, "copy_into");
  QT_CHECK(dst.shape() == src.shape(),
           "copy_into: destination shape {} differs from source shape {}", shape_str(dst.shape()),
           shape_str(src.shape()));
  if (dst.numel() == 0) return;
  dispatch_dtype(dst.dtype(), [&](auto tag) { copy_strided<decltype(tag)>(dst, src); });
}

Tensor contiguous(const Tensor& t) {
  check_defined(t, "contiguous");
  return t.is_contiguous() ? t : clone(t);
}

Tensor clone(const Tensor& t) {
  check_defined(t, "clone");
  Tensor out = Tensor::empty(t.shape(), t.dtype());
  copy_into(out, t);
  return out;
}

}  // namespace qt::ops

// Joining (cat, stack) and indexing (gather, scatter_add, index_select, index_add, embedding,
// embedding_backward, one_hot).
//
// Index tensors are i64. Every index is validated before any element is written, so a bad index
// throws qt::Error (naming the value and the valid range) instead of reading or writing out of
// bounds; the checks run outside the OpenMP regions (an exception must not escape one).
//
// Determinism of the accumulating ops (scatter_add, index_add, embedding_backward): every output
// element receives its contributions in increasing index-position order, from exactly one thread.
// Threads are split over outputs (never over the positions that feed one output), so there are no
// atomics and the sums are bit-identical with any number of threads.
#include "tensor/index.h"

#include <cstring>
#include <numeric>
#include <type_traits>

#include "tensor/parallel_policy.h"
#include "tensor/view.h"

namespace qt::ops {

namespace {

// A dense tensor of zeros (all-zero bytes are 0 in every dtype, 0.0 included).
Tensor zeros_of(const Shape& shape, DType dtype) {
  Tensor out = Tensor::empty(shape, dtype);
  std::memset(out.raw_data(), 0, static_cast<size_t>(out.numel()) * dtype_size(dtype));
  return out;
}

int64_t product(const Shape& shape, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < end; ++i) p *= shape[i];
  return p;
}

// Checks that every value of a contiguous i64 buffer lies in [0, size); throws naming the first bad
// one.
void check_indices(const int64_t* indices, int64_t count, int64_t size, const char* op,
                   const char* what) {
  for (int64_t i = 0; i < count; ++i) {
    QT_CHECK(indices[i] >= 0 && indices[i] < size,
             "{}: {} {} at position {} is out of range [0, {})", op, what, indices[i], i, size);
  }
}

// For the multi-indices of `shape` (row-major), the element offset each one has under `strides`:
// offsets[p] = sum_d index_d(p) * strides[d]. Used to address a tensor of any layout (or a bigger
// tensor, when `shape` is smaller than the tensor on some dims) from a dense enumeration.
std::vector<int64_t> strided_offsets(const Shape& shape, const Shape& strides) {
  const int64_t count = numel_of(shape);
  std::vector<int64_t> offsets(static_cast<size_t>(count), 0);
  std::vector<int64_t> index(shape.size(), 0);
  int64_t offset = 0;
  for (int64_t p = 0; p < count; ++p) {
    offsets[p] = offset;
    // Increment the multi-index like an odometer, keeping `offset` in step.
    for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
      if (++index[d] < shape[d]) {
        offset += strides[d];
        break;
      }
      offset -= (shape[d] - 1) * strides[d];
      index[d] = 0;
    }
  }
  return offsets;
}

Shape prefix(const Shape& s, int64_t end) {
  return Shape(s.begin(), s.begin() + end);
}
Shape suffix(const Shape& s, int64_t begin) {
  return Shape(s.begin() + begin, s.end());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Joining

Tensor cat(const std::vector<Tensor>& tensors, int64_t axis) {
  QT_CHECK(!tensors.empty(), "cat: needs at least one tensor");
  const Tensor& first = tensors.front();
  check_defined(first, "cat");
  QT_CHECK(first.dim() > 0, "cat: cannot concatenate rank-0 tensors (use stack)");
  axis = normalize_axis(axis, first.dim(), "cat");
  Shape out_shape = first.shape();
  out_shape[axis] = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    check_same_dtype(first, t, "cat");
    bool compatible = t.dim() == first.dim();
    for (int64_t d = 0; compatible && d < first.dim(); ++d)
      compatible = d == axis || t.shape()[d] == first.shape()[d];
    QT_CHECK(compatible,
             "cat: tensor {} has shape {}, incompatible with {} for joining along axis {}", i,
             shape_str(t.shape()), shape_str(first.shape()), axis);
    out_shape[axis] += t.shape()[axis];
  }
  Tensor out = Tensor::empty(out_shape, first.dtype());
  int64_t start = 0;
  for (const Tensor& t : tensors) {
    const int64_t length = t.shape()[axis];
    if (length > 0) copy_into(narrow(out, axis, start, length), t);
    start += length;
  }
  return out;
}

Tensor stack(const std::vector<Tensor>& tensors, int64_t axis) {
  QT_CHECK(!tensors.empty(), "stack: needs at least one tensor");
  check_defined(tensors.front(), "stack");
  const Shape& shape = tensors.front().shape();
  axis = normalize_axis(axis, static_cast<int64_t>(shape.size()) + 1, "stack");
  std::vector<Tensor> expanded;
  for (size_t i = 0; i < tensors.size(); ++i) {
    check_defined(tensors[i], "stack");
    QT_CHECK(tensors[i].shape() == shape,
             "stack: tensor {} has shape {}, expected {} like tensor 0", i,
             shape_str(tensors[i].shape()), shape_str(shape));
    expanded.push_back(unsqueeze(tensors[i], axis));
  }
  return cat(expanded, axis);
}

// ---------------------------------------------------------------------------------------------
// gather / scatter_add
//
// Both enumerate the index tensor as [outer, K, inner] (outer = index dims before the axis,
// K = index.size(axis), inner = dims after). Position (o, k, j) addresses the data tensor at
//   outer_offsets[o] + index[o, k, j] * stride(axis) + inner_offsets[j]
// where the offset tables come from the data tensor's strides (the index may be smaller than the
// data on every dim other than the axis).

namespace {

struct GatherPlan {
  Tensor index;  // contiguous i64
  int64_t axis = 0, outer = 1, positions = 1, inner = 1;
  std::vector<int64_t> outer_offsets, inner_offsets;
};

GatherPlan plan_gather(const Shape& data_shape, const Shape& data_strides, int64_t axis,
                       const Tensor& index, const char* op) {
  check_dtype(index, DType::i64, op);
  const int64_t rank = static_cast<int64_t>(data_shape.size());
  QT_CHECK(rank > 0, "{}: the data tensor must have rank >= 1", op);
  GatherPlan plan;
  plan.axis = normalize_axis(axis, rank, op);
  QT_CHECK(index.dim() == rank, "{}: index shape {} must have the same rank as the data shape {}",
           op, shape_str(index.shape()), shape_str(data_shape));
  for (int64_t d = 0; d < rank; ++d) {
    QT_CHECK(d == plan.axis || index.shape()[d] <= data_shape[d],
             "{}: index shape {} is larger than the data shape {} on axis {}", op,
             shape_str(index.shape()), shape_str(data_shape), d);
  }
  plan.index = contiguous(index);
  check_indices(plan.index.data<int64_t>(), plan.index.numel(), data_shape[plan.axis], op, "index");
  const Shape& is = index.shape();
  plan.outer = product(is, 0, plan.axis);
  plan.positions = is[plan.axis];
  plan.inner = product(is, plan.axis + 1, is.size());
  plan.outer_offsets = strided_offsets(prefix(is, plan.axis), prefix(data_strides, plan.axis));
  plan.inner_offsets =
      strided_offsets(suffix(is, plan.axis + 1), suffix(data_strides, plan.axis + 1));
  return plan;
}

}  // namespace

// out[o, k, j] = x[o, index[o, k, j], j]  (torch.gather)
Tensor gather(const Tensor& x, int64_t axis, const Tensor& index) {
  check_defined(x, "gather");
  const GatherPlan plan = plan_gather(x.shape(), x.strides(), axis, index, "gather");
  Tensor out = Tensor::empty(index.shape(), x.dtype());
  const int64_t* indices = plan.index.data<int64_t>();
  const int64_t axis_stride = x.strides()[plan.axis];
  const int64_t K = plan.positions, inner = plan.inner;
  dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* in = x.data<T>();
    T* result = out.data<T>();
#pragma omp parallel for schedule( \
    static) if (qt::worth_parallel(out.numel(), qt::WorkCost::standard))
    for (int64_t ok = 0; ok < plan.outer * K; ++ok) {
      const int64_t o = ok / K;
      const int64_t* row_indices = indices + ok * inner;
      T* row_out = result + ok * inner;
      const T* base = in + plan.outer_offsets[o];
      for (int64_t j = 0; j < inner; ++j)
        row_out[j] = base[row_indices[j] * axis_stride + plan.inner_offsets[j]];
    }
  });
  return out;
}

// out = zeros(shape); out[o, index[o, k, j], j] += grad[o, k, j]. Contributions to one output can
// only come from the same (o, j) (different k), so threads split over o and each loops k in order.
Tensor scatter_add(const Shape& shape, int64_t axis, const Tensor& index, const Tensor& grad) {
  check_defined(grad, "scatter_add");
  QT_CHECK(grad.shape() == index.shape(), "scatter_add: grad shape {} differs from index shape {}",
           shape_str(grad.shape()), shape_str(index.shape()));
  Tensor out = zeros_of(shape, grad.dtype());
  const GatherPlan plan = plan_gather(shape, out.strides(), axis, index, "scatter_add");
  const Tensor source = contiguous(grad);
  const int64_t* indices = plan.index.data<int64_t>();
  const int64_t axis_stride = out.strides()[plan.axis];
  const int64_t K = plan.positions, inner = plan.inner;
  dispatch_dtype(grad.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* in = source.data<T>();
    T* result = out.data<T>();
#pragma omp parallel for schedule( \
    static) if (qt::worth_parallel(grad.numel(), qt::WorkCost::standard))
    for (int64_t o = 0; o < plan.outer; ++o) {
      T* base = result + plan.outer_offsets[o];
      for (int64_t k = 0; k < K; ++k) {
        const int64_t row = o * K + k;
        for (int64_t j = 0; j < inner; ++j) {
          base[indices[row * inner + j] * axis_stride + plan.inner_offsets[j]] +=
              in[row * inner + j];
        }
      }
    }
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// index_select / index_add: whole slices. x (contiguous) is viewed as [outer, N, inner] with N =
// x.size(axis); the result as [outer, K, inner] with K = index.numel().

namespace {

void check_index_vector(const Tensor& index, const char* op) {
  check_dtype(index, DType::i64, op);
  QT_CHECK(index.dim() == 1, "{}: index must be rank-1, got shape {}", op,
           shape_str(index.shape()));
}

}  // namespace

Tensor index_select(const Tensor& x, int64_t axis, const Tensor& index) {
  check_defined(x, "index_select");
  check_index_vector(index, "index_select");
  QT_CHECK(x.dim() > 0, "index_select: the data tensor must have rank >= 1");
  axis = normalize_axis(axis, x.dim(), "index_select");
  const Tensor ids = contiguous(index);
  const int64_t N = x.shape()[axis], K = ids.numel();
  check_indices(ids.data<int64_t>(), K, N, "index_select", "index");
  const Tensor input = contiguous(x);
  Shape out_shape = x.shape();
  out_shape[axis] = K;
  Tensor out = Tensor::empty(out_shape, x.dtype());
  const int64_t outer = product(x.shape(), 0, axis);
  const int64_t inner = product(x.shape(), axis + 1, x.shape().size());
  const int64_t* rows = ids.data<int64_t>();
  const size_t row_bytes = static_cast<size_t>(inner) * dtype_size(x.dtype());
  const char* in = static_cast<const char*>(input.raw_data());
  char* result = static_cast<char*>(out.raw_data());
#pragma omp parallel for schedule( \
    static) if (qt::worth_parallel(out.numel(), qt::WorkCost::standard))
  for (int64_t ok = 0; ok < outer * K; ++ok) {
    const int64_t o = ok / K, k = ok % K;
    std::memcpy(result + ok * row_bytes, in + (o * N + rows[k]) * row_bytes, row_bytes);
  }
  return out;
}

// out = zeros(shape); out[o, index[k], :] += grad[o, k, :].
// The positions k are first grouped by target row with a stable counting sort (CSR layout:
// positions_of_row[row_start[v] .. row_start[v+1]) are the k with index[k] == v, ascending). Each
// output slice (o, v) is then owned by one thread that adds its positions in ascending k.
Tensor index_add(const Shape& shape, int64_t axis, const Tensor& index, const Tensor& grad) {
  check_defined(grad, "index_add");
  check_index_vector(index, "index_add");
  const int64_t rank = static_cast<int64_t>(shape.size());
  QT_CHECK(rank > 0, "index_add: the output shape must have rank >= 1");
  axis = normalize_axis(axis, rank, "index_add");
  const Tensor ids = contiguous(index);
  const int64_t N = shape[axis], K = ids.numel();
  Shape expected = shape;
  expected[axis] = K;
  QT_CHECK(grad.shape() == expected,
           "index_add: grad shape {} must be the output shape {} with axis {} of size {} (= {})",
           shape_str(grad.shape()), shape_str(shape), axis, K, shape_str(expected));
  const int64_t* rows = ids.data<int64_t>();
  check_indices(rows, K, N, "index_add", "index");

  std::vector<int64_t> row_start(static_cast<size_t>(N) + 1, 0), positions_of_row(K);
  for (int64_t k = 0; k < K; ++k) ++row_start[rows[k] + 1];
  for (int64_t v = 0; v < N; ++v) row_start[v + 1] += row_start[v];
  {
    std::vector<int64_t> fill(row_start.begin(), row_start.end() - 1);
    for (int64_t k = 0; k < K; ++k) positions_of_row[fill[rows[k]]++] = k;
  }

  Tensor out = zeros_of(shape, grad.dtype());
  const Tensor source = contiguous(grad);
  const int64_t outer = product(shape, 0, axis);
  const int64_t inner = product(shape, axis + 1, shape.size());
  dispatch_dtype(grad.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* in = source.data<T>();
    T* result = out.data<T>();
#pragma omp parallel for schedule( \
    static) if (qt::worth_parallel(grad.numel(), qt::WorkCost::standard))
    for (int64_t ov = 0; ov < outer * N; ++ov) {
      const int64_t o = ov / N, v = ov % N;
      T* target = result + ov * inner;
      for (int64_t p = row_start[v]; p < row_start[v + 1]; ++p) {
        const T* slice = in + (o * K + positions_of_row[p]) * inner;
        for (int64_t j = 0; j < inner; ++j) target[j] += slice[j];
      }
    }
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Embeddings and one-hot

Tensor embedding(const Tensor& table, const Tensor& ids) {
  check_rank(table, 2, "embedding");
  check_dtype(ids, DType::i64, "embedding");
  const Tensor flat = reshape(ids, {ids.numel()});
  const Tensor ids_data = contiguous(flat);
  const int64_t vocab = table.shape()[0];
  check_indices(ids_data.data<int64_t>(), ids_data.numel(), vocab, "embedding", "id");
  Shape out_shape = ids.shape();
  out_shape.push_back(table.shape()[1]);
  return reshape(index_select(table, 0, ids_data), out_shape);
}

Tensor embedding_backward(const Tensor& grad, const Tensor& ids, int64_t vocab_size) {
  check_defined(grad, "embedding_backward");
  check_dtype(ids, DType::i64, "embedding_backward");
  QT_CHECK(vocab_size > 0, "embedding_backward: vocab_size must be positive, got {}", vocab_size);
  QT_CHECK(grad.dim() == ids.dim() + 1 && prefix(grad.shape(), ids.dim()) == ids.shape(),
           "embedding_backward: grad shape {} must be the ids shape {} plus one embedding dim",
           shape_str(grad.shape()), shape_str(ids.shape()));
  const int64_t width = grad.shape().back();
  const Tensor flat_ids = contiguous(reshape(ids, {ids.numel()}));
  check_indices(flat_ids.data<int64_t>(), flat_ids.numel(), vocab_size, "embedding_backward", "id");
  return index_add({vocab_size, width}, 0, flat_ids, reshape(grad, {ids.numel(), width}));
}

Tensor one_hot(const Tensor& ids, int64_t num_classes, DType dtype) {
  check_dtype(ids, DType::i64, "one_hot");
  QT_CHECK(num_classes > 0, "one_hot: num_classes must be positive, got {}", num_classes);
  const Tensor flat = contiguous(ids);
  const int64_t* values = flat.data<int64_t>();
  const int64_t count = flat.numel();
  check_indices(values, count, num_classes, "one_hot", "id");
  Shape out_shape = ids.shape();
  out_shape.push_back(num_classes);
  Tensor out = zeros_of(out_shape, dtype);
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    T* result = out.data<T>();
    for (int64_t p = 0; p < count; ++p) result[p * num_classes + values[p]] = T(1);
  });
  return out;
}

}  // namespace qt::ops

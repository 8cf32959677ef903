#include "tensor/tensor.h"

#include <cstdlib>
#include <cstring>

#include "tensor/storage.h"

namespace qt {

// The memory comes from tensor/storage.h: 64-byte aligned, freed large blocks cached for reuse.
Storage::Storage(size_t bytes) : nbytes(bytes) {
  data = allocate_bytes(bytes);
}

Storage::~Storage() {
  release_bytes(data, nbytes);
}

Tensor Tensor::empty(const Shape& shape, DType dtype) {
  for (int64_t s : shape)
    QT_CHECK(s >= 0, "Tensor::empty: negative size in shape {}", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage =
      std::make_shared<Storage>(static_cast<size_t>(numel_of(shape)) * dtype_size(dtype));
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::from_storage(std::shared_ptr<Storage> storage, const Shape& shape,
                            const Shape& strides, int64_t offset, DType dtype) {
  QT_CHECK(shape.size() == strides.size(),
           "Tensor::from_storage: shape {} and strides {} differ in rank", shape_str(shape),
           shape_str(strides));
  // The furthest element any index can reach must lie inside the storage.
  int64_t lowest = offset, highest = offset;
  for (size_t i = 0; i < shape.size(); ++i) {
    QT_CHECK(shape[i] >= 0, "Tensor::from_storage: negative size in shape {}", shape_str(shape));
    if (shape[i] == 0) {
      lowest = highest = offset;
      break;
    }
    const int64_t reach = (shape[i] - 1) * strides[i];
    (reach < 0 ? lowest : highest) += reach;
  }
  const int64_t capacity = static_cast<int64_t>(storage->nbytes / dtype_size(dtype));
  QT_CHECK(lowest >= 0 && (numel_of(shape) == 0 || highest < capacity),
           "Tensor::from_storage: a view of shape {} strides {} offset {} reaches outside a "
           "storage of {} elements",
           shape_str(shape), shape_str(strides), offset, capacity);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::move(storage);
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

int64_t Tensor::size(int64_t axis) const {
  return impl().shape[normalize_axis(axis, dim(), "Tensor::size")];
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (impl().shape[i] == 1) continue;
    if (impl().strides[i] != expected) return false;
    expected *= impl().shape[i];
  }
  return true;
}

void* Tensor::raw_data() const {
  return static_cast<char*>(impl().storage->data) + impl().offset * dtype_size(impl().dtype);
}

double Tensor::at(const std::vector<int64_t>& index) const {
  QT_CHECK(static_cast<int64_t>(index.size()) == dim(),
           "Tensor::at: index of rank {} for a tensor of shape {}", index.size(),
           shape_str(shape()));
  int64_t position = 0;
  for (size_t i = 0; i < index.size(); ++i) {
    QT_CHECK(index[i] >= 0 && index[i] < impl().shape[i],
             "Tensor::at: index {} out of range for shape {}", fmt::join(index, ", "),
             shape_str(shape()));
    position += index[i] * impl().strides[i];
  }
  return dispatch_dtype(dtype(), [&](auto tag) {
    using T = decltype(tag);
    return static_cast<double>(
        static_cast<const T*>(impl().storage->data)[impl().offset + position]);
  });
}

double Tensor::item() const {
  QT_CHECK(numel() == 1, "Tensor::item: tensor of shape {} has {} elements, not 1",
           shape_str(shape()), numel());
  return at(std::vector<int64_t>(dim(), 0));
}

Tensor& Tensor::set_requires_grad(bool enabled) {
  QT_CHECK(!enabled || is_floating(dtype()),
           "set_requires_grad: only floating tensors can require grad, not {}",
           dtype_name(dtype()));
  QT_CHECK(
      is_leaf(),
      "set_requires_grad: only leaf tensors (not results of differentiable ops) can be marked");
  impl().requires_grad = enabled;
  return *this;
}

Tensor Tensor::grad() const {
  return impl().grad ? Tensor(impl().grad) : Tensor();
}

void Tensor::set_grad(const Tensor& grad) const {
  if (!grad.defined()) {
    impl().grad.reset();
    return;
  }
  QT_CHECK(grad.shape() == shape() && grad.dtype() == dtype(),
           "set_grad: gradient {} {} does not match tensor {} {}", shape_str(grad.shape()),
           dtype_name(grad.dtype()), shape_str(shape()), dtype_name(dtype()));
  impl().grad = grad.impl_ptr();
}

Tensor Tensor::detach() const {
  auto copy = std::make_shared<TensorImpl>();
  copy->storage = impl().storage;
  copy->shape = impl().shape;
  copy->strides = impl().strides;
  copy->offset = impl().offset;
  copy->dtype = impl().dtype;
  return Tensor(std::move(copy));
}

void check_defined(const Tensor& t, const char* op) {
  QT_CHECK(t.defined(), "{}: got an undefined tensor", op);
}

void check_dtype(const Tensor& t, DType expected, const char* op) {
  check_defined(t, op);
  QT_CHECK(t.dtype() == expected, "{}: expected a {} tensor, got {} of shape {}", op,
           dtype_name(expected), dtype_name(t.dtype()), shape_str(t.shape()));
}

void check_floating(const Tensor& t, const char* op) {
  check_defined(t, op);
  QT_CHECK(is_floating(t.dtype()),
           "{}: expected a floating tensor (f32 or f64), got {} of shape {}", op,
           dtype_name(t.dtype()), shape_str(t.shape()));
}

void check_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  check_defined(a, op);
  check_defined(b, op);
  QT_CHECK(a.dtype() == b.dtype(), "{}: dtypes differ: {} {} vs {} {}", op, dtype_name(a.dtype()),
           shape_str(a.shape()), dtype_name(b.dtype()), shape_str(b.shape()));
}

void check_rank(const Tensor& t, int64_t rank, const char* op) {
  check_defined(t, op);
  QT_CHECK(t.dim() == rank, "{}: expected a tensor of rank {}, got shape {}", op, rank,
           shape_str(t.shape()));
}

}  // namespace qt

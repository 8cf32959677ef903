// The Tensor: a typed, strided view into a shared, 64-byte-aligned buffer.
//
//   element (i0, i1, ..., ik) lives at  storage + offset + i0*strides[0] + ... + ik*strides[k]
//
// A Tensor is a cheap handle (one shared_ptr). Copying a Tensor copies the handle, not the data:
// both copies see the same elements and the same autograd state, as in PyTorch. Views (reshape,
// permute, narrow, expand, ...) make a new handle over the same Storage; `ops::contiguous` copies
// only when the layout is not already dense row-major.
//
// This header only describes the data. Computation lives in free functions:
//   qt::ops::*  (tensor/*.h)   plain kernels, never record anything for autograd;
//   qt::*       (autograd/functions.h)  the same ops, differentiable: they record a graph node.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "tensor/dtype.h"
#include "tensor/error.h"
#include "tensor/shape.h"

namespace qt {

// A block of raw bytes, 64-byte aligned (one cache line, one AVX-512 register) so that kernels
// can use aligned loads at the start of a contiguous tensor.
struct Storage {
  explicit Storage(size_t nbytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data = nullptr;
  size_t nbytes = 0;
};

struct Node;  // autograd/node.h: the record of the op that produced a tensor

// Everything a Tensor handle points to. Plain data: the autograd fields are written by autograd/.
struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;       // in elements
  int64_t offset = 0;  // in elements, from storage->data
  DType dtype = DType::f32;

  // Autograd state.
  bool requires_grad = false;        // a leaf the user wants .grad for, or any result of such
  std::shared_ptr<TensorImpl> grad;  // accumulated gradient (leaves only), same shape, dense
  std::shared_ptr<Node> grad_fn;     // the op that made this tensor (null for leaves)
};

class Tensor {
 public:
  Tensor() = default;  // an undefined tensor (no data); defined() is false
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // A new dense tensor with uninitialised contents.
  static Tensor empty(const Shape& shape, DType dtype = DType::f32);
  // A tensor over existing storage with explicit layout (used by views). Checks the bounds.
  static Tensor from_storage(std::shared_ptr<Storage> storage, const Shape& shape,
                             const Shape& strides, int64_t offset, DType dtype);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Shape& strides() const { return impl().strides; }
  int64_t offset() const { return impl().offset; }
  DType dtype() const { return impl().dtype; }
  int64_t dim() const { return static_cast<int64_t>(impl().shape.size()); }
  int64_t size(int64_t axis) const;  // negative axes count from the end
  int64_t numel() const { return numel_of(impl().shape); }
  bool is_contiguous() const;  // dense row-major (sizes-1 dims may have any stride)
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }

  // Pointer to element (0, 0, ..., 0). Checks that T matches the dtype.
  template <typename T>
  T* data() const {
    QT_CHECK(dtype_of<T>() == dtype(), "Tensor::data: tensor holds {}, not {}", dtype_name(dtype()),
             dtype_name(dtype_of<T>()));
    return static_cast<T*>(impl().storage->data) + impl().offset;
  }
  void* raw_data() const;

  // The single element of a one-element tensor, converted to double.
  double item() const;
  // The element at a multi-index (bounds-checked; for tests and printing, not for kernels).
  double at(const std::vector<int64_t>& index) const;

  // ---- autograd state (the engine is in autograd/)
  bool requires_grad() const { return impl().requires_grad; }
  // Marks a leaf tensor as a parameter: backward() will accumulate into grad(). Floating dtypes
  // only.
  Tensor& set_requires_grad(bool enabled = true);
  Tensor grad() const;  // undefined until a backward pass reached this leaf
  void set_grad(const Tensor& grad) const;
  const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  // Same data and layout, cut off from the graph: no grad_fn, requires_grad false.
  Tensor detach() const;

  TensorImpl& impl() const {
    QT_CHECK(impl_ != nullptr, "operation on an undefined (default-constructed) Tensor");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool is_same(const Tensor& other) const { return impl_ == other.impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// Checks used at the top of every op: they throw qt::Error naming the op.
void check_defined(const Tensor& t, const char* op);
void check_dtype(const Tensor& t, DType expected, const char* op);
void check_floating(const Tensor& t, const char* op);
void check_same_dtype(const Tensor& a, const Tensor& b, const char* op);
void check_rank(const Tensor& t, int64_t rank, const char* op);

}  // namespace qt

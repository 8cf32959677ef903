// Tests for tensor/tensor.* and tensor/view.*: layout, views without copies, contiguous copies.
// Truth: each element is filled with its own row-major index, so where a view lands can be
// computed by hand from index arithmetic.
#include <doctest/doctest.h>

#include <cstdint>
#include <numeric>

#include "tensor/tensor.h"
#include "tensor/view.h"

using namespace qt;

namespace {

// A dense f32 tensor whose element at row-major position p holds the value p.
Tensor iota_tensor(const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::f32);
  float* data = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) data[i] = static_cast<float>(i);
  return t;
}

}  // namespace

TEST_CASE("tensor: empty tensors are dense, aligned, and report their layout") {
  Tensor t = Tensor::empty({2, 3, 4}, DType::f64);
  CHECK(t.dim() == 3);
  CHECK(t.numel() == 24);
  CHECK(t.strides() == Shape{12, 4, 1});
  CHECK(t.is_contiguous());
  CHECK(t.size(-1) == 4);
  CHECK(reinterpret_cast<uintptr_t>(t.raw_data()) % 64 == 0);
  CHECK_THROWS_AS(t.size(3), Error);
  CHECK_THROWS_AS(t.data<float>(), Error);  // holds f64
  CHECK_THROWS_AS(Tensor::empty({2, -1}), Error);
  CHECK_THROWS_AS(Tensor().shape(), Error);  // undefined tensor
}

TEST_CASE("tensor: item and at read single elements") {
  Tensor t = iota_tensor({2, 3});
  CHECK(t.at({1, 2}) == 5.0);
  CHECK_THROWS_AS(t.at({2, 0}), Error);
  CHECK_THROWS_AS(t.item(), Error);
  CHECK(ops::select(ops::select(t, 0, 1), 0, 1).item() == 4.0);
}

TEST_CASE("view: permute and transpose swap strides without copying") {
  Tensor t = iota_tensor({2, 3, 4});
  Tensor p = ops::permute(t, {2, 0, 1});  // p[k][i][j] = t[i][j][k] = 12i + 4j + k
  CHECK(p.shape() == Shape{4, 2, 3});
  CHECK(p.storage() == t.storage());
  CHECK_FALSE(p.is_contiguous());
  for (int64_t k = 0; k < 4; ++k)
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < 3; ++j) CHECK(p.at({k, i, j}) == 12 * i + 4 * j + k);
  Tensor tt = ops::transpose(t, 0, -1);
  CHECK(tt.shape() == Shape{4, 3, 2});
  CHECK(tt.at({3, 1, 1}) == 12 + 4 + 3);
  CHECK_THROWS_AS(ops::permute(t, {0, 0, 1}), Error);
  CHECK_THROWS_AS(ops::permute(t, {0, 1}), Error);
}

TEST_CASE("view: narrow, select, squeeze, unsqueeze address the right elements") {
  Tensor t = iota_tensor({4, 5});
  Tensor n = ops::narrow(t, 1, 1, 3);  // columns 1..3
  CHECK(n.shape() == Shape{4, 3});
  CHECK(n.at({2, 0}) == 2 * 5 + 1);
  CHECK(n.at({3, 2}) == 3 * 5 + 3);
  CHECK_THROWS_AS(ops::narrow(t, 1, 3, 3), Error);
  Tensor row = ops::select(t, 0, -1);  // last row
  CHECK(row.shape() == Shape{5});
  CHECK(row.at({4}) == 19);
  Tensor u = ops::unsqueeze(n, 1);
  CHECK(u.shape() == Shape{4, 1, 3});
  CHECK(u.at({2, 0, 1}) == 12);
  CHECK(ops::squeeze(u, 1).shape() == Shape{4, 3});
  CHECK_THROWS_AS(ops::squeeze(u, 0), Error);
  CHECK(ops::unsqueeze(t, -1).shape() == Shape{4, 5, 1});
}

TEST_CASE("view: expand broadcasts with stride 0") {
  Tensor t = iota_tensor({3, 1});
  Tensor e = ops::expand(t, {2, 3, 4});
  CHECK(e.strides()[0] == 0);
  CHECK(e.strides()[2] == 0);
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t j = 0; j < 4; ++j) CHECK(e.at({b, i, j}) == i);
  CHECK_THROWS_AS(ops::expand(t, {3, 2, 4}), Error);  // the 3 cannot become 2
  CHECK_THROWS_AS(ops::expand(t, {4}), Error);
}

TEST_CASE("view: view and reshape keep elements in row-major order") {
  Tensor t = iota_tensor({2, 3, 4});
  Tensor v = ops::view(t, {6, -1});
  CHECK(v.shape() == Shape{6, 4});
  CHECK(v.storage() == t.storage());
  CHECK(v.at({5, 3}) == 23);
  CHECK_THROWS_AS(ops::view(t, {5, -1}), Error);
  CHECK_THROWS_AS(ops::view(t, {-1, -1}), Error);

  // A transposed tensor cannot be flattened without a copy; view refuses, reshape copies.
  Tensor tt = ops::transpose(t, 1, 2);  // [2, 4, 3]
  CHECK_THROWS_AS(ops::view(tt, {24}), Error);
  Tensor r = ops::reshape(tt, {24});
  CHECK(r.is_contiguous());
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t k = 0; k < 4; ++k)
      for (int64_t j = 0; j < 3; ++j) CHECK(r.at({b * 12 + k * 3 + j}) == 12 * b + 4 * j + k);

  // Splitting and merging dims that stay dense within a transposed tensor needs no copy:
  // [2, 4, 3] with strides [12, 1, 4] -> [2, 2, 2, 3] splits the stride-1 dim.
  Tensor split = ops::view(tt, {2, 2, 2, 3});
  CHECK(split.storage() == t.storage());
  CHECK(split.at({1, 1, 0, 2}) == 12 + 4 * 2 + 2);
  // Merging the leading batch dim of a narrowed tensor whose rows are still evenly spaced.
  Tensor rows = ops::narrow(iota_tensor({4, 6}), 0, 1, 2);  // rows 1, 2: dense
  CHECK(ops::view(rows, {12}).at({7}) == 6 + 7);
  Tensor cols = ops::narrow(iota_tensor({4, 6}), 1, 0, 3);  // gaps between rows
  CHECK_THROWS_AS(ops::view(cols, {12}), Error);
  CHECK(ops::reshape(cols, {12}).at({4}) == 6 + 1);
  CHECK(ops::view(cols, {2, 2, 3}).at({1, 1, 2}) == 3 * 6 + 2);
}

TEST_CASE("view: flatten merges a range of dims") {
  Tensor t = iota_tensor({2, 3, 4, 5});
  CHECK(ops::flatten(t).shape() == Shape{120});
  CHECK(ops::flatten(t, 1, 2).shape() == Shape{2, 12, 5});
  CHECK(ops::flatten(t, -2).shape() == Shape{2, 3, 20});
  CHECK_THROWS_AS(ops::flatten(t, 2, 1), Error);
}

TEST_CASE("view: contiguous copies only when needed, clone always copies") {
  Tensor t = iota_tensor({3, 4});
  CHECK(ops::contiguous(t).is_same(t));
  Tensor c = ops::contiguous(ops::transpose(t, 0, 1));
  CHECK(c.is_contiguous());
  CHECK(c.storage() != t.storage());
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 3; ++j) CHECK(c.at({i, j}) == j * 4 + i);
  Tensor k = ops::clone(t);
  k.data<float>()[0] = 100;
  CHECK(t.at({0, 0}) == 0);
}

TEST_CASE("view: copy_into writes through a strided destination") {
  Tensor dst = iota_tensor({3, 4});
  Tensor src = Tensor::empty({4, 3});
  for (int64_t i = 0; i < 12; ++i) src.data<float>()[i] = -1.0f - i;
  ops::copy_into(ops::transpose(dst, 0, 1), src);  // dst[j][i] = src[i][j]
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 3; ++j) CHECK(dst.at({j, i}) == -1.0 - (i * 3 + j));
  CHECK_THROWS_AS(ops::copy_into(dst, src), Error);  // [3, 4] vs [4, 3]
  CHECK_THROWS_AS(ops::copy_into(dst, Tensor::empty({3, 4}, DType::f64)), Error);
}

TEST_CASE("tensor: from_storage refuses views that reach outside the storage") {
  Tensor t = iota_tensor({4});
  CHECK_THROWS_AS(Tensor::from_storage(t.storage(), {5}, {1}, 0, DType::f32), Error);
  CHECK_THROWS_AS(Tensor::from_storage(t.storage(), {2}, {1}, 3, DType::f32), Error);
  CHECK_THROWS_AS(Tensor::from_storage(t.storage(), {2}, {-1}, 0, DType::f32), Error);
  CHECK(Tensor::from_storage(t.storage(), {2}, {-1}, 3, DType::f32).at({1}) == 2);
}

TEST_CASE("tensor: detach shares data but not the autograd state") {
  Tensor t = iota_tensor({2});
  t.set_requires_grad();
  Tensor d = t.detach();
  CHECK_FALSE(d.requires_grad());
  CHECK(d.storage() == t.storage());
  CHECK_THROWS_AS(Tensor::empty({2}, DType::i64).set_requires_grad(), Error);
}

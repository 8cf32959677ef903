// Tests for tensor/index.*: cat, stack, gather, scatter_add, index_select, index_add, embedding,
// embedding_backward, one_hot.
// Truth: naive loops over multi-indices in the test, reading inputs through Tensor::at (so any
// layout is read independently of the kernels), sums accumulated in double.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "tensor/index.h"
#include "tensor/tensor.h"
#include "tensor/threads.h"
#include "tensor/view.h"

#include "tests/test_util.h"

using namespace qt;
using namespace qt::test;

namespace {

// Checks shape and every element (|got - expected| <= tolerance).
void check_tensor(const Tensor& got, const Shape& shape, const std::vector<double>& expected,
                  double tolerance = 0) {
  REQUIRE(got.shape() == shape);
  const std::vector<double> values = elements(got);
  REQUIRE(values.size() == expected.size());
  int64_t bad = 0;
  for (size_t i = 0; i < values.size(); ++i)
    if (!(std::abs(values[i] - expected[i]) <= tolerance)) ++bad;
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("index: cat along every axis matches naive placement") {
  const Tensor a = random_tensor({2, 3, 4}, DType::f32, 1);
  for (int64_t axis = 0; axis < 3; ++axis) {
    Shape shape_b = a.shape(), shape_c = a.shape();
    shape_b[axis] = 1;
    shape_c[axis] = 5;
    const Tensor b = random_tensor(shape_b, DType::f32, 2);
    // c as a non-contiguous view: a transposed buffer, transposed back.
    const Tensor c = ops::transpose(
        ops::contiguous(ops::transpose(random_tensor(shape_c, DType::f32, 3), 0, 2)), 0, 2);
    for (int64_t signed_axis : {axis, axis - 3}) {
      const Tensor out = ops::cat({a, b, c}, signed_axis);
      Shape shape = a.shape();
      shape[axis] = a.shape()[axis] + 1 + 5;
      std::vector<double> expected(numel_of(shape));
      for (int64_t p = 0; p < numel_of(shape); ++p) {
        std::vector<int64_t> index = unravel_index(p, shape);
        const int64_t i = index[axis];
        const Tensor& source = i < a.shape()[axis] ? a : (i < a.shape()[axis] + 1 ? b : c);
        index[axis] = i < a.shape()[axis] ? i
                                          : (i < a.shape()[axis] + 1 ? i - a.shape()[axis]
                                                                     : i - a.shape()[axis] - 1);
        expected[p] = source.at(index);
      }
      check_tensor(out, shape, expected);
    }
  }
  // One tensor: a copy. f64 and integer dtypes work too.
  const Tensor ints = random_ids({3, 2}, -5, 5, 4);
  check_tensor(ops::cat({ints, ints}, 1), {3, 4}, [&] {
    std::vector<double> e;
    for (int64_t r = 0; r < 3; ++r)
      for (int64_t c = 0; c < 4; ++c) e.push_back(ints.at({r, c % 2}));
    return e;
  }());
}

TEST_CASE("index: stack along every axis") {
  const Tensor a = random_tensor({3, 4}, DType::f64, 5), b = random_tensor({3, 4}, DType::f64, 6);
  const Tensor bt = ops::transpose(ops::contiguous(ops::transpose(b, 0, 1)), 0, 1);  // strided
  for (int64_t axis : {0, 1, 2, -1, -3}) {
    const int64_t normalized = axis < 0 ? axis + 3 : axis;
    const Tensor out = ops::stack({a, bt}, axis);
    Shape shape = {3, 4};
    shape.insert(shape.begin() + normalized, 2);
    std::vector<double> expected(numel_of(shape));
    for (int64_t p = 0; p < numel_of(shape); ++p) {
      std::vector<int64_t> index = unravel_index(p, shape);
      const int64_t which = index[normalized];
      index.erase(index.begin() + normalized);
      expected[p] = (which == 0 ? a : b).at(index);
    }
    check_tensor(out, shape, expected);
  }
}

TEST_CASE("index: cat and stack errors") {
  const Tensor a = random_tensor({2, 3}, DType::f32, 7);
  CHECK_THROWS_AS(ops::cat({}, 0), Error);
  CHECK_THROWS_AS(ops::cat({a, random_tensor({3, 3}, DType::f32, 8)}, 1), Error);
  CHECK_THROWS_AS(ops::cat({a, random_tensor({2, 3}, DType::f64, 8)}, 0), Error);
  CHECK_THROWS_AS(ops::cat({a, random_tensor({2, 3, 1}, DType::f32, 8)}, 0), Error);
  CHECK_THROWS_AS(ops::cat({a, a}, 2), Error);
  CHECK_THROWS_AS(ops::stack({a, random_tensor({3, 2}, DType::f32, 9)}, 0), Error);
  CHECK_THROWS_AS(ops::stack({a, a}, 3), Error);
  CHECK_THROWS_AS(ops::stack({}, 0), Error);
  CHECK_THROWS_WITH_AS(ops::cat({a, random_tensor({3, 3}, DType::f32, 8)}, 1),
                       doctest::Contains("[3, 3]"), Error);
}

TEST_CASE("index: gather along every axis, with an index smaller than the data") {
  const Tensor x = random_tensor({4, 5, 6}, DType::f32, 10);
  const Tensor xt = ops::transpose(random_tensor({6, 5, 4}, DType::f32, 11), 0, 2);  // strided
  for (const Tensor& data : {x, xt}) {
    for (int64_t axis = 0; axis < 3; ++axis) {
      const Shape index_shape = {3, 4, 2};  // axis size (any) and smaller other dims
      const Tensor index = random_ids(index_shape, 0, data.shape()[axis] - 1, 12 + axis);
      const Tensor out = ops::gather(data, axis, index);
      std::vector<double> expected(numel_of(index_shape));
      for (int64_t p = 0; p < numel_of(index_shape); ++p) {
        std::vector<int64_t> position = unravel_index(p, index_shape);
        const int64_t i = static_cast<int64_t>(index.at(position));
        position[axis] = i;
        expected[p] = data.at(position);
      }
      check_tensor(out, index_shape, expected);
      // Negative axis gives the same result.
      check_tensor(ops::gather(data, axis - 3, index), index_shape, expected);
    }
  }
}

TEST_CASE("index: scatter_add with repeated indices matches a naive loop") {
  const Shape shape = {4, 3, 5};
  for (int64_t axis = 0; axis < 3; ++axis) {
    const Shape index_shape = {4, 3, 3};  // axis size (any) and others <= shape
    const Tensor index = random_ids(index_shape, 0, shape[axis] - 1, 20 + axis);
    const Tensor grad = random_tensor(index_shape, DType::f64, 30 + axis);
    // grad given as a strided view of the same values
    const Tensor grad_view = ops::transpose(ops::contiguous(ops::transpose(grad, 0, 2)), 0, 2);
    const Tensor out = ops::scatter_add(shape, axis, index, grad_view);
    std::vector<double> expected(numel_of(shape), 0.0);
    for (int64_t p = 0; p < numel_of(index_shape); ++p) {
      std::vector<int64_t> position = unravel_index(p, index_shape);
      const double g = grad.at(position);
      position[axis] = static_cast<int64_t>(index.at(position));
      expected[ravel(position, shape)] += g;
    }
    check_tensor(out, shape, expected, 1e-12);
  }
}

TEST_CASE("index: gather and scatter_add errors name the bad index") {
  const Tensor x = random_tensor({3, 5}, DType::f32, 40);
  CHECK_THROWS_WITH_AS(ops::gather(x, 1, ids_tensor({0, 5}, {1, 2})), doctest::Contains("index 5"),
                       Error);
  CHECK_THROWS_WITH_AS(ops::gather(x, 1, ids_tensor({0, -1}, {1, 2})), doctest::Contains("[0, 5)"),
                       Error);
  CHECK_THROWS_AS(ops::gather(x, 0, ids_tensor({0, 1}, {2})), Error);  // rank mismatch
  CHECK_THROWS_AS(ops::gather(x, 0, ids_tensor({0, 1, 2, 0, 1, 2}, {1, 6})), Error);  // too wide
  CHECK_THROWS_AS(ops::gather(x, 2, ids_tensor({0}, {1, 1})), Error);                 // bad axis
  Tensor i32 = Tensor::empty({1, 1}, DType::i32);
  i32.data<int32_t>()[0] = 0;
  CHECK_THROWS_AS(ops::gather(x, 0, i32), Error);
  const Tensor g = random_tensor({1, 2}, DType::f32, 41);
  CHECK_THROWS_AS(ops::scatter_add({3, 5}, 1, ids_tensor({0, 7}, {1, 2}), g), Error);
  CHECK_THROWS_AS(ops::scatter_add({3, 5}, 1, ids_tensor({0, 1, 2}, {1, 3}), g),
                  Error);  // grad shape
}

TEST_CASE("index: index_select and index_add along every axis") {
  const Tensor x = random_tensor({4, 5, 3}, DType::f32, 50);
  const Tensor xt = ops::transpose(random_tensor({3, 5, 4}, DType::f32, 51), 0, 2);  // strided
  for (const Tensor& data : {x, xt}) {
    for (int64_t axis = 0; axis < 3; ++axis) {
      const Tensor index = random_ids({7}, 0, data.shape()[axis] - 1, 52 + axis);  // repeats
      Shape shape = data.shape();
      shape[axis] = 7;
      std::vector<double> expected(numel_of(shape));
      for (int64_t p = 0; p < numel_of(shape); ++p) {
        std::vector<int64_t> position = unravel_index(p, shape);
        position[axis] = static_cast<int64_t>(index.at({position[axis]}));
        expected[p] = data.at(position);
      }
      check_tensor(ops::index_select(data, axis, index), shape, expected);

      // index_add: the adjoint, accumulating the repeated indices.
      const Tensor grad = random_tensor(shape, DType::f64, 60 + axis);
      std::vector<double> sums(numel_of(data.shape()), 0.0);
      for (int64_t p = 0; p < numel_of(shape); ++p) {
        std::vector<int64_t> position = unravel_index(p, shape);
        const double g = grad.at(position);
        position[axis] = static_cast<int64_t>(index.at({position[axis]}));
        sums[ravel(position, data.shape())] += g;
      }
      check_tensor(ops::index_add(data.shape(), axis, index, grad), data.shape(), sums, 1e-12);
    }
  }
  CHECK_THROWS_WITH_AS(ops::index_select(x, 0, ids_tensor({1, 4}, {2})),
                       doctest::Contains("index 4"), Error);
  CHECK_THROWS_AS(ops::index_select(x, 3, ids_tensor({0}, {1})), Error);
  CHECK_THROWS_AS(ops::index_select(x, 0, ids_tensor({0, 1}, {1, 2})), Error);  // not rank-1
  CHECK_THROWS_AS(
      ops::index_add({4, 5}, 0, ids_tensor({9}, {1}), random_tensor({1, 5}, DType::f32, 1)), Error);
  CHECK_THROWS_AS(
      ops::index_add({4, 5}, 0, ids_tensor({1}, {1}), random_tensor({2, 5}, DType::f32, 1)), Error);
}

TEST_CASE("index: embedding lookup and its backward with repeated ids") {
  const int64_t vocab = 7, width = 5;
  const Tensor table = random_tensor({vocab, width}, DType::f32, 70);
  const Tensor ids = ids_tensor({3, 0, 3, 6, 1, 3}, {2, 3});
  const Tensor out = ops::embedding(table, ids);
  std::vector<double> expected;
  for (int64_t p = 0; p < 6; ++p)
    for (int64_t d = 0; d < width; ++d) expected.push_back(table.at({ids.data<int64_t>()[p], d}));
  check_tensor(out, {2, 3, width}, expected);

  const Tensor grad = random_tensor({2, 3, width}, DType::f64, 71);
  std::vector<double> sums(vocab * width, 0.0);
  for (int64_t p = 0; p < 6; ++p)
    for (int64_t d = 0; d < width; ++d)
      sums[ids.data<int64_t>()[p] * width + d] += grad.at({p / 3, p % 3, d});
  check_tensor(ops::embedding_backward(grad, ids, vocab), {vocab, width}, sums, 1e-12);

  // Rank-0 ids give one row.
  check_tensor(
      ops::embedding(table, ids_tensor({4}, {})), {width},
      {table.at({4, 0}), table.at({4, 1}), table.at({4, 2}), table.at({4, 3}), table.at({4, 4})});

  CHECK_THROWS_WITH_AS(ops::embedding(table, ids_tensor({2, 7}, {2})), doctest::Contains("id 7"),
                       Error);
  CHECK_THROWS_WITH_AS(ops::embedding(table, ids_tensor({-1}, {1})), doctest::Contains("[0, 7)"),
                       Error);
  CHECK_THROWS_AS(ops::embedding(random_tensor({7}, DType::f32, 1), ids), Error);  // table rank
  CHECK_THROWS_AS(ops::embedding_backward(grad, ids, 3), Error);                   // id 6 >= 3
  CHECK_THROWS_AS(ops::embedding_backward(random_tensor({3, 2, width}, DType::f32, 1), ids, vocab),
                  Error);
}

TEST_CASE("index: embedding_backward and scatter_add are bit-identical with 1 and 2 threads") {
  const int saved = num_threads();
  const Tensor ids = random_ids({64, 128}, 0, 99, 80);  // heavy repetition: 8192 ids, 100 rows
  const Tensor grad = random_tensor({64, 128, 64}, DType::f32, 81);
  const Tensor index = random_ids({256, 512}, 0, 9, 82);
  const Tensor small_grad = random_tensor({256, 512}, DType::f32, 83);
  Tensor results[2][2];
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    results[threads - 1][0] = ops::embedding_backward(grad, ids, 100);
    results[threads - 1][1] = ops::scatter_add({256, 10}, 1, index, small_grad);
  }
  set_num_threads(saved);
  for (int r = 0; r < 2; ++r) {
    CHECK(std::memcmp(results[0][r].raw_data(), results[1][r].raw_data(),
                      results[0][r].numel() * sizeof(float)) == 0);
  }
}

TEST_CASE("index: one_hot") {
  const Tensor ids = ids_tensor({2, 0, 4, 2}, {2, 2});
  for (DType dtype : {DType::f32, DType::u8, DType::i64}) {
    const Tensor out = ops::one_hot(ids, 5, dtype);
    CHECK(out.dtype() == dtype);
    std::vector<double> expected;
    for (int64_t p = 0; p < 4; ++p)
      for (int64_t c = 0; c < 5; ++c) expected.push_back(c == ids.data<int64_t>()[p] ? 1.0 : 0.0);
    check_tensor(out, {2, 2, 5}, expected);
  }
  CHECK_THROWS_WITH_AS(ops::one_hot(ids, 4), doctest::Contains("id 4"), Error);
  CHECK_THROWS_AS(ops::one_hot(ids_tensor({-2}, {1}), 4), Error);
  CHECK_THROWS_AS(ops::one_hot(ids, 0), Error);
  CHECK_THROWS_AS(ops::one_hot(random_tensor({2}, DType::f32, 1), 3), Error);
}

// Tests for tensor/compare.cpp: allclose / max_abs_diff (NumPy semantics) and to_string.
//
// Truth: NumPy's documented isclose rule |a - b| <= atol + rtol |b| applied by hand to chosen
// values (including its asymmetry, NaN and infinity cases), and expected strings written by hand.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "tensor/compare.h"
#include "tensor/create.h"
#include "tensor/view.h"

using namespace qt;

namespace {

Tensor f64(const std::vector<double>& values) {
  return ops::from_vector(values, {static_cast<int64_t>(values.size())});
}

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

}  // namespace

TEST_CASE("compare: allclose uses |a - b| <= atol + rtol * |b|") {
  CHECK(ops::allclose(f64({1, 2, 3}), f64({1, 2, 3})));
  CHECK(ops::allclose(f64({1, 2, 3}), f64({1, 2, 3 + 1e-6}), 1e-5, 0));  // 1e-6 <= 3e-5
  CHECK_FALSE(ops::allclose(f64({1, 2, 3}), f64({1, 2, 3.001}), 1e-5, 0));
  CHECK(ops::allclose(f64({0}), f64({1e-9})));  // atol 1e-8 covers it
  CHECK_FALSE(ops::allclose(f64({0}), f64({1e-7})));
  // Not symmetric: the tolerance scales with |b|. |100 - 110| = 10: 10 <= 0.095 * 110 = 10.45,
  // but 10 > 0.095 * 100 = 9.5.
  CHECK(ops::allclose(f64({100}), f64({110}), 0.095, 0));
  CHECK_FALSE(ops::allclose(f64({110}), f64({100}), 0.095, 0));
  // NaN is never close, not even to NaN; infinities only to the same infinity.
  CHECK_FALSE(ops::allclose(f64({kNaN}), f64({kNaN})));
  CHECK_FALSE(ops::allclose(f64({1, kNaN}), f64({1, 1})));
  CHECK(ops::allclose(f64({kInf, -kInf}), f64({kInf, -kInf})));
  CHECK_FALSE(ops::allclose(f64({kInf}), f64({-kInf})));
  CHECK_FALSE(ops::allclose(f64({1e308}), f64({kInf}), 1e-5, 1e-8));
  CHECK_FALSE(ops::allclose(f64({kInf}), f64({1e308})));
  // Broadcasting, mixed dtypes, layouts, empty tensors.
  CHECK(ops::allclose(ops::full({2, 3}, 1.5), ops::scalar(1.5, DType::f64)));
  CHECK(ops::allclose(ops::from_vector(std::vector<int64_t>{1, 2}, {2}),
                      ops::from_vector(std::vector<float>{1, 2}, {2})));
  const Tensor m = ops::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(ops::allclose(ops::transpose(m, 0, 1),
                      ops::from_vector(std::vector<float>{1, 4, 2, 5, 3, 6}, {3, 2})));
  CHECK_FALSE(ops::allclose(ops::transpose(m, 0, 1),
                            ops::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {3, 2})));
  CHECK(ops::allclose(ops::zeros({0, 3}), ops::ones({3})));
  CHECK_THROWS_AS(ops::allclose(ops::ones({2, 3}), ops::ones({2})), Error);
  CHECK_THROWS_AS(ops::allclose(ops::ones({2}), ops::ones({2}), -1), Error);
  CHECK_THROWS_AS(ops::allclose(Tensor(), ops::ones({2})), Error);
}

TEST_CASE("compare: max_abs_diff finds the largest difference and reports NaN") {
  CHECK(ops::max_abs_diff(f64({1, 2, 3}), f64({1.5, 2, 0})) == 3);
  CHECK(ops::max_abs_diff(f64({-1, 2}), ops::scalar(1, DType::f64)) == 2);  // broadcast
  CHECK(ops::max_abs_diff(ops::from_vector(std::vector<int32_t>{5, -5}, {2}), f64({5, 5})) == 10);
  CHECK(std::isnan(ops::max_abs_diff(f64({1, kNaN, 100}), f64({1, 1, 1}))));
  CHECK(ops::max_abs_diff(ops::zeros({0}), ops::zeros({0})) == 0);
  CHECK(std::isinf(ops::max_abs_diff(f64({kInf}), f64({0}))));
  CHECK_THROWS_AS(ops::max_abs_diff(ops::ones({2}), ops::ones({3})), Error);
}

TEST_CASE("compare: to_string shows dtype, shape and nested values") {
  const Tensor m = ops::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(ops::to_string(m) == "tensor(f32 [2, 3]) [[1, 2, 3], [4, 5, 6]]");
  CHECK(ops::to_string(ops::transpose(m, 0, 1)) == "tensor(f32 [3, 2]) [[1, 4], [2, 5], [3, 6]]");
  CHECK(ops::to_string(ops::from_vector(std::vector<float>{0.1f, -2.5f}, {2})) ==
        "tensor(f32 [2]) [0.1, -2.5]");
  CHECK(ops::to_string(f64({0.1, 1.0 / 3})) == "tensor(f64 [2]) [0.1, 0.3333333333333333]");
  CHECK(ops::to_string(ops::from_vector(std::vector<int8_t>{-3, 100}, {2})) ==
        "tensor(i8 [2]) [-3, 100]");
  CHECK(ops::to_string(ops::from_vector(std::vector<uint8_t>{255}, {1, 1})) ==
        "tensor(u8 [1, 1]) [[255]]");
  CHECK(ops::to_string(ops::scalar(2.5, DType::f64)) == "tensor(f64 []) 2.5");
  CHECK(ops::to_string(f64({kNaN, kInf, -kInf})) == "tensor(f64 [3]) [nan, inf, -inf]");
  CHECK(ops::to_string(ops::zeros({0, 3})) == "tensor(f32 [0, 3]) []");
  CHECK(ops::to_string(ops::zeros({2, 0}, DType::i32)) == "tensor(i32 [2, 0]) [[], []]");
  CHECK(ops::to_string(Tensor()) == "tensor(undefined)");
  CHECK(fmt::format("{}", m) == ops::to_string(m));
}

TEST_CASE("compare: to_string elides the middle of dims longer than 2 * edge_items") {
  CHECK(ops::to_string(ops::arange(0, 6)) == "tensor(i64 [6]) [0, 1, 2, 3, 4, 5]");
  CHECK(ops::to_string(ops::arange(0, 10)) == "tensor(i64 [10]) [0, 1, 2, ..., 7, 8, 9]");
  CHECK(ops::to_string(ops::arange(0, 10), 1) == "tensor(i64 [10]) [0, ..., 9]");
  const Tensor grid = ops::view(ops::arange(0, 25), {5, 5});
  CHECK(ops::to_string(grid, 1) == "tensor(i64 [5, 5]) [[0, ..., 4], ..., [20, ..., 24]]");
  CHECK(ops::to_string(grid, 2) ==
        "tensor(i64 [5, 5]) [[0, 1, ..., 3, 4], [5, 6, ..., 8, 9], ..., "
        "[15, 16, ..., 18, 19], [20, 21, ..., 23, 24]]");
  // A huge tensor prints quickly and briefly.
  const std::string big = ops::to_string(ops::zeros({1000, 1000}));
  CHECK(big.size() < 200);
  CHECK_THROWS_AS(ops::to_string(grid, 0), Error);
}

// Tests for tensor/create.cpp: constants, arange, host copies, random fills, fill_.
//
// Truth: values checked element by element with Tensor::at (core code); arange against NumPy's
// documented results (computed by hand); random fills against the element-wise functions of
// tensor/random.h, which the contract says they are (element i = f(seed, stream, i)), and which
// test_random.cpp checks against the Philox known-answer vectors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "tensor/create.h"
#include "tensor/random.h"
#include "tensor/threads.h"
#include "tensor/view.h"

using namespace qt;

namespace {

const std::vector<DType> kAllDtypes = {DType::f32, DType::f64, DType::i8,
                                       DType::u8,  DType::i32, DType::i64};

bool all_equal(const Tensor& t, double value) {
  for (double v : ops::to_vector<double>(t)) {
    if (v != value) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("create: zeros, ones, full, scalar and *_like in every dtype") {
  for (DType dtype : kAllDtypes) {
    CAPTURE(dtype_name(dtype));
    const Tensor z = ops::zeros({2, 3, 4}, dtype);
    CHECK(z.shape() == Shape{2, 3, 4});
    CHECK(z.dtype() == dtype);
    CHECK(z.is_contiguous());
    CHECK(all_equal(z, 0));
    CHECK(all_equal(ops::ones({5}, dtype), 1));
    CHECK(all_equal(ops::full({3, 2}, 7, dtype), 7));
    const Tensor s = ops::scalar(5, dtype);
    CHECK(s.dim() == 0);
    CHECK(s.numel() == 1);
    CHECK(s.item() == 5);
    const Tensor like = ops::ones_like(z);
    CHECK(like.shape() == z.shape());
    CHECK(like.dtype() == dtype);
    CHECK(all_equal(like, 1));
    CHECK(all_equal(ops::zeros_like(like), 0));
    CHECK(ops::zeros({0, 5}, dtype).numel() == 0);
  }
  // A large fill goes through the parallel loop.
  CHECK(all_equal(ops::full({300, 400}, -2.5, DType::f64), -2.5));
  // Values are converted like ops::to: truncation toward zero, saturation at the dtype's limits.
  CHECK(ops::full({1}, -1.7, DType::i32).item() == -1);
  CHECK(ops::full({1}, 300, DType::u8).item() == 255);
  CHECK(ops::full({1}, -3, DType::u8).item() == 0);
  CHECK(ops::full({1}, 0.1, DType::f32).item() == static_cast<double>(0.1f));
  CHECK(std::isnan(ops::full({1}, std::nan(""), DType::f32).item()));
  CHECK_THROWS_AS(ops::zeros({2, -1}), Error);
  CHECK_THROWS_AS(ops::zeros_like(Tensor()), Error);
}

TEST_CASE("create: arange follows numpy.arange") {
  CHECK(ops::to_vector<int64_t>(ops::arange(0, 5)) == std::vector<int64_t>{0, 1, 2, 3, 4});
  CHECK(ops::arange(0, 5).dtype() == DType::i64);
  CHECK(ops::to_vector<int64_t>(ops::arange(5, 0, -2)) == std::vector<int64_t>{5, 3, 1});
  CHECK(ops::to_vector<int64_t>(ops::arange(-3, 3, 2, DType::i32)) ==
        std::vector<int64_t>{-3, -1, 1});
  // np.arange(1, 2, 0.3) = [1, 1.3, 1.6, 1.9] (ceil(1 / 0.3) = 4 elements).
  const Tensor fractional = ops::arange(1, 2, 0.3, DType::f64);
  REQUIRE(fractional.numel() == 4);
  CHECK(fractional.at({3}) == doctest::Approx(1.9));
  CHECK(ops::arange(0, 1, 0.25, DType::f32).numel() == 4);
  CHECK(ops::arange(3, 3).numel() == 0);
  CHECK(ops::arange(3, 0).numel() == 0);  // wrong direction: empty, as NumPy
  CHECK(ops::arange(0, 1).shape() == Shape{1});
  CHECK_THROWS_AS(ops::arange(0, 5, 0), Error);
  CHECK_THROWS_AS(ops::arange(0, std::numeric_limits<double>::infinity()), Error);
}

TEST_CASE("create: from_vector copies host data and to_vector reads any layout") {
  const Tensor f = ops::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(f.dtype() == DType::f32);
  CHECK(f.at({1, 0}) == 4);
  CHECK(ops::from_vector(std::vector<double>{1.5}, {}).item() == 1.5);
  CHECK(ops::from_vector(std::vector<int64_t>{-9, 9}, {2}).at({0}) == -9);
  CHECK(ops::from_vector(std::vector<int32_t>{-9, 9}, {2, 1}).at({1, 0}) == 9);
  CHECK(ops::from_vector(std::vector<uint8_t>{200}, {1}).item() == 200);
  CHECK(ops::from_vector(std::vector<int8_t>{-100}, {1, 1}).item() == -100);
  CHECK(ops::from_vector(std::vector<float>{}, {0, 3}).numel() == 0);
  CHECK_THROWS_AS(ops::from_vector(std::vector<float>{1, 2, 3}, {2, 2}), Error);
  CHECK_THROWS_AS(ops::from_vector(std::vector<float>{1, 2, 3}, {-1, -3}), Error);

  // to_vector walks the logical row-major order of a transposed / narrowed / expanded view.
  const Tensor transposed = ops::transpose(f, 0, 1);  // [[1, 4], [2, 5], [3, 6]]
  CHECK(ops::to_vector<float>(transposed) == std::vector<float>{1, 4, 2, 5, 3, 6});
  CHECK(ops::to_vector<int64_t>(ops::narrow(f, 1, 1, 2)) == std::vector<int64_t>{2, 3, 5, 6});
  CHECK(ops::to_vector<int32_t>(ops::expand(ops::narrow(f, 0, 1, 1), {2, 3})) ==
        std::vector<int32_t>{4, 5, 6, 4, 5, 6});
  CHECK(ops::to_vector<double>(ops::scalar(2.5)) == std::vector<double>{2.5});
  CHECK(ops::to_vector<uint8_t>(ops::zeros({0})).empty());
  // Conversions follow the same rules as ops::to.
  const Tensor mixed = ops::from_vector(std::vector<double>{-1.5, 2.9, 1000}, {3});
  CHECK(ops::to_vector<int8_t>(mixed) == std::vector<int8_t>{-1, 2, 127});
  CHECK(ops::to_vector<uint8_t>(mixed) == std::vector<uint8_t>{0, 2, 255});
  // A large strided read (parallel row loop) against Tensor::at.
  const Tensor big = ops::view(ops::arange(0, 200 * 300, 1, DType::i32), {200, 300});
  const Tensor big_t = ops::transpose(big, 0, 1);
  const std::vector<int64_t> values = ops::to_vector<int64_t>(big_t);
  bool same = true;
  for (int64_t i = 0; i < 300; ++i) {
    for (int64_t j = 0; j < 200; ++j)
      same &= values[i * 200 + j] == static_cast<int64_t>(big_t.at({i, j}));
  }
  CHECK(same);
}

TEST_CASE("create: randn / rand / bernoulli element i is f(seed, stream, i) in row-major order") {
  const Tensor n = ops::randn({7, 11}, 123, 4);
  CHECK(n.dtype() == DType::f32);
  for (int64_t i = 0; i < 7; ++i) {
    for (int64_t j = 0; j < 11; ++j) CHECK(n.at({i, j}) == random_normal(123, 4, i * 11 + j));
  }
  // Scaled: mean + std * z, and the f64 version uses the 53-bit normal.
  const Tensor scaled = ops::randn({50}, 9, 0, DType::f64, 2, 3);
  for (int64_t i = 0; i < 50; ++i) CHECK(scaled.at({i}) == 2 + 3 * random_normal_f64(9, 0, i));
  // The shape does not matter, only the row-major index: [6, 7] flattened equals [42].
  CHECK(ops::to_vector<float>(ops::randn({6, 7}, 5)) == ops::to_vector<float>(ops::randn({42}, 5)));
  CHECK(ops::to_vector<float>(ops::randn({42}, 5, 1)) !=
        ops::to_vector<float>(ops::randn({42}, 5, 0)));

  const Tensor u = ops::rand({1000}, 77, 2, DType::f32, -2, 6);
  bool in_range = true, matches = true;
  for (int64_t i = 0; i < 1000; ++i) {
    const double v = u.at({i});
    in_range &= v >= -2 && v < 6;
    matches &= v == static_cast<double>(-2.0f + 8.0f * random_uniform(77, 2, i));
  }
  CHECK(in_range);
  CHECK(matches);
  const Tensor ud = ops::rand({100}, 77, 2, DType::f64, 1, 2);
  for (int64_t i = 0; i < 100; ++i) CHECK(ud.at({i}) == 1 + random_uniform_f64(77, 2, i));

  // Integer rand: uniform integers in [low, high), every value reached.
  const Tensor ids = ops::rand({5000}, 8, 0, DType::i64, 3, 13);
  std::vector<int64_t> counts(10, 0);
  bool ids_in_range = true;
  for (int64_t v : ops::to_vector<int64_t>(ids)) {
    ids_in_range &= v >= 3 && v < 13;
    if (v >= 3 && v < 13) ++counts[v - 3];
  }
  CHECK(ids_in_range);
  for (int64_t c : counts) CHECK(std::abs(c - 500) < 120);  // s.e. ~21
  CHECK(ops::rand({3}, 1, 0, DType::u8, 0, 256).dtype() == DType::u8);

  // Bernoulli: element i is 1 exactly when its 53-bit uniform is below p.
  const Tensor mask = ops::bernoulli({100000}, 0.3, 21, 6);
  CHECK(mask.dtype() == DType::u8);
  const std::vector<uint8_t> bits = ops::to_vector<uint8_t>(mask);
  int64_t ones = 0;
  bool consistent = true;
  for (int64_t i = 0; i < 100000; ++i) {
    ones += bits[i];
    consistent &= bits[i] == (random_uniform_f64(21, 6, i) < 0.3 ? 1 : 0);
  }
  CHECK(consistent);
  CHECK(static_cast<double>(ones) / 100000 == doctest::Approx(0.3).epsilon(0.02));  // s.e. 0.0014
  CHECK(all_equal(ops::bernoulli({100}, 0, 1), 0));
  CHECK(all_equal(ops::bernoulli({100}, 1, 1), 1));
  CHECK(ops::bernoulli({4}, 0.5, 1, 0, DType::f32).dtype() == DType::f32);

  // Errors.
  CHECK_THROWS_AS(ops::randn({3}, 1, 0, DType::i32), Error);
  CHECK_THROWS_AS(ops::randn({3}, 1, 0, DType::f32, 0, -1), Error);
  CHECK_THROWS_AS(ops::rand({3}, 1, 0, DType::f32, 2, 1), Error);
  CHECK_THROWS_AS(ops::rand({3}, 1, 0, DType::i32, 0.5, 3), Error);
  CHECK_THROWS_AS(ops::rand({3}, 1, 0, DType::u8, 0, 300), Error);
  CHECK_THROWS_AS(ops::bernoulli({3}, 1.5, 1), Error);
  CHECK_THROWS_AS(ops::bernoulli({3}, -0.1, 1), Error);
}

TEST_CASE("create: random fills are bit-identical with 1 and 2 threads") {
  const int previous = num_threads();
  set_num_threads(1);
  const Tensor n1 = ops::randn({400, 300}, 99, 3);
  const Tensor b1 = ops::bernoulli({400, 300}, 0.1, 99, 3);
  set_num_threads(2);
  const Tensor n2 = ops::randn({400, 300}, 99, 3);
  const Tensor b2 = ops::bernoulli({400, 300}, 0.1, 99, 3);
  set_num_threads(previous);
  CHECK(std::memcmp(n1.raw_data(), n2.raw_data(), 400 * 300 * sizeof(float)) == 0);
  CHECK(std::memcmp(b1.raw_data(), b2.raw_data(), 400 * 300) == 0);
}

TEST_CASE("create: fill_ writes through any layout and touches nothing else") {
  Tensor base = ops::zeros({4, 6}, DType::i32);
  ops::fill_(ops::narrow(ops::transpose(base, 0, 1), 0, 2, 3), 7);  // base[:, 2:5]
  for (int64_t i = 0; i < 4; ++i) {
    for (int64_t j = 0; j < 6; ++j) CHECK(base.at({i, j}) == (j >= 2 && j < 5 ? 7 : 0));
  }
  Tensor rank0 = ops::scalar(1);
  ops::fill_(rank0, -4);
  CHECK(rank0.item() == -4);
  Tensor big = ops::zeros({500, 200}, DType::f64);
  ops::fill_(ops::transpose(big, 0, 1), 0.5);
  CHECK(all_equal(big, 0.5));
  ops::fill_(ops::zeros({0, 2}), 1);  // empty: nothing to do
  CHECK_THROWS_AS(ops::fill_(Tensor(), 1), Error);
  CHECK_THROWS_AS(ops::fill_(ops::expand(ops::zeros({1, 3}), {4, 3}), 1), Error);
}

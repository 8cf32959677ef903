// Tests for tensor/reduce.*: sum, mean, max, min, var, argmax, sum_to_shape.
// Truth: a naive reference that walks every input element by multi-index (through Tensor::at, so it
// never shares code with the kernels), groups the values by output position and reduces each group
// in double (long double for the large sums). Determinism is checked bit for bit across thread
// counts.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "tensor/reduce.h"
#include "tensor/tensor.h"
#include "tensor/threads.h"
#include "tensor/view.h"

#include "tests/test_util.h"

using namespace qt;
using namespace qt::test;

namespace {

// Every element of x (any layout), read through at(), grouped by output position: group g holds
// the elements whose kept-axis multi-index is the g-th in row-major order, in input row-major
// order.
std::vector<std::vector<double>> groups_by_output(const Tensor& x,
                                                  const std::vector<int64_t>& axes) {
  const int64_t rank = x.dim();
  std::vector<bool> reduced(rank, axes.empty());
  for (int64_t a : axes) reduced[a < 0 ? a + rank : a] = true;
  int64_t outputs = 1;
  for (int64_t d = 0; d < rank; ++d)
    if (!reduced[d]) outputs *= x.shape()[d];
  std::vector<std::vector<double>> groups(outputs);
  for (int64_t p = 0; p < x.numel(); ++p) {
    const std::vector<int64_t> index = unravel_index(p, x.shape());
    int64_t g = 0;
    for (int64_t d = 0; d < rank; ++d)
      if (!reduced[d]) g = g * x.shape()[d] + index[d];
    groups[g].push_back(x.at(index));
  }
  return groups;
}

Shape expected_shape(const Shape& shape, const std::vector<int64_t>& axes, bool keepdim) {
  const int64_t rank = static_cast<int64_t>(shape.size());
  std::vector<bool> reduced(rank, axes.empty());
  for (int64_t a : axes) reduced[a < 0 ? a + rank : a] = true;
  Shape out;
  for (int64_t d = 0; d < rank; ++d) {
    if (!reduced[d])
      out.push_back(shape[d]);
    else if (keepdim)
      out.push_back(1);
  }
  return out;
}

double ref_sum(const std::vector<double>& v) {
  long double s = 0;
  for (double x : v) s += x;
  return static_cast<double>(s);
}
double ref_mean(const std::vector<double>& v) {
  return ref_sum(v) / static_cast<double>(v.size());
}
double ref_var(const std::vector<double>& v, int64_t correction) {
  const long double m = ref_mean(v);
  long double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return static_cast<double>(s /
                             static_cast<long double>(static_cast<int64_t>(v.size()) - correction));
}
double ref_max(const std::vector<double>& v) {
  return *std::max_element(v.begin(), v.end());
}
double ref_min(const std::vector<double>& v) {
  return *std::min_element(v.begin(), v.end());
}

// Counts elements of `got` that differ from `expected` by more than atol + rtol * |expected|.
void check_values(const Tensor& got, const std::vector<double>& expected, double rtol,
                  double atol) {
  const std::vector<double> values = elements(got);
  REQUIRE(values.size() == expected.size());
  int64_t bad = 0;
  double worst = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    const double error = std::abs(values[i] - expected[i]);
    if (!(error <= atol + rtol * std::abs(expected[i]))) ++bad;
    worst = std::max(worst, error);
  }
  INFO("largest abs error ", worst);
  CHECK(bad == 0);
}

const std::vector<std::vector<int64_t>> kAxisSets = {{},     {0},      {-1},   {1, 2},       {0, 2},
                                                     {0, 3}, {-1, -3}, {3, 1}, {0, 1, 2, 3}, {1}};

void check_all_reductions(const Tensor& x, double rtol, double atol) {
  for (const auto& axes : kAxisSets) {
    for (bool keepdim : {false, true}) {
      INFO("axes size ", axes.size(), " first ", axes.empty() ? 99 : axes[0], " keepdim ", keepdim);
      const auto groups = groups_by_output(x, axes);
      const Shape shape = expected_shape(x.shape(), axes, keepdim);
      std::vector<double> sums, means, maxima, minima, vars0, vars1;
      for (const auto& g : groups) {
        sums.push_back(ref_sum(g));
        means.push_back(ref_mean(g));
        maxima.push_back(ref_max(g));
        minima.push_back(ref_min(g));
        vars0.push_back(ref_var(g, 0));
        vars1.push_back(ref_var(g, 1));
      }
      const Tensor s = ops::sum(x, axes, keepdim), m = ops::mean(x, axes, keepdim);
      const Tensor mx = ops::max(x, axes, keepdim), mn = ops::min(x, axes, keepdim);
      const Tensor v0 = ops::var(x, axes, keepdim), v1 = ops::var(x, axes, keepdim, 1);
      for (const Tensor& r : {s, m, mx, mn, v0, v1}) {
        CHECK(r.shape() == shape);
        CHECK(r.dtype() == x.dtype());
      }
      check_values(s, sums, rtol, atol);
      check_values(m, means, rtol, atol);
      check_values(mx, maxima, 0, 0);
      check_values(mn, minima, 0, 0);
      check_values(v0, vars0, rtol, atol);
      check_values(v1, vars1, rtol, atol);
    }
  }
}

// Restores the thread setting when a test ends.
struct ThreadCountGuard {
  int saved = num_threads();
  ~ThreadCountGuard() { set_num_threads(saved); }
};

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && a.is_contiguous() &&
         b.is_contiguous() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.numel() * dtype_size(a.dtype())) == 0;
}

}  // namespace

TEST_CASE("reduce: sum/mean/max/min/var match a double reference on every axis set (f32, f64)") {
  check_all_reductions(random_tensor({3, 4, 5, 6}, DType::f32, 1), 1e-6, 1e-6);
  check_all_reductions(random_tensor({3, 4, 5, 6}, DType::f64, 2), 1e-12, 1e-12);
}

TEST_CASE("reduce: non-contiguous inputs (permuted, narrowed, expanded views)") {
  const Tensor base = random_tensor({6, 5, 4, 7}, DType::f32, 3);
  const Tensor permuted = ops::permute(base, {2, 0, 3, 1});  // [4, 6, 7, 5]
  REQUIRE_FALSE(permuted.is_contiguous());
  check_all_reductions(permuted, 1e-6, 1e-6);
  const Tensor narrowed = ops::narrow(ops::narrow(base, 3, 1, 5), 0, 2, 3);  // [3, 5, 4, 5]
  REQUIRE_FALSE(narrowed.is_contiguous());
  check_all_reductions(narrowed, 1e-6, 1e-6);
  const Tensor small = random_tensor({1, 5, 1, 3}, DType::f64, 4);
  const Tensor expanded = ops::expand(small, {4, 5, 2, 3});  // stride-0 dims
  check_all_reductions(expanded, 1e-12, 1e-12);
}

TEST_CASE("reduce: wide rows and wide columns cross several chunks") {
  // 3 x 10000 rows (row chunks of 4096 elements), 10000 x 3 columns (column chunks), and 520 x 1100
  // (several column chunks and column blocks).
  for (const Shape& shape :
       {Shape{3, 10000}, Shape{10000, 3}, Shape{7, 1500, 5}, Shape{520, 1100}}) {
    const Tensor x = random_tensor(shape, DType::f32, 5);
    for (const std::vector<int64_t>& axes :
         {std::vector<int64_t>{0}, std::vector<int64_t>{-1}, std::vector<int64_t>{}}) {
      const auto groups = groups_by_output(x, axes);
      std::vector<double> sums, maxima, vars;
      for (const auto& g : groups) {
        sums.push_back(ref_sum(g));
        maxima.push_back(ref_max(g));
        vars.push_back(ref_var(g, 1));
      }
      check_values(ops::sum(x, axes), sums, 1e-6, 1e-5);
      check_values(ops::max(x, axes), maxima, 0, 0);
      check_values(ops::var(x, axes, false, 1), vars, 1e-6, 1e-6);
    }
  }
}

TEST_CASE("reduce: 1e6-element f32 sum, mean and var are accurate to f32 rounding") {
  const int64_t n = 1000000;
  // Uniform [0, 1) + 1000: a naive float running sum would lose ~3 digits here, and E[x^2]-E[x]^2
  // in float would lose the variance (~1/12) entirely.
  std::mt19937 generator(7);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  Tensor x = Tensor::empty({n}, DType::f32);
  float* data = x.data<float>();
  long double exact_sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    data[i] = 1000.0f + uniform(generator);
    exact_sum += data[i];
  }
  const long double exact_mean = exact_sum / n;
  long double squares = 0;
  for (int64_t i = 0; i < n; ++i) squares += (data[i] - exact_mean) * (data[i] - exact_mean);
  const double exact_var = static_cast<double>(squares / n);

  const double got_sum = ops::sum(x).item();
  CHECK(std::abs(got_sum - static_cast<double>(exact_sum)) <=
        1e-7 * static_cast<double>(exact_sum));
  CHECK(std::abs(ops::mean(x).item() - static_cast<double>(exact_mean)) <= 1e-7 * 1000.5);
  CHECK(std::abs(ops::var(x).item() - exact_var) <= 1e-6 * exact_var);

  // f64: chunked double summation against a long double reference.
  Tensor y = Tensor::empty({n}, DType::f64);
  long double exact_y = 0;
  std::normal_distribution<double> normal(0.0, 1.0);
  for (int64_t i = 0; i < n; ++i) {
    y.data<double>()[i] = 1e6 + normal(generator);
    exact_y += y.data<double>()[i];
  }
  CHECK(std::abs(ops::sum(y).item() - static_cast<double>(exact_y)) <=
        1e-14 * static_cast<double>(exact_y));
}

TEST_CASE("reduce: results are bit-identical with 1 and 2 threads") {
  ThreadCountGuard guard;
  const Tensor x = random_tensor({64, 128, 130}, DType::f32, 8);  // ~1e6 elements
  const Tensor xt = ops::transpose(x, 0, 2);
  const std::vector<std::vector<int64_t>> axis_sets = {{}, {0}, {-1}, {0, 1}, {1}, {0, 2}};
  std::vector<Tensor> one, two;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    auto& results = threads == 1 ? one : two;
    for (const auto& axes : axis_sets) {
      results.push_back(ops::sum(x, axes));
      results.push_back(ops::mean(xt, axes));
      results.push_back(ops::var(x, axes, false, 1));
      results.push_back(ops::max(xt, axes));
    }
    results.push_back(ops::argmax(x, 1));
  }
  REQUIRE(one.size() == two.size());
  for (size_t i = 0; i < one.size(); ++i) {
    INFO("result ", i);
    CHECK(bitwise_equal(one[i], two[i]));
  }
}

TEST_CASE("reduce: argmax returns the first maximum; NaN counts as the largest") {
  // Hand-made rows with ties and NaN.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor x = Tensor::empty({4, 5}, DType::f32);
  const float rows[4][5] = {
      {1, 3, 3, 2, 0}, {-1, -1, -1, -1, -1}, {0, nan, 5, nan, 1}, {2, 1, 0, -1, 7}};
  std::memcpy(x.data<float>(), rows, sizeof(rows));
  const Tensor a = ops::argmax(x, 1);
  CHECK(a.dtype() == DType::i64);
  CHECK(a.shape() == Shape{4});
  CHECK(a.at({0}) == 1);
  CHECK(a.at({1}) == 0);
  CHECK(a.at({2}) == 1);
  CHECK(a.at({3}) == 4);
  CHECK(ops::argmax(x, -1, true).shape() == Shape{4, 1});

  // Along other axes, on a permuted view, against a naive scan.
  const Tensor r = ops::permute(random_tensor({3, 4, 5}, DType::f64, 9), {1, 2, 0});  // [4, 5, 3]
  for (int64_t axis = 0; axis < 3; ++axis) {
    const Tensor got = ops::argmax(r, axis);
    const auto groups = groups_by_output(r, {axis});
    std::vector<double> expected;
    for (const auto& g : groups)
      expected.push_back(static_cast<double>(std::max_element(g.begin(), g.end()) - g.begin()));
    check_values(got, expected, 0, 0);
  }
  // Integer dtypes work too.
  Tensor ints = Tensor::empty({2, 3}, DType::i32);
  const int32_t int_values[6] = {5, 9, 9, -4, -8, -9};
  std::memcpy(ints.data<int32_t>(), int_values, sizeof(int_values));
  CHECK(ops::argmax(ints, 1).at({0}) == 1);
  CHECK(ops::argmax(ints, 1).at({1}) == 0);
  CHECK(ops::argmax(ints, 0).at({2}) == 0);
}

TEST_CASE("reduce: NaN and infinities") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  Tensor x = Tensor::empty({3, 3}, DType::f32);
  const float values[9] = {1, nan, 2, -inf, -inf, -inf, 3, inf, -1};
  std::memcpy(x.data<float>(), values, sizeof(values));
  const Tensor mx = ops::max(x, {1}), mn = ops::min(x, {1}), s = ops::sum(x, {1});
  CHECK(std::isnan(mx.at({0})));
  CHECK(std::isnan(mn.at({0})));
  CHECK(std::isnan(s.at({0})));
  CHECK(mx.at({1}) == -inf);
  CHECK(mx.at({2}) == inf);
  CHECK(mn.at({2}) == -1);
  CHECK(std::isnan(ops::max(x).item()));
}

TEST_CASE("reduce: integer inputs") {
  // 300 ones in a u8 mask: the sum is an i64 300 (no u8 wraparound).
  Tensor mask = Tensor::empty({3, 100}, DType::u8);
  std::memset(mask.data<uint8_t>(), 1, 300);
  const Tensor count = ops::sum(mask);
  CHECK(count.dtype() == DType::i64);
  CHECK(count.item() == 300);
  CHECK(ops::sum(mask, {1}).at({2}) == 100);
  Tensor ints = Tensor::empty({2, 3}, DType::i64);
  const int64_t values[6] = {4, -7, 12, 0, 3, -2};
  std::memcpy(ints.data<int64_t>(), values, sizeof(values));
  CHECK(ops::max(ints, {1}).at({0}) == 12);
  CHECK(ops::min(ints, {0}).at({1}) == -7);
  CHECK(ops::max(ints).dtype() == DType::i64);
  CHECK_THROWS_AS(ops::mean(ints), Error);
  CHECK_THROWS_AS(ops::var(ints), Error);
}

TEST_CASE("reduce: empty reductions and rank-0 inputs") {
  const Tensor empty = Tensor::empty({3, 0}, DType::f32);
  const Tensor s = ops::sum(empty, {1});
  CHECK(s.shape() == Shape{3});
  for (int64_t i = 0; i < 3; ++i) CHECK(s.at({i}) == 0);
  CHECK(std::isnan(ops::mean(empty, {1}).at({0})));
  CHECK(ops::sum(empty, {0}).shape() == Shape{0});
  CHECK_THROWS_AS(ops::max(empty, {1}), Error);
  CHECK_THROWS_AS(ops::argmax(empty, 1), Error);
  Tensor scalar = Tensor::empty({}, DType::f64);
  scalar.data<double>()[0] = 2.5;
  CHECK(ops::sum(scalar).shape() == Shape{});
  CHECK(ops::sum(scalar).item() == 2.5);
  CHECK(ops::var(scalar).item() == 0);
  CHECK(std::isnan(ops::var(scalar, {}, false, 1).item()));  // 0 / 0
}

TEST_CASE("reduce: sum_to_shape sums the broadcast axes away") {
  const Tensor grad = random_tensor({2, 3, 4}, DType::f64, 10);
  struct Case {
    Shape target;
    std::vector<int64_t> axes;  // axes of grad that the reference sums
  };
  const std::vector<Case> cases = {{{3, 1}, {0, 2}}, {{4}, {0, 1}}, {{1, 1, 1}, {0, 1, 2}},
                                   {{2, 1, 4}, {1}}, {{}, {}},      {{1, 3, 4}, {0}},
                                   {{1, 4}, {0, 1}}};
  for (const Case& c : cases) {
    INFO("target ", shape_str(c.target));
    const Tensor got = ops::sum_to_shape(grad, c.target);
    CHECK(got.shape() == c.target);
    std::vector<double> expected;
    for (const auto& g : groups_by_output(grad, c.axes)) expected.push_back(ref_sum(g));
    check_values(got, expected, 1e-12, 1e-12);
  }
  // Same shape: the gradient unchanged.
  const Tensor same = ops::sum_to_shape(grad, {2, 3, 4});
  CHECK(same.shape() == Shape{2, 3, 4});
  check_values(same, elements(grad), 0, 0);
  // Not broadcast-compatible.
  CHECK_THROWS_AS(ops::sum_to_shape(grad, {5}), Error);
  CHECK_THROWS_AS(ops::sum_to_shape(grad, {3, 2}), Error);
  CHECK_THROWS_AS(ops::sum_to_shape(grad, {1, 2, 3, 4}), Error);
  CHECK_THROWS_AS(ops::sum_to_shape(grad, {2, 3, 5}), Error);
}

TEST_CASE("reduce: bad axes and arguments throw qt::Error") {
  const Tensor x = random_tensor({2, 3}, DType::f32, 11);
  CHECK_THROWS_AS(ops::sum(x, {2}), Error);
  CHECK_THROWS_AS(ops::sum(x, {-3}), Error);
  CHECK_THROWS_AS(ops::mean(x, {0, -2}), Error);  // the same axis twice
  CHECK_THROWS_AS(ops::max(x, {1, 1}), Error);
  CHECK_THROWS_AS(ops::var(x, {0}, false, -1), Error);
  CHECK_THROWS_AS(ops::argmax(x, 2), Error);
  CHECK_THROWS_AS(ops::sum(Tensor(), {}), Error);
  CHECK_THROWS_WITH_AS(ops::min(x, {5}), doctest::Contains("min"), Error);
}

// Tests for tensor/softmax.*: softmax, log_softmax and their backward passes.
// Truth: a long-double reference computed row by row in the test (through Tensor::at, any layout),
// hand-derived limits for extreme logits, and central finite differences (f64) for the backward
// passes.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "tensor/softmax.h"
#include "tensor/tensor.h"
#include "tensor/threads.h"
#include "tensor/view.h"

#include "tests/test_util.h"

using namespace qt;
using namespace qt::test;

namespace {

// Long-double softmax or log_softmax of x along `axis`, as a row-major vector of x's shape.
std::vector<double> reference(const Tensor& x, int64_t axis, bool log_form) {
  if (axis < 0) axis += x.dim();
  std::vector<double> out(x.numel());
  const int64_t n = x.shape()[axis];
  for (int64_t p = 0; p < x.numel(); ++p) {
    std::vector<int64_t> index = unravel_index(p, x.shape());
    if (index[axis] != 0) continue;  // one row per position with index 0 along the axis
    std::vector<long double> row(n);
    long double m = -INFINITY;
    for (int64_t i = 0; i < n; ++i) {
      index[axis] = i;
      row[i] = x.at(index);
      m = std::max(m, row[i]);
    }
    long double total = 0;
    for (int64_t i = 0; i < n; ++i) total += std::exp(row[i] - m);
    for (int64_t i = 0; i < n; ++i) {
      index[axis] = i;
      int64_t flat = 0;
      for (int64_t d = 0; d < x.dim(); ++d) flat = flat * x.shape()[d] + index[d];
      out[flat] = static_cast<double>(log_form ? row[i] - m - std::log(total)
                                               : std::exp(row[i] - m) / total);
    }
  }
  return out;
}

double max_abs_error(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double e = std::abs(a[i] - b[i]);
    worst = std::isnan(e) ? INFINITY : std::max(worst, e);
  }
  return worst;
}

// The sum of a tensor's elements along `axis` for each row, as a vector (row-major over other
// dims).
std::vector<double> row_sums(const Tensor& t, int64_t axis) {
  if (axis < 0) axis += t.dim();
  std::vector<double> sums;
  for (int64_t p = 0; p < t.numel(); ++p) {
    std::vector<int64_t> index = unravel_index(p, t.shape());
    if (index[axis] != 0) continue;
    double s = 0;
    for (int64_t i = 0; i < t.shape()[axis]; ++i) {
      index[axis] = i;
      s += t.at(index);
    }
    sums.push_back(s);
  }
  return sums;
}

}  // namespace

TEST_CASE("softmax: rows sum to 1 and match a long-double reference, every axis, f32 and f64") {
  for (DType dtype : {DType::f32, DType::f64}) {
    const double tolerance = dtype == DType::f32 ? 3e-7 : 2e-15;
    const Tensor x = random_tensor({3, 5, 7}, dtype, 1, 0.0, 3.0);
    for (int64_t axis : {-1, 0, 1, 2, -2}) {
      INFO("dtype ", dtype_name(dtype), " axis ", axis);
      const Tensor y = ops::softmax(x, axis);
      CHECK(y.shape() == x.shape());
      CHECK(y.dtype() == dtype);
      CHECK(max_abs_error(elements(y), reference(x, axis, false)) <= tolerance);
      for (double s : row_sums(y, axis)) CHECK(std::abs(s - 1) <= 10 * tolerance);
      const Tensor ly = ops::log_softmax(x, axis);
      CHECK(max_abs_error(elements(ly), reference(x, axis, true)) <= 20 * tolerance);
    }
  }
}

TEST_CASE("softmax: non-contiguous inputs") {
  const Tensor base = random_tensor({6, 4, 9}, DType::f32, 2, 0.0, 2.0);
  const Tensor transposed = ops::transpose(base, 0, 2);  // [9, 4, 6]
  const Tensor narrowed = ops::narrow(base, 2, 2, 5);    // rows with a gap
  const Tensor expanded = ops::expand(random_tensor({1, 4, 1}, DType::f32, 3), {3, 4, 5});
  for (const Tensor& x : {transposed, narrowed, expanded}) {
    for (int64_t axis : {-1, 0, 1}) {
      CHECK(max_abs_error(elements(ops::softmax(x, axis)), reference(x, axis, false)) <= 3e-7);
      CHECK(max_abs_error(elements(ops::log_softmax(x, axis)), reference(x, axis, true)) <= 4e-6);
    }
  }
}

TEST_CASE("softmax: extreme logits stay finite and match the exact limits") {
  Tensor x = Tensor::empty({2, 4}, DType::f32);
  const float values[8] = {1e4f, -1e4f, 0.0f, 1e4f - 1.0f, -1e4f, -1e4f, -1e4f, -1e4f};
  std::memcpy(x.data<float>(), values, sizeof(values));
  const Tensor y = ops::softmax(x), ly = ops::log_softmax(x);
  for (double v : elements(y)) CHECK(std::isfinite(v));
  for (double v : elements(ly)) CHECK(std::isfinite(v));
  // Row 0: only 1e4 and 1e4-1 matter: p = 1 / (1 + e^-1), 1 - p; the others underflow to 0.
  const double p = 1.0 / (1.0 + std::exp(-1.0));
  CHECK(y.at({0, 0}) == doctest::Approx(p).epsilon(1e-6));
  CHECK(y.at({0, 3}) == doctest::Approx(1 - p).epsilon(1e-6));
  CHECK(y.at({0, 1}) == 0.0);
  CHECK(ly.at({0, 0}) == doctest::Approx(std::log(p)).epsilon(1e-5));
  CHECK(ly.at({0, 1}) == doctest::Approx(-2e4 + std::log(p)).epsilon(1e-6));
  // Row 1: all equal (very negative) logits: uniform.
  for (int64_t i = 0; i < 4; ++i) {
    CHECK(y.at({1, i}) == doctest::Approx(0.25).epsilon(1e-7));
    CHECK(ly.at({1, i}) == doctest::Approx(std::log(0.25)).epsilon(1e-6));
  }
}

TEST_CASE("softmax: f32 keeps relative accuracy for tiny probabilities (the exp over its range)") {
  // Rows [0, t] for t from 0 down to -95: softmax = [1, e^t] / (1 + e^t). The second entry spans
  // 1 .. 1e-38 (and underflows to 0 below about -87), so this sweeps the f32 exp over its range.
  const int64_t rows = 400;
  Tensor x = Tensor::empty({rows, 2}, DType::f32);
  for (int64_t r = 0; r < rows; ++r) {
    x.data<float>()[2 * r] = 0.0f;
    x.data<float>()[2 * r + 1] = -0.2375f * static_cast<float>(r);
  }
  const Tensor y = ops::softmax(x), ly = ops::log_softmax(x);
  int64_t bad = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const double t = x.data<float>()[2 * r + 1];
    const double small = std::exp(t) / (1 + std::exp(t)), large = 1 / (1 + std::exp(t));
    if (!(std::abs(y.at({r, 1}) - small) <= 3e-7 * small + 2.2e-38)) ++bad;
    if (!(std::abs(y.at({r, 0}) - large) <= 3e-7 * large)) ++bad;
    if (!(std::abs(ly.at({r, 1}) - (t - std::log1p(std::exp(t)))) <= 1e-6 * (1 - t))) ++bad;
    if (!(std::abs(ly.at({r, 0}) + std::log1p(std::exp(t))) <= 1e-7)) ++bad;
  }
  CHECK(bad == 0);
}

TEST_CASE("softmax: log_softmax agrees with log(softmax) on moderate inputs") {
  const Tensor x = random_tensor({8, 33}, DType::f64, 4, 0.0, 2.0);
  const std::vector<double> y = elements(ops::softmax(x)), ly = elements(ops::log_softmax(x));
  double worst = 0;
  for (size_t i = 0; i < y.size(); ++i) worst = std::max(worst, std::abs(std::log(y[i]) - ly[i]));
  CHECK(worst <= 1e-13);
}

TEST_CASE("softmax: fully masked rows give NaN without affecting the other rows") {
  const float inf = std::numeric_limits<float>::infinity();
  Tensor x = Tensor::empty({2, 3}, DType::f32);
  const float values[6] = {-inf, -inf, -inf, 0.0f, -inf, 1.0f};
  std::memcpy(x.data<float>(), values, sizeof(values));
  const Tensor y = ops::softmax(x), ly = ops::log_softmax(x);
  for (int64_t i = 0; i < 3; ++i) {
    CHECK(std::isnan(y.at({0, i})));
    CHECK(std::isnan(ly.at({0, i})));
  }
  // Row 1: a partially masked row is an ordinary softmax over the unmasked entries.
  const double e = std::exp(1.0);
  CHECK(y.at({1, 0}) == doctest::Approx(1 / (1 + e)));
  CHECK(y.at({1, 1}) == 0.0);
  CHECK(y.at({1, 2}) == doctest::Approx(e / (1 + e)));
  CHECK(ly.at({1, 1}) == -inf);
}

TEST_CASE("softmax: backward passes match central finite differences (f64)") {
  // For a fixed upstream gradient dy, L(x) = sum_i dy_i f(x)_i, and dL/dx_j is what the backward
  // pass must return. Checked for f = softmax and f = log_softmax along two axes.
  const Tensor x = random_tensor({3, 4, 5}, DType::f64, 5);
  const Tensor dy = random_tensor({3, 4, 5}, DType::f64, 6);
  const double h = 1e-6;
  for (bool log_form : {false, true}) {
    for (int64_t axis : {-1, 1}) {
      INFO("log_softmax ", log_form, " axis ", axis);
      auto forward = [&](const Tensor& input) {
        return log_form ? ops::log_softmax(input, axis) : ops::softmax(input, axis);
      };
      auto loss = [&](const Tensor& input) {
        const std::vector<double> f = elements(forward(input)), g = elements(dy);
        double total = 0;
        for (size_t i = 0; i < f.size(); ++i) total += f[i] * g[i];
        return total;
      };
      const Tensor y = forward(x);
      const Tensor dx =
          log_form ? ops::log_softmax_backward(dy, y, axis) : ops::softmax_backward(dy, y, axis);
      CHECK(dx.shape() == x.shape());
      double worst = 0;
      for (int64_t p = 0; p < x.numel(); ++p) {
        Tensor plus = ops::clone(x), minus = ops::clone(x);
        plus.data<double>()[p] += h;
        minus.data<double>()[p] -= h;
        const double numeric = (loss(plus) - loss(minus)) / (2 * h);
        worst = std::max(worst, std::abs(numeric - dx.at(unravel_index(p, x.shape()))));
      }
      CHECK(worst <= 1e-8);
    }
  }
}

TEST_CASE("softmax: results are bit-identical with 1 and 2 threads") {
  const int saved = num_threads();
  const Tensor x = random_tensor({512, 300}, DType::f32, 7, 0.0, 4.0);
  std::vector<Tensor> results[2];
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    results[threads - 1] = {ops::softmax(x), ops::log_softmax(x, 0),
                            ops::softmax_backward(x, ops::softmax(x))};
  }
  set_num_threads(saved);
  for (size_t i = 0; i < results[0].size(); ++i) {
    CHECK(std::memcmp(results[0][i].raw_data(), results[1][i].raw_data(), x.numel() * 4) == 0);
  }
}

TEST_CASE("softmax: rank-0 and empty inputs") {
  Tensor scalar = Tensor::empty({}, DType::f64);
  scalar.data<double>()[0] = -3.5;
  CHECK(ops::softmax(scalar).shape() == Shape{});
  CHECK(ops::softmax(scalar).item() == 1.0);  // a one-element row
  CHECK(ops::log_softmax(scalar).item() == 0.0);
  CHECK(ops::softmax(Tensor::empty({0, 4}, DType::f32)).shape() == Shape{0, 4});
  CHECK(ops::log_softmax(Tensor::empty({3, 0}, DType::f32), 0).shape() == Shape{3, 0});
}

TEST_CASE("softmax: bad inputs throw qt::Error") {
  const Tensor x = random_tensor({2, 3}, DType::f32, 8);
  Tensor ints = Tensor::empty({2, 3}, DType::i64);
  CHECK_THROWS_AS(ops::softmax(ints), Error);
  CHECK_THROWS_AS(ops::log_softmax(ints), Error);
  CHECK_THROWS_AS(ops::softmax(x, 2), Error);
  CHECK_THROWS_AS(ops::log_softmax(x, -3), Error);
  const Tensor y = ops::softmax(x);
  CHECK_THROWS_AS(ops::softmax_backward(random_tensor({3, 2}, DType::f32, 9), y), Error);
  CHECK_THROWS_AS(ops::softmax_backward(random_tensor({2, 3}, DType::f64, 9), y), Error);
  CHECK_THROWS_AS(ops::log_softmax_backward(x, y, 5), Error);
  CHECK_THROWS_WITH_AS(ops::softmax_backward(random_tensor({3, 2}, DType::f32, 9), y),
                       doctest::Contains("[3, 2]"), Error);
}
